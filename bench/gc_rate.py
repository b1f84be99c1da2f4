"""Measure the registry's real ``garbage-collect`` (not only ``--dry-run``) per blob, on trees
from which a plan's removals were taken, so that ``retentiond.windows`` can estimate the GC of a
registry it has no run history for.

    python -m bench.gc_rate --size 100x20 --size 200x50 --keep-share 0.9 --keep-share 0.1
    python -m bench.gc_rate --source-dir bench/trees/500x100 --keep-share 0.2

(from the repository root, with the development venv's python; needs Docker and the test
registry image, as ``bench.apply_modes`` does).

For each tree and each keep share: the tree (``--size RxT``: generated for each case, seed
``--seed``, which gives the same tree and is faster than a copy; ``--source-dir``: a tree made
by ``bench.generate``, copied for each case with ``cp -a`` and never modified) loses what a plan
removes (retentiond's own plan with ``keep: {last: N}``, N the share of each repository's tags,
and untagged manifests deleted; the removal paths deleted outright, as after the quarantine);
then the test registry container serves it read-only, as during a window, and runs
``garbage-collect --dry-run`` and then the real ``garbage-collect`` inside the container
(``docker exec``, as retentiond does), each timed by the wall clock and by the container's CPU
seconds (cgroup v1 ``cpuacct``, where there is one).

Printed per case: the blobs in the store, the blobs the GC deleted (which must be the plan's
reclaimable count: a warning says when not), the seconds of each GC, and the rates: dry-run
seconds per blob (the mark: it reads every repository and lists the whole store), the real
GC's seconds per blob, and (real - dry-run) seconds per deleted blob (the sweep); the same
from CPU seconds, which a busy machine does not inflate; and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.generate import SUMMARY_FILE, Params, generate
from retentiond.core.plan import make_plan
from retentiond.policy.loader import validate_policies_text
from retentiond.policy.model import Safety
from retentiond.storage.reader import read_inventory
from retentiond.storage.removal_list import removals_for
from tests.harness.registry import CONTAINER_CONFIG, start_registry, stop_registry

READ_ONLY = {"REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled": true}'}
SUMMARY_LINE = re.compile(
    r"(\d+) blobs marked, (\d+) blobs and \d+ manifests eligible for deletion"
)


@dataclass
class Case:
    """One GC measured: a tree, the tags kept per repository, and what the GC did."""

    tree: str
    keep: int
    tags: int
    blobs: int
    reclaimable: int
    marked: int
    deleted: int
    dry_run: float  # seconds
    real: float  # seconds
    dry_run_cpu: float | None  # CPU seconds of the container during the dry run
    real_cpu: float | None
    load: float  # the machine's 1-minute load average after the real GC

    @property
    def mark_rate(self) -> float:
        """Dry-run seconds per blob in the store."""
        return self.dry_run / self.blobs

    @property
    def blob_rate(self) -> float:
        """Real GC seconds per blob in the store."""
        return self.real / self.blobs

    @property
    def sweep_rate(self) -> float:
        """Seconds the real GC took beyond its dry run, per blob it deleted."""
        return (self.real - self.dry_run) / self.deleted if self.deleted else 0.0

    @property
    def cpu_rates(self) -> tuple[float, float] | None:
        """CPU seconds of the dry run per blob, and of the real GC beyond it per deleted blob:
        what the GC costs on an idle machine, whatever the load was."""
        if self.dry_run_cpu is None or self.real_cpu is None or not self.deleted:
            return None
        return self.dry_run_cpu / self.blobs, (self.real_cpu - self.dry_run_cpu) / self.deleted


def policy(keep: int) -> str:
    return (
        "policies:\n  - name: gc-rate\n    repositories: ['**']\n"
        f"    keep: {{last: {keep}}}\n    untagged: delete\n    allow_mass_delete: true\n"
    )


def remove_as_planned(root: Path, keep: int) -> tuple[int, int, int]:
    """Delete from ``root`` what a plan keeping the last ``keep`` tags removes; return the
    tags, the blobs and the plan's reclaimable blobs."""
    policies = list(validate_policies_text(policy(keep), "gc-rate.yaml").policies)
    inventory = read_inventory(root)
    plan = make_plan(
        inventory, policies, Safety(untagged_min_age=timedelta(hours=1)), datetime.now(UTC)
    )
    nested = [r.name for r in inventory.repositories if r.has_nested]
    v2 = root / "docker/registry/v2"
    for removal in removals_for(plan, nested):
        shutil.rmtree(v2 / removal.live)
    tags = sum(len(r.tags) for r in inventory.repositories)
    return tags, len(inventory.blobs), len(plan.reclaimable)


def container_cpu_seconds(container: str) -> float | None:
    """CPU seconds the container has used (cgroup v1 ``cpuacct``), or None where there is no
    such file (another cgroup layout)."""
    ident = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True
    ).stdout.strip()
    usage = Path(f"/sys/fs/cgroup/cpuacct/docker/{ident}/cpuacct.usage")
    return int(usage.read_text()) / 1e9 if ident and usage.exists() else None


@dataclass
class GcRun:
    """One ``garbage-collect``: wall and CPU seconds, blobs marked and eligible."""

    seconds: float
    cpu: float | None
    marked: int
    eligible: int


