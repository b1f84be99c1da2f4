"""A real redis-server (Debian's ``redis-server``) for tests of the registry's redis cache.

It runs as a plain process in its own directory, without persistence, on a free port, bound
to 127.0.0.1 and to the Docker bridge's gateway address: dockerd runs with
``--iptables=false``, so a registry container on the default bridge reaches the host only
there (``RunningRedis.addr`` is what goes into ``REGISTRY_REDIS_ADDR``). ``commands()``
counts what the server executed (``INFO commandstats``), the server-side check on how many
commands a client sent.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.proc import docker, run
from tests.harness.registry import free_port

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"


@dataclass
class RunningRedis:
    """A redis-server process; ``host`` is the address containers reach it on."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    directory: Path

    @property
    def addr(self) -> str:
        """``HOST:PORT``, as the registry's ``redis.addr`` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0``, as retentiond's ``registry.redis_url`` wants it."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def socket(self) -> Path:
        """Its unix socket (``unix://`` URLs)."""
        return self.directory / "redis.sock"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def cli(self, *args: str, db: int = 0) -> list[str]:
        """Run one command with ``redis-cli`` (a real client) and return its reply lines."""
        res = run([REDIS_CLI, "-h", self.host, "-p", str(self.port), "-n", str(db), "--raw", *args])
        return [line for line in res.stdout.splitlines() if line]

    def keys(self, db: int = 0) -> set[str]:
        """Every key in database ``db``."""
        return set(self.cli("--scan", db=db))

    def members(self, key: str) -> set[str]:
        return set(self.cli("SMEMBERS", key))

    def reset_stats(self) -> None:
        self.cli("CONFIG", "RESETSTAT")

    def commands(self) -> dict[str, int]:
        """Commands executed since ``reset_stats``, by name (``{"del": 3, ...}``), without
        the ``INFO``/``CONFIG`` the harness itself sent."""
        counts: dict[str, int] = {}
        for line in self.cli("INFO", "commandstats"):
            if not line.startswith("cmdstat_"):
                continue
            name, _, fields = line.removeprefix("cmdstat_").partition(":")
            calls = int(fields.split(",")[0].removeprefix("calls="))
            if not name.startswith(("info", "config")):
                counts[name] = calls
        return counts


def bridge_gateway() -> str:
    """The Docker default bridge's gateway address (the host, seen from a container).

    Some dockerd versions (Debian's 20.10.24 among them) list only the subnet in the bridge's
    IPAM config; the gateway is then the subnet's first host, which dockerd gives docker0."""
    res = docker("network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}")
    configs = json.loads(res.stdout or "null") or []
    for config in configs:
        if config.get("Gateway"):
            return str(config["Gateway"])
    for config in configs:
        subnet = config.get("Subnet", "")
        if subnet and ":" not in subnet:
            return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    raise RuntimeError("the Docker bridge network has no IPv4 gateway or subnet: is dockerd up?")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _launch(directory: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    binds = " ".join(dict.fromkeys(["127.0.0.1", host]))
    args = [
        REDIS_SERVER,
        "--port", str(port),
        "--bind", binds,
        "--protected-mode", "no",
        "--unixsocket", str(directory / "redis.sock"),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, cwd=directory)


def start_redis(directory: Path, *, host: str | None = None, timeout: float = 20.0) -> RunningRedis:
    """Start a redis-server in ``directory`` (created) on a free port and wait for PING.

    ``host`` defaults to the Docker bridge's gateway, so registry containers reach it."""
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError(f"{REDIS_SERVER} is not installed (Debian package redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    host = host or bridge_gateway()
    for _ in range(5):  # a port taken between free_port() and the bind: try another
        port = free_port()
        process = _launch(directory, host, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(host, port):
                return RunningRedis(process=process, host=host, port=port, directory=directory)
            time.sleep(0.05)
        stop_redis(RunningRedis(process=process, host=host, port=port, directory=directory))
    log = directory / "redis.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"redis-server did not answer PING on {host}:<port>; its log:\n{tail}")


def stop_redis(server: RunningRedis) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 5 s). Never fails if it already exited."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)
