"""DockerRuntime against real registry containers: each gc_mode's enter / GC / leave cycle with
real pushes and pulls (skopeo), recovery from the states a killed run leaves, and the errors an
operator sees (container not found, daemon unreachable, socket not permitted, GC aborted).

The tests of a registry's cycle, its twin and recovery run on 2.8.2 and 3.1.1
(``both_registries``); ``runtime.registry_config`` is never set, so retentiond finds each
image's config file itself. The errors that involve no registry run once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import httpx
import pytest

from retentiond.config import GcMode, RuntimeConfig, RuntimeKind
from retentiond.errors import RuntimeControlError
from retentiond.runtime.base import MaintenanceState
from retentiond.runtime.docker import DockerRuntime
from retentiond.runtime.docker_specs import TWIN_LABEL, TWIN_SUFFIX
from retentiond.runtime.factory import make_runtime
from tests.harness.gc import parse_gc_output
from tests.harness.images import CommandError, pull_error, push_oci_image
from tests.harness.proc import docker as docker_cli
from tests.harness.proc import run
from tests.harness.registry import (
    LABEL,
    RunningRegistry,
    container_running,
    free_port,
    registry_answers,
    registry_image,
    wait_ready,
)
from tests.harness.tree import revision_dir

pytestmark = pytest.mark.registry
both = pytest.mark.both_registries

REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------
# helpers


def runtime(
    reg: RunningRegistry, mode: GcMode = GcMode.READONLY, run_id: str = "test-run", **kwargs: object
) -> DockerRuntime:
    return DockerRuntime(RuntimeConfig(container=reg.name, gc_mode=mode), run_id=run_id, **kwargs)  # type: ignore[arg-type]


def leftovers(reg: RunningRegistry) -> list[str]:
    """Names of the containers labelled as made by retentiond for this registry."""
    out = docker_cli("ps", "-a", "--filter", f"label={TWIN_LABEL}", "--format", "{{.Names}}")
    return [n for n in out.stdout.split() if n.startswith(reg.name)]


def container_id(name: str) -> str:
    return docker_cli("inspect", "-f", "{{.Id}}", name).stdout.strip()


def upload_status(reg: RunningRegistry, repo: str = "rt/probe") -> int:
    """Status of ``POST /v2/<repo>/blobs/uploads/``: 202 read-write, 405 read-only."""
    return httpx.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=5).status_code


def push(reg: RunningRegistry, repo: str, tag: str) -> str:
    return push_oci_image(reg, repo, tag, layers=[f"{repo}:{tag}".encode()], seed=f"{repo}:{tag}")


def push_fails(reg: RunningRegistry, repo: str, tag: str) -> str:
    with pytest.raises(CommandError) as failed:
        push(reg, repo, tag)
    return failed.value.stderr


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Names of extra containers (and ``net:NAME`` networks) to remove after the test, with
    every retentiond-made container of them."""
    names: list[str] = []
    yield names
    for name in names:
        if name.startswith("net:"):
            continue
        for suffix in ("", TWIN_SUFFIX, "-retentiond-gc"):
            docker_cli("rm", "-f", "-v", name + suffix, check=False)
    for name in names:
        if name.startswith("net:"):
            docker_cli("network", "rm", name[4:], check=False)


@pytest.fixture
def registry(registry: RunningRegistry) -> Iterator[RunningRegistry]:
    """The conftest's registry; whatever a test does, no twin or GC container of it survives
    the test."""
    yield registry
    for name in leftovers(registry):
        docker_cli("rm", "-f", name, check=False)


def run_registry(name: str, cleanup: list[str], version: str, *args: str) -> RunningRegistry:
    """``docker run`` a registry of ``version`` with extra ``args`` (instead of the harness's
    bind mount)."""
    port = free_port()
    cleanup.append(name)
    docker_cli(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        LABEL,
        "-p",
        f"127.0.0.1:{port}:5000",
        *args,
        registry_image(version),
    )
    reg = RunningRegistry(
        name=name,
        root=Path("/nonexistent"),
        port=port,
        image=registry_image(version),
        version=version,
    )
    wait_ready(reg)
    return reg


def docker_time(container: str, field: str) -> float:
    """A container's timestamp (``.Created``, ``.State.FinishedAt``) as ``time.time()`` has
    it (docker writes nanoseconds: cut to microseconds)."""
    text = docker_cli("inspect", "-f", "{{" + field + "}}", container).stdout.strip()
    whole, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return stamp + float("0." + (fraction or "0")[:6])


