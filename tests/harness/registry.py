"""Start, stop and restart a real registry container (2.8.2 or 3.1.1, images from
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

#: The registry versions the tests know: Debian's 2.8.2 and distribution v3.1.1.
VERSIONS = ("2.8.2", "3.1.1")
#: The version a test runs on unless it is marked ``both_registries``.
DEFAULT_VERSION = "2.8.2"
#: The images built by scripts/build-registry-image.sh, one per version.
REGISTRY_IMAGES = {
    "2.8.2": os.environ.get("RETENTIOND_TEST_REGISTRY_IMAGE", "retentiond-test/registry:2.8.2"),
    "3.1.1": os.environ.get("RETENTIOND_TEST_REGISTRY3_IMAGE", "retentiond-test/registry:3.1.1"),
}
#: The 2.8.2 image (the default).
REGISTRY_IMAGE = REGISTRY_IMAGES[DEFAULT_VERSION]
#: The registry config inside each image, where the official images keep it (the images'
#: CMD names it).
CONTAINER_CONFIGS = {
    "2.8.2": "/etc/docker/registry/config.yml",
    "3.1.1": "/etc/distribution/config.yml",
}
#: The 2.8.2 image's config path.
CONTAINER_CONFIG = CONTAINER_CONFIGS[DEFAULT_VERSION]
#: Every container the harness starts carries this label (for finding leftovers by hand).
LABEL = "retentiond-test"


@dataclass
class RunningRegistry:
    """A registry container. ``root`` is the host directory mounted at /var/lib/registry;
    ``version`` the registry's version ("2.8.2" or "3.1.1")."""

    name: str
    root: Path
    port: int
    image: str = REGISTRY_IMAGE
    env: dict[str, str] = field(default_factory=dict)
    version: str = DEFAULT_VERSION

    @property
    def config_path(self) -> str:
        """The registry's config file as the registry process sees it (inside the container:
        /etc/docker/registry/config.yml for 2.8.2, /etc/distribution/config.yml for 3.1.1)."""
        return CONTAINER_CONFIGS[self.version]

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


def check_version(version: str) -> str:
    """``version`` when the tests know it; ValueError otherwise."""
    if version not in VERSIONS:
        raise ValueError(f"unknown registry version {version!r}; known: {', '.join(VERSIONS)}")
    return version


def registry_image(version: str = DEFAULT_VERSION) -> str:
    """The test image of that registry version."""
    return REGISTRY_IMAGES[check_version(version)]


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
    image: str | None = None,
    port: int | None = None,
    version: str = DEFAULT_VERSION,
) -> RunningRegistry:
    """Run a registry container of ``version`` on ``root`` (created if missing) and wait until
    it answers.

    The image is that version's test image unless ``image`` is given. The port is published on
    127.0.0.1 only. ``env`` is passed as container environment (e.g.
    ``REGISTRY_STORAGE_MAINTENANCE_READONLY='{"enabled": true}'``).
    """
    image = image or registry_image(version)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    name = name or f"retentiond-test-{uuid.uuid4().hex[:12]}"
    attempts = 1 if port is not None else 5
    last: CommandError | None = None
    for _ in range(attempts):
        reg = RunningRegistry(
            name=name,
            root=root,
            port=port or free_port(),
            image=image,
            env=dict(env or {}),
            version=version,
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
