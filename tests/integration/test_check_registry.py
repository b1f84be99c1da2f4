"""``retentiond check`` and the Docker runtime find the registry's version and config file in
real registry containers (the test images of 2.8.2 and 3.1.1, packaged like the official ones:
``/entrypoint.sh`` with the config file as its command).

The containers are the ones users run: the image as it is (the config named by the command), an
image whose own start script names the config (nothing in ``docker inspect`` says which: the
version's default decides), and ``serve`` with ``REGISTRY_CONFIGURATION_PATH``. A registry
without a config argument at all does not start (``configuration path unspecified``), so there is
nothing to find for one. The untested-version warning is unit-tested
(tests/unit/test_registry_discovery.py): no registry binary of an untested version is here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from retentiond.config import GcMode, RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.runtime.discovery import (
    FROM_COMMAND,
    FROM_ENV,
    FROM_SETTING,
    V2_CONFIG,
    V3_CONFIG,
    ConfigLocation,
)
from retentiond.runtime.docker import DockerRuntime
from tests.harness.proc import docker
from tests.harness.registry import (
    LABEL,
    RunningRegistry,
    free_port,
    image_exists,
    registry_image,
    start_registry,
    stop_registry,
    wait_ready,
)
from tests.harness.tree import v2

pytestmark = pytest.mark.both_registries

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"2.8.2": V2_CONFIG, "3.1.1": V3_CONFIG}
DEFAULT_HOW = {"2.8.2": "default for v2", "3.1.1": "default for v3"}
POLICY = "policies:\n  - {name: ci, repositories: ['ci/**'], keep: {last: 3}}\n"


@pytest.fixture
def image(registry_version: str) -> str:
    """The test image of ``registry_version``; the test fails (never skips) without it."""
    name = registry_image(registry_version)
    if not image_exists(name):
        pytest.fail(
            f"the image {name} does not exist; run `bash scripts/build-registry-image.sh "
            f"{registry_version}` (or `bash scripts/start-docker.sh`)",
            pytrace=False,
        )
    return name


@pytest.fixture
def served(image: str, registry_version: str, tmp_path: Path) -> Iterator[RunningRegistry]:
    """The image run as it is: ``/entrypoint.sh <config>``."""
    reg = start_registry(tmp_path / "registry", version=registry_version)
    try:
        yield reg
    finally:
        stop_registry(reg)


@pytest.fixture
def own_start_script(
    image: str, registry_version: str, tmp_path: Path
) -> Iterator[RunningRegistry]:
    """The image with a start script of its own (``/start.sh``, no arguments) that starts the
    registry on the version's usual config file: ``docker inspect`` does not say which."""
    root = tmp_path / "registry"
    root.mkdir()
    script = tmp_path / "start.sh"
    script.write_text(f"#!/bin/sh\nexec /bin/registry serve {CONFIGS[registry_version]}\n")
    script.chmod(0o755)
    reg = RunningRegistry(
        name=f"retentiond-test-{uuid.uuid4().hex[:12]}",
        root=root,
        port=free_port(),
        image=image,
        version=registry_version,
    )
    try:
        docker(
            "create",
            "--name",
            reg.name,
            "--label",
            LABEL,
            "-p",
            f"127.0.0.1:{reg.port}:5000",
            "-v",
            f"{root}:/var/lib/registry",
            "--entrypoint",
            "/start.sh",
            image,
        )
        docker("cp", str(script), f"{reg.name}:/start.sh")
        docker("start", reg.name)
        wait_ready(reg)
        yield reg
    finally:
        stop_registry(reg)


def write_config(tmp_path: Path, reg: RunningRegistry, runtime: str = "") -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies/ci.yaml").write_text(POLICY)
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        f"registry:\n  root: {reg.root}\n  url: {reg.url}\n"
        f"runtime:\n  kind: docker\n  container: {reg.name}\n{runtime}"
        f"policies: [policies/]\nstate_dir: {tmp_path / 'state'}\n"
    )
    return config


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "RETENTIOND_CONFIG"}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "retentiond", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env=full,
    )


def version_line(registry_version: str, container: str) -> re.Pattern[str]:
    """The version line: the suffix is the build's (``+ds1`` for Debian's 2.8.2, ``+unknown``
    for a v3 built without upstream's release flags, nothing for upstream's release)."""
    return re.compile(
        rf"registry: distribution v{re.escape(registry_version)}\S* in container "
        + re.escape(container)
    )


def test_check_names_the_version_and_the_config_from_the_command(
    served: RunningRegistry, registry_version: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, served)

    result = check("--config", str(config), "check")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"ok: config {config}, 1 policy in 1 file"
    assert version_line(registry_version, served.name).fullmatch(lines[1]), lines
    assert lines[2] == (
        f"registry config: {CONFIGS[registry_version]} (from the container's command)"
    )
    assert lines[3] == f"storage: filesystem {served.root}"
    assert len(lines) == 4
    assert result.stderr == ""  # a tested version, nothing in the way of a run

    rt = DockerRuntime(RuntimeConfig(container=served.name))
    assert rt.config_location() == ConfigLocation(CONFIGS[registry_version], FROM_COMMAND)
    text = rt.registry_config_text()
    assert text is not None and "rootdirectory: /var/lib/registry" in text
    # the setting always wins, even over what the command says; check says it cannot be read
    mine = DockerRuntime(RuntimeConfig(container=served.name, registry_config="/etc/mine.yml"))
    assert mine.config_location() == ConfigLocation("/etc/mine.yml", FROM_SETTING)
    config = write_config(tmp_path, served, "  registry_config: /etc/mine.yml\n")
    result = check("--config", str(config), "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == (
        "registry config: /etc/mine.yml (from runtime.registry_config)"
    )
    assert result.stderr == (
        f"warning: the registry's config file /etc/mine.yml cannot be read in container "
        f"{served.name}: the GC would fail on it; set runtime.registry_config to the file the "
        "registry reads\n"
    )