# ------------------------------------------------------------------------------------------
# the three gc_modes


@both
def test_readonly_mode_cycle(registry: RunningRegistry) -> None:
    before = push(registry, "rt/app", "v1")
    original = container_id(registry.name)
    rt = runtime(registry)
    assert rt.check() == []
    assert rt.describe() == f"docker container {registry.name} (gc_mode readonly)"
    config_text = rt.registry_config_text()
    assert config_text is not None and "rootdirectory: /var/lib/registry" in config_text

    started, called = time.monotonic(), time.time()
    assert rt.enter_maintenance() is MaintenanceState.READ_ONLY
    entered = time.monotonic() - started
    twin = registry.name + TWIN_SUFFIX
    assert container_running(twin) and not container_running(registry.name)
    # writes are refused from the original's stop, asked for once the twin was made
    switched = rt.switched_at()
    assert switched is not None and called <= switched <= time.time()
    assert (
        docker_time(twin, ".Created") <= switched <= docker_time(registry.name, ".State.FinishedAt")
    )
    labels = json.loads(docker_cli("inspect", "-f", "{{json .Config.Labels}}", twin).stdout)
    assert labels[TWIN_LABEL] == original and labels["retentiond.run"] == "test-run"
    restart = docker_cli("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", twin).stdout
    assert restart.strip() == "no"

    # Read-only: the twin serves the same tree on the same port; writes get 405.
    assert upload_status(registry) == 405
    print("push during read-only:", push_fails(registry, "rt/app", "during"))
    assert pull_error(registry, "rt/app", "v1") is None
    assert pull_error(registry, "rt/app", before) is None

    gc = rt.run_gc(dry_run=True)
    assert gc.ok, gc.output
    parsed = parse_gc_output(gc.output, gc.returncode)
    assert parsed.marked == 3 and parsed.blobs_eligible == 0, gc.output
    assert "blobs marked" in gc.output and "--delete-untagged" not in gc.output

    started = time.monotonic()
    rt.leave_maintenance()
    left = time.monotonic() - started
    assert leftovers(registry) == []
    assert container_id(registry.name) == original and container_running(registry.name)
    assert upload_status(registry) == 202
    push(registry, "rt/app", "after")
    assert pull_error(registry, "rt/app", "after") is None
    assert pull_error(registry, "rt/app", "v1") is None
    # A small registry switches in well under the ready timeout.
    assert entered < 10 and left < 10, (entered, left)
    # Idempotent: leaving again changes nothing and fails nothing.
    rt.leave_maintenance()
    assert container_running(registry.name)


@both
def test_readonly_gc_really_collects_in_the_twin(registry: RunningRegistry) -> None:
    keep = push(registry, "rt/gc", "keep")
    gone = push(registry, "rt/gc", "gone")
    shutil.rmtree(registry.v2 / "repositories" / "rt/gc" / "_manifests" / "tags" / "gone")
    shutil.rmtree(revision_dir(registry.root, "rt/gc", gone))
    rt = runtime(registry)
    rt.enter_maintenance()
    try:
        gc = rt.run_gc()
    finally:
        rt.leave_maintenance()
    assert gc.ok, gc.output
    assert parse_gc_output(gc.output, gc.returncode).blobs_eligible == 3, gc.output
    assert pull_error(registry, "rt/gc", "keep") is None
    assert pull_error(registry, "rt/gc", keep) is None
    # The restarted original has no stale cache: the collected image can be pushed again.
    push(registry, "rt/gc", "gone")
    assert pull_error(registry, "rt/gc", "gone") is None


@both
def test_stop_mode_cycle(registry: RunningRegistry) -> None:
    push(registry, "rt/stop", "v1")
    original = container_id(registry.name)
    rt = runtime(registry, GcMode.STOP)
    called = time.time()
    assert rt.enter_maintenance() is MaintenanceState.STOPPED
    assert not container_running(registry.name)
    switched = rt.switched_at()
    assert switched is not None and called <= switched <= time.time()
    assert switched <= docker_time(registry.name, ".State.FinishedAt")
    assert not registry_answers(registry.url, timeout=0.5)

    gc = rt.run_gc(dry_run=True)
    assert gc.ok, gc.output
    assert parse_gc_output(gc.output, gc.returncode).marked == 3, gc.output
    assert leftovers(registry) == [], "the one-off GC container is removed"
    assert not registry_answers(registry.url, timeout=0.5)

    rt.leave_maintenance()
    assert container_id(registry.name) == original
    push(registry, "rt/stop", "after")
    assert pull_error(registry, "rt/stop", "v1") is None
    assert pull_error(registry, "rt/stop", "after") is None