def run_gc(container: str, *, dry_run: bool) -> GcRun:
    """Run ``garbage-collect`` in ``container`` (with ``docker exec``) and time it."""
    args = ["garbage-collect", *(["--dry-run"] if dry_run else []), CONTAINER_CONFIG]
    cpu_before = container_cpu_seconds(container)
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "exec", container, "/bin/registry", *args],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    cpu_after = container_cpu_seconds(container)
    found = SUMMARY_LINE.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(
            f"garbage-collect {'--dry-run ' if dry_run else ''}in {container} exited "
            f"{proc.returncode} without its summary line:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return GcRun(seconds, cpu, int(found[1]), int(found[2]))


def make_root(source: Path | Params, root: Path) -> None:
    """``root``: a copy of the tree ``source``, or the tree ``source`` describes, generated."""
    shutil.rmtree(root, ignore_errors=True)
    if isinstance(source, Params):
        generate(root, source, jobs=os.cpu_count() or 1)
    else:
        subprocess.run(["cp", "-a", str(source), str(root)], check=True)


def tree_name(source: Path | Params) -> str:
    return f"{source.repositories}x{source.tags}" if isinstance(source, Params) else source.name


def measure(source: Path | Params, keep_share: float, work: Path) -> Case:
    """Make the tree, remove what the plan removes, time the dry run and the real GC."""
    name = tree_name(source)
    tags_per_repository = (
        source.tags if isinstance(source, Params) else json_summary(source)["params"]["tags"]
    )
    keep = max(1, round(keep_share * int(tags_per_repository)))
    root = work / f"{name}-keep{keep}"
    log(f"{name}, keep {keep}: {'generating' if isinstance(source, Params) else 'copying'}")
    make_root(source, root)
    try:
        log(f"{name}, keep {keep}: removing what the plan removes")
        tags, blobs, reclaimable = remove_as_planned(root, keep)
        os.sync()
        reg = start_registry(root, env=READ_ONLY)
        try:
            log(f"{name}, keep {keep}: garbage-collect --dry-run")
            dry = run_gc(reg.name, dry_run=True)
            log(f"{name}, keep {keep}: garbage-collect")
            real = run_gc(reg.name, dry_run=False)
            load = float(Path("/proc/loadavg").read_text().split()[0])
        finally:
            stop_registry(reg)
        if dry.eligible != reclaimable or real.eligible != reclaimable:
            log(
                f"WARNING {name}, keep {keep}: the plan reclaims {reclaimable} blobs, "
                f"the dry run calls {dry.eligible} eligible and the GC deleted {real.eligible}"
            )
        case = Case(
            name,
            keep,
            tags,
            blobs,
            reclaimable,
            real.marked,
            real.eligible,
            dry.seconds,
            real.seconds,
            dry.cpu,
            real.cpu,
            load,
        )
        log(f"measured (removing the tree next): {case_row(case)}")
        return case
    finally:
        shutil.rmtree(root, ignore_errors=True)


def json_summary(tree: Path) -> dict[str, Any]:
    """The summary ``bench.generate`` wrote into ``tree``."""
    summary: dict[str, Any] = json.loads((tree / SUMMARY_FILE).read_text())
    return summary


def case_row(c: Case) -> str:
    """The case's row in the table :func:`report` prints."""
    cpu = c.cpu_rates
    cpu_cells = f"{cpu[0] * 1e6:.1f} | {cpu[1] * 1e6:.1f}" if cpu else "- | -"
    return (
        f"| {c.tree} | {c.keep} | {c.tags:,} | {c.blobs:,} | {c.deleted:,} "
        f"| {c.dry_run:.2f} s | {c.real:.2f} s | {c.mark_rate * 1e6:.1f} "
        f"| {c.blob_rate * 1e6:.1f} | {c.sweep_rate * 1e6:.1f} | {cpu_cells} | {c.load:.1f} |"
    )


def report(cases: list[Case]) -> str:
    lines = [
        f"{os.cpu_count()} CPUs; the real GC after its dry run, in the test registry container "
        "(read-only), on a tree from which the plan's removals were deleted. CPU: the "
        "container's CPU seconds (cgroup); load: the 1-minute load average after the GC.",
        "",
        "| tree | keep | tags | blobs | deleted | dry-run | real GC | dry-run µs/blob "
        "| real µs/blob | (real - dry) µs/deleted blob | CPU: dry-run µs/blob "
        "| CPU: (real - dry) µs/deleted blob | load |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [case_row(c) for c in cases]
    if cases:
        lines += [
            "",
            f"highest: dry-run {max(c.mark_rate for c in cases) * 1e6:.1f} µs/blob, "
            f"real {max(c.blob_rate for c in cases) * 1e6:.1f} µs/blob, "
            f"sweep {max(c.sweep_rate for c in cases) * 1e6:.1f} µs/deleted blob",
        ]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sources(args: argparse.Namespace) -> list[Path | Params]:
    """The ``--source-dir`` trees (copied for each case), then the ``--size`` trees (generated
    for each case: with the same seed, the same tree, and faster than a copy)."""
    found: list[Path | Params] = [Path(t).resolve() for t in args.source_dir]
    for size in args.size:
        repositories, _, tags = size.partition("x")
        found.append(Params(repositories=int(repositories), tags=int(tags), seed=args.seed))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", default=[], metavar="REPOSxTAGS")
    parser.add_argument(
        "--source-dir",
        action="append",
        default=[],
        type=Path,
        help="a tree made by bench.generate (copied, never modified)",
    )
    parser.add_argument(
        "--keep-share",
        action="append",
        type=float,
        default=[],
        help="share of each repository's tags kept (default: 0.9 and 0.1)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    args = parser.parse_args(argv)
    if not args.size and not args.source_dir:
        parser.error("give at least one --size or --source-dir")
    shares = args.keep_share or [0.9, 0.1]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="retentiond-gc-rate-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    try:
        for tree in sources(args):
            for share in shares:
                cases.append(measure(tree, share, work))
                log("so far:\n" + report(cases))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
