"""The GC's output streamed line by line through each runtime, on a real registry GC (2.8.2 and
3.1.1) of a generated tree after a plan's removals: every line reaches ``on_line`` whole (stdout
and stderr), the eligible digests are exactly what the registry's own dry run lists and what
disappears from disk, :class:`GcDeletions` reads them right, and ``GcOutcome.output`` keeps
only the tail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from bench.generate import Params, generate
from retentiond.config import GcMode, RuntimeCommands, RuntimeConfig, RuntimeKind
from retentiond.core.gc_output import ELIGIBLE_PREFIX, GcDeletions
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.errors import RuntimeControlError
from retentiond.policy.model import KeepRules, Policy, Safety, Untagged
from retentiond.policy.selectors import Selector
from retentiond.runtime.base import GC_TAIL_LINES, GcLines, GcOutcome, Runtime
from retentiond.runtime.command import CommandRuntime
from retentiond.runtime.docker import DockerRuntime
from retentiond.runtime.docker_containers import Containers
from retentiond.runtime.docker_specs import TWIN_LABEL
from retentiond.storage.reader import read_inventory
from tests.harness.gc import gc_dry_run, parse_gc_output, registry_bin
from tests.harness.images import pull_error
from tests.harness.plain_registry import plain_config
from tests.harness.proc import docker as docker_cli
from tests.harness.registry import RunningRegistry, free_port, start_registry, stop_registry
from tests.harness.tree import copy_tree, layer_link_dir
from tests.integration.test_plan_scenarios import make_removals

pytestmark = pytest.mark.registry
both = pytest.mark.both_registries

#: enough kept manifests that the GC prints more lines than GcOutcome keeps
PARAMS = Params(repositories=6, tags=8, index_share=0.3, alias_share=0.2, seed=14)
KEEP_LAST_2 = Policy(
    name="last-2",
    repositories=Selector.parse(["**"]),
    tags=Selector.parse(["*"]),
    keep=KeepRules(last=2),
    untagged=Untagged.DELETE,
    allow_mass_delete=True,
)


@dataclass
class Collectable:
    """A tree after the plan's removals; ``expected``: what the registry's own dry run (on a
    copy) lists as eligible; ``kept``: a tag the plan keeps (repository, tag); ``links``: the
    ``_layers`` links the dry run lists (3.x; none on 2.8)."""

    root: Path
    plan: Plan
    expected: set[str]
    kept: tuple[str, str]
    version: str
    links: set[tuple[str, str]]

    def blobs_on_disk(self) -> set[str]:
        store = self.root / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in store.glob("*/*") if (p / "data").is_file()}


@pytest.fixture
def collectable(docker_ready: None, registry_version: str, tmp_path: Path) -> Collectable:
    root = tmp_path / "registry"
    generate(root, PARAMS, jobs=1)
    safety = Safety(untagged_min_age=timedelta(hours=1))
    inventory = read_inventory(root)
    plan = make_plan(inventory, [KEEP_LAST_2], safety, datetime.now(UTC))
    make_removals(root, plan)
    dry = gc_dry_run(copy_tree(root, tmp_path / "copy"), version=registry_version)
    assert dry.ok, dry.output
    assert dry.eligible == set(plan.reclaimable) != set()
    # 3.x's GC also drops the _layers links of what it collects (#4344); 2.8's leaves them
    assert bool(dry.layer_links) == (registry_version != "2.8.2"), dry.output
    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    tags = [(r.name, t.name) for r in inventory.repositories for t in r.tags]
    kept = next(tag for tag in tags if tag not in deleted)
    return Collectable(root, plan, dry.eligible, kept, registry_version, dry.layer_links)


@pytest.fixture
def served(collectable: Collectable) -> Iterator[RunningRegistry]:
    """The collectable tree served by a registry container (and nothing it made survives)."""
    reg = start_registry(collectable.root, version=collectable.version)
    try:
        yield reg
    finally:
        made = docker_cli("ps", "-aq", "--filter", f"label={TWIN_LABEL}").stdout.split()
        for container in made:
            if (
                docker_cli("inspect", "-f", "{{.Name}}", container)
                .stdout.strip("/\n")
                .startswith(reg.name)
            ):
                docker_cli("rm", "-f", container, check=False)
        stop_registry(reg)


def eligible(lines: list[str]) -> set[str]:
    return {
        line.removeprefix(ELIGIBLE_PREFIX) for line in lines if line.startswith(ELIGIBLE_PREFIX)
    }


def collect_twice(
    rt: Runtime, tree: Collectable
) -> tuple[list[str], list[str], GcDeletions, GcOutcome]:
    """A dry run, then the GC, each line collected as it arrives and fed to GcDeletions."""
    before = tree.blobs_on_disk()
    dry_lines: list[str] = []
    dry = rt.run_gc(dry_run=True, on_line=dry_lines.append)
    assert dry.ok and tree.blobs_on_disk() == before, dry.output
    lines: list[str] = []
    deletions = GcDeletions(tree.plan.reclaimable)

    def on_line(line: str) -> None:
        lines.append(line)
        deletions.feed(line)

    gc = rt.run_gc(on_line=on_line)
    assert gc.ok, gc.output
    return dry_lines, lines, deletions, gc


def assert_understood(
    tree: Collectable,
    before: set[str],
    dry_lines: list[str],
    lines: list[str],
    deletions: GcDeletions,
    gc: GcOutcome,
) -> None:
    gone = before - tree.blobs_on_disk()
    assert eligible(dry_lines) == eligible(lines) == tree.expected == gone
    assert deletions.understood and deletions.unexpected_count == 0 and deletions.missed == 0
    assert (deletions.blobs, deletions.bytes) == (len(gone), tree.plan.bytes_reclaimed)
    assert deletions.prefixes == {digest[7:9] for digest in gone}
    # the registry's log lines (stderr, level info) arrive whole, one per deleted blob
    logged = [line for line in lines if "Deleting blob:" in line]
    assert len(logged) == len(gone) and all(line.startswith('time="') for line in logged)
    # 3.x: the same _layers links in the dry run and the GC, each deleted with a log line
    assert parse_gc_output("\n".join(dry_lines), 0).layer_links == tree.links
    assert parse_gc_output("\n".join(lines), 0).layer_links == tree.links
    unlinked = [line for line in lines if "Deleting layer link path:" in line]
    assert len(unlinked) == len(tree.links)
    for repo, digest in tree.links:
        # (3.x deletes the link file and leaves its empty directory)
        assert not (layer_link_dir(tree.root, repo, digest) / "link").exists(), (repo, digest)
    # every line went to on_line; the outcome keeps only the last ones
    assert gc.lines == len(lines) > GC_TAIL_LINES
    assert gc.output == "\n".join(lines[-GC_TAIL_LINES:])


@both
@pytest.mark.parametrize("mode", [GcMode.READONLY, GcMode.STOP])
def test_docker_gc_lines_say_what_was_deleted(
    collectable: Collectable, served: RunningRegistry, mode: GcMode
) -> None:
    before = collectable.blobs_on_disk()
    rt = DockerRuntime(RuntimeConfig(container=served.name, gc_mode=mode), run_id="gc-output")
    rt.enter_maintenance()
    try:
        dry_lines, lines, deletions, gc = collect_twice(rt, collectable)
    finally:
        rt.leave_maintenance()
    assert_understood(collectable, before, dry_lines, lines, deletions, gc)
    assert pull_error(served, *collectable.kept) is None


@both
def test_command_gc_lines_say_what_was_deleted(collectable: Collectable, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"  # level info: a log line on stderr per deleted blob
    config.write_text(plain_config(collectable.root, free_port()))
    before = collectable.blobs_on_disk()
    rt = CommandRuntime(
        RuntimeConfig(
            kind=RuntimeKind.COMMAND,
            commands=RuntimeCommands(
                gc=f"{registry_bin(collectable.version)} garbage-collect {config}"
            ),
        )
    )
    dry_lines, lines, deletions, gc = collect_twice(rt, collectable)
    assert_understood(collectable, before, dry_lines, lines, deletions, gc)


# ------------------------------------------------------------------------------------------
# how the output is read: silences, cut chunks, failures, background processes


def test_docker_exec_waits_through_silences_and_joins_cut_lines(
    docker_ready: None, tmp_path: Path
) -> None:
    reg = start_registry(tmp_path / "registry")
    try:
        # a shell in the FROM-scratch registry image (it has the libc they need)
        for tool, target in (("/bin/dash", "/bin/sh"), ("/bin/sleep", "/bin/sleep")):
            docker_cli("cp", "-L", tool, f"{reg.name}:{target}")
        container = docker_cli("inspect", "-f", "{{.Id}}", reg.name).stdout.strip()
        # the client's read timeout is 2 s; the command is silent for 4 s mid-line
        containers = Containers(docker.from_env(timeout=2), stop_timeout=1, ready_timeout=10)
        seen: list[str] = []
        lines = GcLines(seen.append)
        script = "printf 'half '; sleep 4; printf 'line\\nlast'; echo oops >&2; exit 3"
        code = containers.exec(container, ["/bin/sh", "-c", script], lines)
    finally:
        stop_registry(reg)
    assert code == 3
    assert sorted(seen) == ["half line", "last", "oops"] and lines.count == 3


def command_runtime(gc: str, gc_timeout: float | None = None) -> CommandRuntime:
    config = RuntimeConfig(kind=RuntimeKind.COMMAND, commands=RuntimeCommands(gc=gc))
    return CommandRuntime(config, gc_timeout=gc_timeout)


def test_command_gc_output_keeps_order_tail_and_exit_code() -> None:
    seen: list[str] = []
    gc = command_runtime(
        "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done; "
        "echo oops >&2; printf 'no end'; exit 3"
    ).run_gc(on_line=seen.append)
    assert seen == [f"line {i}" for i in range(500)] + ["oops", "no end"]
    assert (gc.returncode, gc.lines) == (3, 502)
    assert gc.output == "\n".join(seen[-GC_TAIL_LINES:])


def test_command_gc_is_not_waited_for_after_its_exit() -> None:
    started = time.monotonic()
    seen: list[str] = []
    gc = command_runtime("(sleep 5; echo late) & echo now").run_gc(on_line=seen.append)
    assert gc.ok and seen == ["now"]
    assert time.monotonic() - started < 3


def test_command_gc_timeout_kills_it_and_quotes_its_last_lines() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeControlError, match=r"did not finish within 0\.5s") as failed:
        command_runtime("echo marking; sleep 30", gc_timeout=0.5).run_gc()
    assert "marking" in str(failed.value) and time.monotonic() - started < 5


def test_command_gc_is_killed_when_on_line_fails(tmp_path: Path) -> None:
    marker = tmp_path / "finished"

    def fail(line: str) -> None:
        raise ValueError(f"cannot record {line}")

    with pytest.raises(ValueError, match="cannot record started"):
        command_runtime(f"echo started; sleep 2; touch {marker}").run_gc(on_line=fail)
    time.sleep(3)
    assert not marker.exists(), "the GC went on after run_gc raised"