@both
def test_online_mode_cycle(registry: RunningRegistry) -> None:
    push(registry, "rt/online", "v1")
    started_at = docker_cli("inspect", "-f", "{{.State.StartedAt}}", registry.name).stdout
    rt = runtime(registry, GcMode.ONLINE)
    assert rt.enter_maintenance() is MaintenanceState.ONLINE
    assert upload_status(registry) == 202, "online: writes are still accepted"
    gc = rt.run_gc(dry_run=True)
    assert gc.ok and "blobs marked" in gc.output, gc.output
    rt.leave_maintenance()
    assert docker_cli("inspect", "-f", "{{.State.StartedAt}}", registry.name).stdout != started_at
    assert leftovers(registry) == []
    push(registry, "rt/online", "after")
    assert pull_error(registry, "rt/online", "v1") is None


@both
def test_make_runtime_builds_the_docker_runtime(registry: RunningRegistry) -> None:
    rt = make_runtime(RuntimeConfig(kind=RuntimeKind.DOCKER, container=registry.name), "r1")
    assert isinstance(rt, DockerRuntime) and rt.run_id == "r1"
    assert rt.check() == []


# ------------------------------------------------------------------------------------------
# failures


@both
def test_failed_gc_is_an_outcome_with_the_registrys_message(registry: RunningRegistry) -> None:
    digest = push(registry, "rt/broken", "v1")
    rt = runtime(registry)
    rt.enter_maintenance()
    try:
        (revision_dir(registry.root, "rt/broken", digest) / "link").write_bytes(b"")
        gc = rt.run_gc(dry_run=True)
    finally:
        rt.leave_maintenance()
    assert not gc.ok and gc.returncode != 0
    assert "failed to mark" in gc.output, gc.output
    assert container_running(registry.name) and leftovers(registry) == []


def test_container_not_found_names_the_running_registries(registry: RunningRegistry) -> None:
    rt = DockerRuntime(RuntimeConfig(container="no-such-registry-xyz"))
    problems = rt.check()
    assert len(problems) == 1
    assert "'no-such-registry-xyz' not found" in problems[0]
    assert registry.name in problems[0] and "runtime.container" in problems[0]
    for call in (rt.enter_maintenance, rt.recover, rt.leave_maintenance, rt.registry_config_text):
        with pytest.raises(RuntimeControlError, match="not found"):
            call()


def test_unreachable_daemon_is_explained(tmp_path: Path) -> None:
    # A real client on a socket where no daemon listens (version given: nothing is contacted
    # before the first call).
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/docker.sock", version="1.41")
    rt = DockerRuntime(RuntimeConfig(container="registry"), client=client)
    problems = rt.check()
    assert len(problems) == 1
    assert "Docker daemon does not answer" in problems[0]
    assert f"{tmp_path}/docker.sock" in problems[0] and "systemctl start docker" in problems[0]
    with pytest.raises(RuntimeControlError, match="does not answer"):
        rt.enter_maintenance()


def test_socket_without_permission_is_explained(docker_ready: None) -> None:
    """As an unprivileged user (``nobody``), the socket (root:docker 0660) refuses us."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as nobody")
    python = _python_for_nobody()
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = textwrap.dedent("""
        from retentiond.config import RuntimeConfig
        from retentiond.errors import RuntimeControlError
        from retentiond.runtime.docker import DockerRuntime
        rt = DockerRuntime(RuntimeConfig(container="registry"))
        print(rt.check()[0])
        try:
            rt.enter_maintenance()
        except RuntimeControlError as exc:
            print("raised:", exc)
    """)
    res = run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "env",
            f"PYTHONPATH={REPO_ROOT}:{site}",
            "DOCKER_HOST=",
            python,
            "-c",
            code,
        ],
        check=False,
    )
    assert res.returncode == 0, res.stderr
    fix = (
        "no permission on /var/run/docker.sock: run retentiond as root or add its user to "
        "the docker group"
    )
    first, second = res.stdout.strip().splitlines()
    assert fix in first
    assert second.startswith("raised:") and fix in second


def _python_for_nobody() -> str:
    """This interpreter when nobody may run it, else the system's of the same version."""
    for candidate in (
        sys.executable,
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
        "/usr/bin/python3",
    ):
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                candidate,
                "-c",
                "import sys; print(sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return candidate
    pytest.fail(f"no python {sys.version_info[0]}.{sys.version_info[1]} that nobody can run")


