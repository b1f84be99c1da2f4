"""CommandRuntime against the registry (Debian's docker-registry 2.8.2, and 3.1.1) run as a plain
process (no container), controlled by scripts/registry-process/{start,stop}.sh through the
runtime's shell commands, with real pushes and pulls (skopeo); and NoRuntime. The tests that
run a registry run on both versions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from retentiond.config import GcMode, RuntimeCommands, RuntimeConfig, RuntimeKind
from retentiond.errors import RuntimeControlError
from retentiond.runtime.base import MaintenanceState
from retentiond.runtime.command import CommandRuntime, NoRuntime, gc_command
from retentiond.runtime.factory import make_runtime
from tests.harness.gc import parse_gc_output
from tests.harness.images import CommandError, pull_error, push_oci_image
from tests.harness.plain_registry import PlainRegistry, start_plain_registry, stop_plain_registry
from tests.harness.registry import registry_answers
from tests.harness.tree import revision_dir, tag_dir

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]


@pytest.fixture
def plain(docker_ready: None, registry_version: str, tmp_path: Path) -> Iterator[PlainRegistry]:
    reg = start_plain_registry(tmp_path, version=registry_version)
    try:
        yield reg
    finally:
        print(f"--- last log lines of {reg.name} ---\n{reg.log_tail()}")
        stop_plain_registry(reg)


def runtime(
    reg: PlainRegistry, mode: GcMode = GcMode.READONLY, **commands: str | None
) -> CommandRuntime:
    config = RuntimeConfig(
        kind=RuntimeKind.COMMAND,
        gc_mode=mode,
        registry_config=str(reg.config),
        commands=dataclasses.replace(reg.commands, **commands),
    )
    return CommandRuntime(config)


def upload_status(reg: PlainRegistry, repo: str = "rt/probe") -> int:
    return httpx.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=5).status_code


def push(reg: PlainRegistry, repo: str, tag: str) -> str:
    return push_oci_image(reg, repo, tag, layers=[f"{repo}:{tag}".encode()], seed=f"{repo}:{tag}")


def test_readonly_cycle_with_the_registry_process(plain: PlainRegistry) -> None:
    push(plain, "cmd/app", "v1")
    gone = push(plain, "cmd/app", "gone")
    rt = runtime(plain)
    assert rt.check() == []
    assert rt.describe() == "command runtime (maintenance via commands.readonly)"
    text = rt.registry_config_text()
    assert text is not None and f"rootdirectory: {plain.root}" in text
    pid_before = plain.pid()

    assert rt.enter_maintenance() is MaintenanceState.READ_ONLY
    assert plain.pid() not in (None, pid_before), "restarted into read-only mode"
    assert upload_status(plain) == 405
    with pytest.raises(CommandError):
        push(plain, "cmd/app", "during")
    assert pull_error(plain, "cmd/app", "v1") is None

    dry = rt.run_gc(dry_run=True)
    assert dry.ok, dry.output
    assert parse_gc_output(dry.output, dry.returncode).marked == 6, dry.output

    # A real GC of an unlinked manifest, with the registry read-only.
    tag = tag_dir(plain.root, "cmd/app", "gone")
    for path in (tag, revision_dir(plain.root, "cmd/app", gone)):
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        path.rmdir()
    gc = rt.run_gc()
    assert gc.ok, gc.output
    assert parse_gc_output(gc.output, gc.returncode).blobs_eligible == 3, gc.output

    rt.leave_maintenance()
    assert upload_status(plain) == 202
    push(plain, "cmd/app", "after")
    push(plain, "cmd/app", "gone")  # the collected image again: no stale cache after the restart
    for ref in ("v1", "after", "gone"):
        assert pull_error(plain, "cmd/app", ref) is None, ref


def test_stop_cycle_with_the_registry_process(plain: PlainRegistry) -> None:
    push(plain, "cmd/stop", "v1")
    rt = runtime(plain, GcMode.STOP)
    assert rt.describe() == "command runtime (maintenance via commands.stop)"
    assert rt.enter_maintenance() is MaintenanceState.STOPPED
    assert plain.pid() is None and not registry_answers(plain.url, timeout=0.5)
    gc = rt.run_gc(dry_run=True)
    assert gc.ok and "blobs marked" in gc.output, gc.output
    rt.leave_maintenance()
    push(plain, "cmd/stop", "after")
    assert pull_error(plain, "cmd/stop", "v1") is None
    # gc_mode readonly without a readonly command falls back to stop
    rt = runtime(plain, readonly=None)
    assert rt.enter_maintenance() is MaintenanceState.STOPPED
    rt.leave_maintenance()
    assert registry_answers(plain.url)


def test_online_cycle_with_the_registry_process(plain: PlainRegistry) -> None:
    push(plain, "cmd/online", "v1")
    pid = plain.pid()
    rt = runtime(plain, GcMode.ONLINE)
    assert rt.describe() == "command runtime (maintenance via none, gc_mode online)"
    assert rt.enter_maintenance() is MaintenanceState.ONLINE
    assert plain.pid() == pid and upload_status(plain) == 202
    gc = rt.run_gc(dry_run=True)
    assert gc.ok and "blobs marked" in gc.output, gc.output
    rt.leave_maintenance()
    assert plain.pid() not in (None, pid), "restarted by start"
    assert pull_error(plain, "cmd/online", "v1") is None


def test_failed_gc_is_returned_with_its_message(plain: PlainRegistry) -> None:
    digest = push(plain, "cmd/broken", "v1")
    rt = runtime(plain)
    rt.enter_maintenance()
    try:
        (revision_dir(plain.root, "cmd/broken", digest) / "link").write_bytes(b"")
        gc = rt.run_gc(dry_run=True)
    finally:
        rt.leave_maintenance()
    assert gc.returncode != 0 and "failed to mark" in gc.output, gc.output


def test_recover_runs_start_only_when_told(plain: PlainRegistry) -> None:
    runtime(plain).enter_maintenance()  # a run that then died
    assert upload_status(plain) == 405
    rt = runtime(plain)
    assert rt.recover() is False, "not marked: nothing is run"
    assert upload_status(plain) == 405
    rt.mark_interrupted()
    assert rt.recover() is True
    assert upload_status(plain) == 202
    assert rt.recover() is False, "done once"
    # start is safe when the registry already runs (the contract for commands.start)
    rt.mark_interrupted()
    assert rt.recover() is True and upload_status(plain) == 202


def test_failing_command_names_command_code_and_output(plain: PlainRegistry) -> None:
    rt = runtime(plain, readonly="echo preparing; echo 'disk full' >&2; exit 3")
    with pytest.raises(RuntimeControlError) as failed:
        rt.enter_maintenance()
    message = str(failed.value)
    assert "runtime.commands.readonly failed with exit code 3" in message
    assert "disk full" in message and "preparing" in message and "exit 3" in message
    assert upload_status(plain) == 202, "the registry is untouched"


def test_commands_time_out_and_never_wait_for_background_processes() -> None:
    rt = CommandRuntime(
        RuntimeConfig(
            kind=RuntimeKind.COMMAND,
            commands=RuntimeCommands(
                stop="sleep 30",
                start="sleep 3 & echo started",
                gc="x garbage-collect c",
            ),
        ),
        timeout=0.5,
    )
    started = time.monotonic()
    with pytest.raises(RuntimeControlError, match=r"did not finish within 0\.5s and was killed"):
        rt.enter_maintenance()
    assert time.monotonic() - started < 5
    # A background process that keeps our stdout does not make us wait for it.
    started = time.monotonic()
    rt.leave_maintenance()
    assert time.monotonic() - started < 2


def test_gc_command_dry_run_and_delete_untagged() -> None:
    cfg = "/etc/docker/registry/config.yml"
    assert gc_command(f"docker-registry garbage-collect {cfg}", dry_run=False) == (
        f"docker-registry garbage-collect {cfg}"
    )
    assert gc_command(f"docker-registry garbage-collect {cfg}", dry_run=True) == (
        f"docker-registry garbage-collect --dry-run {cfg}"
    )
    kubectl = f"kubectl exec deploy/registry -- registry garbage-collect {cfg}"
    assert gc_command(kubectl, dry_run=True) == (
        f"kubectl exec deploy/registry -- registry garbage-collect --dry-run {cfg}"
    )
    with pytest.raises(RuntimeControlError, match="no `garbage-collect` word"):
        gc_command("/usr/local/bin/registry-gc.sh", dry_run=True)
    assert gc_command("/usr/local/bin/registry-gc.sh", dry_run=False)
    for bad in (
        f"registry garbage-collect --delete-untagged {cfg}",
        f"registry garbage-collect -m {cfg}",
    ):
        with pytest.raises(RuntimeControlError, match="--delete-untagged"):
            gc_command(bad, dry_run=False)


def test_check_lists_missing_commands() -> None:
    rt = CommandRuntime(
        RuntimeConfig(
            kind=RuntimeKind.COMMAND,
            commands=RuntimeCommands(
                gc="registry garbage-collect -m /etc/docker/registry/config.yml"
            ),
        )
    )
    problems = rt.check()
    assert len(problems) == 3, problems
    assert "gc_mode readonly needs readonly" in problems[0]
    assert "commands.start is not set" in problems[1]
    assert "--delete-untagged" in problems[2]
    with pytest.raises(RuntimeControlError, match=r"runtime\.commands\.readonly is not set"):
        rt.enter_maintenance()


def test_no_runtime_never_collects() -> None:
    rt = make_runtime(RuntimeConfig(kind=RuntimeKind.NONE))
    assert isinstance(rt, NoRuntime)
    assert rt.check() == [] and rt.recover() is False
    assert rt.enter_maintenance() is MaintenanceState.ONLINE
    with pytest.raises(RuntimeControlError, match=r"runtime\.kind is none"):
        rt.run_gc(dry_run=True)
    rt.leave_maintenance()
    assert isinstance(make_runtime(RuntimeConfig(kind=RuntimeKind.COMMAND)), CommandRuntime)