def test_a_start_script_of_its_own_gets_the_versions_default(
    own_start_script: RunningRegistry, registry_version: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, own_start_script)

    result = check("--config", str(config), "check")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert version_line(registry_version, own_start_script.name).fullmatch(lines[1]), lines
    assert lines[2] == (
        f"registry config: {CONFIGS[registry_version]} ({DEFAULT_HOW[registry_version]})"
    )
    assert result.stderr == ""

    # the GC runs on the file found (gc_mode online: in the live container, nothing frozen)
    rt = DockerRuntime(
        RuntimeConfig(container=own_start_script.name, gc_mode=GcMode.ONLINE), run_id="t"
    )
    assert rt.check() == []
    for empty in ("repositories", "blobs"):  # 2.8's GC fails on a tree without them
        (v2(own_start_script.root) / empty).mkdir(parents=True)
    outcome = rt.run_gc(dry_run=True)
    assert outcome.ok, outcome.output
    assert "0 blobs marked" in outcome.output, outcome.output


def test_a_stopped_registry_that_names_no_config_stops_the_run_before_any_change(
    own_start_script: RunningRegistry, tmp_path: Path
) -> None:
    docker("stop", "-t", "5", own_start_script.name)
    config = write_config(tmp_path, own_start_script)

    result = check("--config", str(config), "check")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"registry: version unknown in container {own_start_script.name}",
        "registry config: not found",
        f"storage: filesystem {own_start_script.root}",
    ]
    warnings = result.stderr.splitlines()
    assert warnings[0] == (
        f"warning: cannot tell the registry's version: cannot ask the registry in container "
        f"{own_start_script.name} for its version: the container is not running (exited)"
    )
    assert warnings[1].startswith(
        f"warning: cannot tell which config file the registry in container "
        f"{own_start_script.name} reads: its command names none"
    )
    assert warnings[1].endswith(
        "set runtime.registry_config to the file's path inside the container"
    )

    rt = DockerRuntime(RuntimeConfig(container=own_start_script.name, gc_mode=GcMode.STOP))
    state = "{{.State.Status}} {{.State.StartedAt}} {{.State.FinishedAt}}"
    before = docker("inspect", "-f", state, own_start_script.name).stdout
    with pytest.raises(RuntimeControlError, match="cannot tell which config file"):
        rt.enter_maintenance()
    assert docker("inspect", "-f", state, own_start_script.name).stdout == before
    made = docker("ps", "-a", "-q", "--filter", f"name={own_start_script.name}-retentiond")
    assert made.stdout == ""


def test_serve_with_the_configuration_path_variable(
    image: str, registry_version: str, tmp_path: Path
) -> None:
    # docker run -e REGISTRY_CONFIGURATION_PATH=... registry:3 serve
    reg = RunningRegistry(
        name=f"retentiond-test-{uuid.uuid4().hex[:12]}",
        root=tmp_path / "registry",
        port=free_port(),
        image=image,
        version=registry_version,
    )
    reg.root.mkdir()
    try:
        docker(
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
            "-e",
            f"REGISTRY_CONFIGURATION_PATH={CONFIGS[registry_version]}",
            image,
            "serve",
        )
        wait_ready(reg)
        config = write_config(tmp_path, reg)

        result = check("--config", str(config), "check")

        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[2] == (
            f"registry config: {CONFIGS[registry_version]} ({FROM_ENV})"
        )
    finally:
        stop_registry(reg)


def test_without_docker_check_still_checks_the_files(registry_version: str, tmp_path: Path) -> None:
    """A pre-commit hook on a machine without Docker: the files are checked, the runtime is a
    warning, the exit code 0; ``check PATH...`` does not even try."""
    reg = RunningRegistry(name="registry", root=tmp_path / "registry", port=5000)
    config = write_config(tmp_path, reg)
    nowhere = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}

    result = check("--config", str(config), "check", env=nowhere)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"ok: config {config}, 1 policy in 1 file\nstorage: filesystem {reg.root}\n"
    )
    assert result.stderr == (
        "warning: the registry runtime could not be checked: cannot connect to the Docker "
        f"daemon: the Docker daemon does not answer at unix://{tmp_path}/no-docker.sock: start "
        "it (`systemctl start docker`) or point DOCKER_HOST at it\n"
    )

    only_policies = check("check", str(tmp_path / "policies/ci.yaml"), env=nowhere)
    assert only_policies.returncode == 0, only_policies.stderr
    assert (only_policies.stdout, only_policies.stderr) == ("ok: 1 policy in 1 file\n", "")