@both
def test_check_finds_storage_outside_any_mount(
    docker_ready: None, registry_version: str, cleanup: list[str]
) -> None:
    name = f"retentiond-test-nomount-{uuid.uuid4().hex[:8]}"
    run_registry(
        name, cleanup, registry_version, "-e", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/data"
    )
    problems = DockerRuntime(RuntimeConfig(container=name)).check()
    assert len(problems) == 1, problems
    assert "no mount that covers the registry's storage /data" in problems[0]
    assert "another tree" in problems[0]


@both
def test_check_refuses_an_autoremove_container(
    docker_ready: None, registry_version: str, cleanup: list[str], tmp_path: Path
) -> None:
    name = f"retentiond-test-rm-{uuid.uuid4().hex[:8]}"
    run_registry(name, cleanup, registry_version, "--rm", "-v", f"{tmp_path}:/var/lib/registry")
    rt = DockerRuntime(RuntimeConfig(container=name))
    problems = rt.check()
    assert len(problems) == 1 and "--rm" in problems[0], problems
    with pytest.raises(RuntimeControlError, match="--rm"):
        rt.enter_maintenance()
    assert container_running(name), "refused before touching it"
    online = DockerRuntime(RuntimeConfig(container=name, gc_mode=GcMode.ONLINE))
    assert online.check() == []


# ------------------------------------------------------------------------------------------
# the twin is a faithful copy


@both
def test_twin_keeps_an_anonymous_volume(
    docker_ready: None, registry_version: str, cleanup: list[str]
) -> None:
    """A registry whose storage is the image's VOLUME (no -v): the twin must mount the same
    anonymous volume, not get a new empty one."""
    name = f"retentiond-test-anon-{uuid.uuid4().hex[:8]}"
    reg = run_registry(name, cleanup, registry_version)
    volume = docker_cli("inspect", "-f", "{{range .Mounts}}{{.Source}}{{end}}", name).stdout
    reg.root = Path(volume.strip())  # the anonymous volume's directory on this host
    push(reg, "rt/anon", "v1")
    rt = DockerRuntime(RuntimeConfig(container=name))
    assert rt.check() == []
    rt.enter_maintenance()
    try:
        assert pull_error(reg, "rt/anon", "v1") is None
        gc = rt.run_gc(dry_run=True)
        assert gc.ok and parse_gc_output(gc.output, 0).marked == 3, gc.output
    finally:
        rt.leave_maintenance()
    assert pull_error(reg, "rt/anon", "v1") is None


