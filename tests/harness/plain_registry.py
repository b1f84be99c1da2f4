"""The registry run as a plain process (not a container), the way Debian's systemd unit runs
``/usr/bin/docker-registry``, controlled by ``scripts/registry-process/{start,stop}.sh`` (pidfile
based). ``version`` picks the binary (``tests.harness.gc.registry_bin``): Debian's 2.8.2 or the
3.1.1 built from the vendored tarball; both read the same config keys and the same
``REGISTRY_STORAGE_MAINTENANCE_READONLY`` environment variable.

``start_plain_registry(tmp)`` writes a config under ``tmp`` (storage root ``tmp/registry``, HTTP
on a free 127.0.0.1 port), starts the registry and waits until it answers. ``commands`` gives the
``runtime.commands`` that a ``runtime.kind: command`` config would hold for it:

- ``readonly``: stop, then start with ``REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled": true}``
- ``stop``: stop (SIGTERM, then SIGKILL)
- ``start``: stop if running, then start read-write
- ``gc``: ``BINARY garbage-collect CONFIG``

For a binary other than the scripts' default (/usr/bin/docker-registry), ``readonly`` and
``start`` pass it as ``REGISTRY_BIN=...``.

A ``PlainRegistry`` is a ``RunningRegistry`` (same ``url``, ``host``, ``ref``, ``root``), so
the image helpers (``push_oci_image``, ``pull_ok``...) work on it unchanged.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from retentiond.config import RuntimeCommands
from tests.harness.gc import registry_bin
from tests.harness.proc import CommandError, run
from tests.harness.registry import DEFAULT_VERSION, RunningRegistry, free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "registry-process"
START = SCRIPTS / "start.sh"
STOP = SCRIPTS / "stop.sh"
#: The binary start.sh runs unless REGISTRY_BIN says otherwise.
DEBIAN_BIN = "/usr/bin/docker-registry"


def plain_config(root: Path, port: int) -> str:
    """The registry config: filesystem storage at ``root``, deletes enabled, the in-memory blob
    descriptor cache (as the Debian package ships it), HTTP on 127.0.0.1:``port``."""
    return (
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {root}\n"
        "  delete:\n    enabled: true\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )


@dataclass
class PlainRegistry(RunningRegistry):
    """A docker-registry process. ``name`` is only a label here; ``config``, ``pidfile`` and
    ``logfile`` live in the directory given to ``start_plain_registry``."""

    config: Path = field(default_factory=Path)
    pidfile: Path = field(default_factory=Path)
    logfile: Path = field(default_factory=Path)

    @property
    def config_path(self) -> str:
        """The config file the registry process reads (a host path here)."""
        return str(self.config)

    @property
    def binary(self) -> str:
        return registry_bin(self.version)

    @property
    def commands(self) -> RuntimeCommands:
        q = shlex.quote
        files = f"{q(str(self.config))} {q(str(self.pidfile))} {q(str(self.logfile))}"
        start = q(str(START))
        if self.binary != DEBIAN_BIN:
            start = f"REGISTRY_BIN={q(self.binary)} {start}"
        return RuntimeCommands(
            readonly=f"{start} --readonly {files} {self.host}",
            stop=f"{q(str(STOP))} {q(str(self.pidfile))}",
            start=f"{start} {files} {self.host}",
            gc=f"{q(self.binary)} garbage-collect {q(str(self.config))}",
        )

    def pid(self) -> int | None:
        """The pid in the pidfile when that process is alive (not a zombie), else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (OSError, ValueError, IndexError):
            return None
        return None if state in ("Z", "X") else pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_plain_registry(directory: Path, *, version: str = DEFAULT_VERSION) -> PlainRegistry:
    """Write the config under ``directory`` and start the registry of ``version`` on a free
    port (retried when another process takes the port first)."""
    directory = Path(directory).resolve()
    root = directory / "registry"
    root.mkdir(parents=True, exist_ok=True)
    last: CommandError | None = None
    for _ in range(5):
        port = free_port()
        reg = PlainRegistry(
            name=f"registry-{version}@{port}",
            root=root,
            port=port,
            image=registry_bin(version),
            version=version,
            config=directory / "config.yml",
            pidfile=directory / "registry.pid",
            logfile=directory / "registry.log",
        )
        reg.config.write_text(plain_config(root, port))
        try:
            run(["bash", "-c", reg.commands.start or ""], timeout=60)
            return reg
        except CommandError as exc:
            last = exc
            stop_plain_registry(reg)
            if "address already in use" not in reg.log_tail():
                raise
    assert last is not None
    raise last


def stop_plain_registry(reg: PlainRegistry) -> None:
    """Stop it if it runs; never fails."""
    run([str(STOP), str(reg.pidfile)], check=False, timeout=60)
