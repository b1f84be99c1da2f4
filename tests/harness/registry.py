"""Start, stop and restart a real registry 2.8.2 container (image from
scripts/build-registry-image.sh) whose storage is a host directory."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.proc import CommandError, docker

#: The image built by scripts/build-registry-image.sh.
REGISTRY_IMAGE = os.environ.get("RETENTIOND_TEST_REGISTRY_IMAGE", "retentiond-test/registry:2.8.2")
#: The registry config inside the image.
CONTAINER_CONFIG = "/etc/docker/registry/config.yml"
#: Every container the harness starts carries this label (for finding leftovers by hand).
LABEL = "retentiond-test"


@dataclass
class RunningRegistry:
    """A registry container. ``root`` is the host directory mounted at /var/lib/registry."""

    name: str
    root: Path
    port: int
    image: str = REGISTRY_IMAGE
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """``HOST:PORT`` for docker and skopeo references (docker treats 127.0.0.0/8 as
        an insecure registry by default, so plain HTTP works without daemon config)."""
        return f"127.0.0.1:{self.port}"

    @property
    def v2(self) -> Path:
        """The storage tree: ``root/docker/registry/v2``."""
        return self.root / "docker" / "registry" / "v2"

    def ref(self, repo: str, ref: str) -> str:
        """``HOST/repo:tag`` or ``HOST/repo@sha256:...``."""
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{ref}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def image_exists(image: str = REGISTRY_IMAGE) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def registry_answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {url}/v2/`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(reg: RunningRegistry, timeout: float = 30.0) -> None:
    """Wait until the registry answers ``GET /v2/`` with 200; raise with its logs if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry_answers(reg.url, timeout=1.0):
            return
        state = docker("inspect", "-f", "{{.State.Running}}", reg.name, check=False)
        if state.returncode == 0 and state.stdout.strip() == "false":
            break
        time.sleep(0.05)
    logs = docker("logs", "--tail", "50", reg.name, check=False)
    raise RuntimeError(
        f"registry {reg.name} on {reg.url} is not ready after {timeout:.0f}s\n"
        f"{logs.stdout}{logs.stderr}"
    )


def _run_container(reg: RunningRegistry) -> None:
    args = [
        "run",
        "-d",
        "--name",
        reg.name,
        "--label",
        LABEL,
        "-p",
        f"127.0.0.1:{reg.port}:5000",
        "-v",
        f"{reg.root}:/var/lib/registry",
    ]
    for key, value in reg.env.items():
        args += ["-e", f"{key}={value}"]
    docker(*args, reg.image)


def start_registry(
    root: Path,
    name: str | None = None,
    *,
    env: dict[str, str] | None = None,
    image: str = REGISTRY_IMAGE,
    port: int | None = None,
) -> RunningRegistry:
    """Run a registry container on ``root`` (created if missing) and wait until it answers.

    The port is published on 127.0.0.1 only. ``env`` is passed as container environment
    (e.g. ``REGISTRY_STORAGE_MAINTENANCE_READONLY='{"enabled": true}'``).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    name = name or f"retentiond-test-{uuid.uuid4().hex[:12]}"
    attempts = 1 if port is not None else 5
    last: CommandError | None = None
    for _ in range(attempts):
        reg = RunningRegistry(
            name=name, root=root, port=port or free_port(), image=image, env=dict(env or {})
        )
        try:
            _run_container(reg)
        except CommandError as exc:  # a port taken between free_port() and docker run
            last = exc
            docker("rm", "-f", name, check=False)
            if "address already in use" in exc.stderr or "port is already allocated" in exc.stderr:
                continue
            raise
        try:
            wait_ready(reg)
        except Exception:
            docker("rm", "-f", name, check=False)
            raise
        return reg
    assert last is not None
    raise last


def stop_registry(reg: RunningRegistry, *, remove: bool = True) -> None:
    """Stop the container; with ``remove`` (default) also delete it. Never fails if absent."""
    if remove:
        docker("rm", "-f", "-v", reg.name, check=False)
    else:
        docker("stop", "-t", "5", reg.name, check=False)


def restart_registry(reg: RunningRegistry, *, env: dict[str, str] | None = None) -> RunningRegistry:
    """Restart the registry (clears its in-memory blob descriptor cache) on the same port and
    root. With ``env``, the container is recreated with that environment instead (e.g. to
    switch read-only mode on or off, which the registry reads only at start-up)."""
    if env is not None:
        docker("rm", "-f", reg.name, check=False)
        reg.env = dict(env)
        _run_container(reg)
    else:
        docker("restart", "-t", "5", reg.name)
    wait_ready(reg)
    return reg


def container_running(name: str) -> bool:
    res = docker("inspect", "-f", "{{.State.Running}}", name, check=False)
    return res.returncode == 0 and res.stdout.strip() == "true"