@both
def test_twin_joins_the_networks_with_the_aliases(
    docker_ready: None, registry_version: str, cleanup: list[str], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    net, other = f"retentiond-test-net-{suffix}", f"retentiond-test-net2-{suffix}"
    name = f"retentiond-test-netreg-{suffix}"
    cleanup += [f"net:{net}", f"net:{other}"]
    docker_cli("network", "create", "--label", LABEL, net)
    docker_cli("network", "create", "--label", LABEL, other)
    reg = run_registry(
        name,
        cleanup,
        registry_version,
        "--network",
        net,
        "--network-alias",
        "docker-registry",
        "-v",
        f"{tmp_path}:/var/lib/registry",
        "-e",
        "EXTRA=kept",
    )
    docker_cli("network", "connect", "--alias", "reg-on-other", other, name)
    rt = DockerRuntime(RuntimeConfig(container=name))
    rt.enter_maintenance()
    try:
        twin = json.loads(docker_cli("inspect", name + TWIN_SUFFIX).stdout)[0]
        nets = twin["NetworkSettings"]["Networks"]
        assert set(nets) == {net, other}
        assert {"docker-registry", name} <= set(nets[net]["Aliases"])
        assert {"reg-on-other", name} <= set(nets[other]["Aliases"])
        assert "EXTRA=kept" in twin["Config"]["Env"]
        assert 'REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled": true}' in twin["Config"]["Env"]
        assert twin["HostConfig"]["Binds"] == [f"{tmp_path}:/var/lib/registry"]
        assert upload_status(reg) == 405
    finally:
        rt.leave_maintenance()
    assert upload_status(reg) == 202


# ------------------------------------------------------------------------------------------
# recovery after a crash


@both
def test_recover_after_a_process_killed_in_readonly_maintenance(
    registry: RunningRegistry,
) -> None:
    push(registry, "rt/crash", "v1")
    # A real process enters maintenance and is killed with SIGKILL in the middle of it.
    code = textwrap.dedent(f"""
        import os, signal
        from retentiond.config import RuntimeConfig
        from retentiond.runtime.docker import DockerRuntime
        rt = DockerRuntime(RuntimeConfig(container={registry.name!r}), run_id="crashed")
        rt.enter_maintenance()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert res.returncode == -9, res.stderr
    assert leftovers(registry) == [registry.name + TWIN_SUFFIX]
    assert upload_status(registry) == 405

    rt = runtime(registry, run_id="next")
    assert rt.recover() is True
    assert leftovers(registry) == []
    assert container_running(registry.name)
    assert upload_status(registry) == 202
    push(registry, "rt/crash", "after")
    assert pull_error(registry, "rt/crash", "v1") is None
    assert rt.recover() is False, "nothing left to do"


@both
@pytest.mark.parametrize("original_stopped", [True, False])
def test_recover_twin_created_but_not_started(
    registry: RunningRegistry, original_stopped: bool
) -> None:
    """Killed after creating the twin, before or after stopping the original."""
    original = container_id(registry.name)
    docker_cli(
        "create",
        "--name",
        registry.name + TWIN_SUFFIX,
        "--label",
        LABEL,
        "--label",
        f"{TWIN_LABEL}={original}",
        registry.image,
    )
    if original_stopped:
        docker_cli("stop", registry.name)
    assert runtime(registry).recover() is True
    assert leftovers(registry) == [] and container_running(registry.name)
    assert registry_answers(registry.url)


@both
def test_recover_gc_container_of_stop_mode(registry: RunningRegistry) -> None:
    """Killed while the one-off GC container ran (stop mode): it is removed, the registry
    started."""
    original = container_id(registry.name)
    docker_cli("stop", registry.name)
    docker_cli(
        "run",
        "-d",
        "--name",
        registry.name + "-retentiond-gc",
        "--label",
        LABEL,
        "--label",
        f"{TWIN_LABEL}={original}",
        "--label",
        "retentiond.role=gc",
        "-v",
        f"{registry.root}:/var/lib/registry",
        registry.image,
        "serve",
        registry.config_path,
    )
    assert runtime(registry, GcMode.STOP).recover() is True
    assert leftovers(registry) == [] and container_running(registry.name)
    assert registry_answers(registry.url)


@both
def test_recover_only_the_original_stopped(registry: RunningRegistry) -> None:
    docker_cli("stop", registry.name)
    assert runtime(registry).recover() is True
    assert registry_answers(registry.url)


@both
def test_enter_removes_a_stale_twin_first(registry: RunningRegistry) -> None:
    """A twin left by a crashed run (not recovered) does not block the next run."""
    original = container_id(registry.name)
    docker_cli(
        "create",
        "--name",
        registry.name + TWIN_SUFFIX,
        "--label",
        LABEL,
        "--label",
        f"{TWIN_LABEL}={original}",
        registry.image,
    )
    rt = runtime(registry)
    assert rt.enter_maintenance() is MaintenanceState.READ_ONLY
    try:
        assert upload_status(registry) == 405
    finally:
        rt.leave_maintenance()
    assert leftovers(registry) == [] and upload_status(registry) == 202


def test_run_gc_without_maintenance_is_refused(registry: RunningRegistry) -> None:
    for mode in (GcMode.READONLY, GcMode.STOP):
        with pytest.raises(RuntimeControlError, match="call enter_maintenance before run_gc"):
            runtime(registry, mode).run_gc(dry_run=True)
    assert leftovers(registry) == [] and container_running(registry.name)


@both
def test_original_removed_while_its_twin_runs(registry: RunningRegistry) -> None:
    rt = runtime(registry)
    rt.enter_maintenance()
    docker_cli("rm", "-f", registry.name)
    with pytest.raises(RuntimeControlError) as failed:
        runtime(registry).recover()
    assert f"{registry.name}{TWIN_SUFFIX} left by an interrupted run" in str(failed.value)
    docker_cli("rm", "-f", registry.name + TWIN_SUFFIX)
