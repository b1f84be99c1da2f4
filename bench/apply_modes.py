"""Measure one `retentiond apply` per gc_mode on copies of generated trees, served by a real
registry container: each phase's seconds and its ratio to the GC, the seconds the registry
refused writes and answered nothing (as recorded in runs.jsonl), the whole run, the peak memory
of `apply` against `retentiond plan --json` on the same tree, and bytes reclaimed against the
plan.

    python -m bench.apply_modes --repositories 200 --tags 50 [--modes readonly,stop,online]
    python -m bench.apply_modes --size 500x100 --size 1000x250 --modes readonly \\
        --trees-dir bench/trees
    python -m bench.apply_modes --source-dir bench/trees/500x100 --modes readonly

from the repository root, with the development venv's python. Needs Docker and the test
registry image (bash scripts/start-docker.sh).

The trees: each ``--source-dir`` (made by ``bench.generate``), then each ``--size RxT``, taken
from ``--trees-dir/RxT`` when it is there, else generated into the work directory; with
neither, one tree of ``--repositories`` x ``--tags``. A source tree is never modified: every
run works on a copy (``cp -a``), deleted afterwards.

Per tree, before the first mode's ``apply``: ``retentiond plan --json`` on the copy. Both
commands run with their process tree sampled from /proc every ``--sample-every`` seconds: the
peak RSS of its largest process and the peak of the summed PSS of all of them (shared pages
once; the docker CLI processes ``apply`` starts count too). The whole run is from the command's
start to its summary line (the run verified and in the history, read from the log it writes,
kept as ``<workdir>/<tree>-<mode>-apply.log``); the tidying after it (the quarantine and the
dangling ``_layers`` links) follows, and the command's wall time includes it.

Prints, per tree, the plan's size and one line per mode, then a markdown table with a column
per tree and mode, ready for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.generate import SUMMARY_FILE, Params, generate
from bench.run import _descendants, _pss, log, mib, parse_size
from tests.harness.registry import start_registry, stop_registry

REPO = Path(__file__).resolve().parents[1]
RETENTIOND = [sys.executable, "-m", "retentiond"]
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: the phases in the order a run goes through them (others, as runs.jsonl names them, after)
PHASE_ORDER = ("plan", "delete", "gc", "clean", "restart", "verify")


@dataclass
class Sampled:
    """A command's wall time and the peaks of its process tree's memory, in bytes."""

    wall: float
    rss: int  # the largest process
    pss: int  # the sum over the tree
    started_at: float = 0.0  # time.time() when it was started


@dataclass
class Row:
    """One ``apply`` of one mode on one tree, with the ``plan`` of the same tree."""

    tree: str
    mode: str
    record: dict[str, Any]
    apply: Sampled
    plan: Sampled
    #: the apply log's events (JSON lines), for when the run was recorded and the tidying
    events: list[dict[str, Any]] = field(default_factory=list)

    def recorded_after(self) -> float:
        """Seconds from the command's start to the run's summary line (verified, in the
        history); the command's wall time when the log does not say."""
        for event in self.events:
            if event.get("event") == "maintenance" and "timestamp" in event:
                at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
                return at.timestamp() - self.apply.started_at
        return self.apply.wall

    def tidying(self) -> float:
        """Seconds the tidying after the run took (its log line), 0 when none."""
        for event in self.events:
            if event.get("event") == "tidied after the run":
                return float(event.get("quarantine_seconds") or 0) + float(
                    event.get("layer_link_seconds") or 0
                )
        return 0.0


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it has gone): the second field of /proc/PID/statm."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def sampled_run(cmd: list[str], every: float, log_to: Path | None = None) -> Sampled:
    """Run ``cmd`` (output discarded, its log shown on failure and kept in ``log_to`` when
    given), sampling its process tree."""
    # a file, not a pipe: a long log never blocks it
    with open(log_to, "w+b") if log_to else tempfile.TemporaryFile() as err:
        started_at = time.time()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        rss = pss = 0
        while proc.poll() is None:
            pids = _descendants(proc.pid)
            rss = max(rss, max(_rss(pid) for pid in pids))
            pss = max(pss, sum(_pss(pid) for pid in pids))
            time.sleep(every)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return Sampled(wall, rss, pss, started_at)


def source_trees(args: argparse.Namespace, work: Path) -> list[Path]:
    """The trees to copy: given, found in ``--trees-dir``, or generated into ``work``."""
    trees = [t.resolve() for t in args.source_dir]
    sizes = list(args.size)
    if not trees and not sizes:
        sizes = [f"{args.repositories}x{args.tags}"]
    for size in sizes:
        found = args.trees_dir / size if args.trees_dir else None
        if found is not None and (found / SUMMARY_FILE).exists():
            trees.append(found.resolve())
            continue
        tree = work / f"source-{size}"
        if not (tree / SUMMARY_FILE).exists():
            shutil.rmtree(tree, ignore_errors=True)
            log(f"generating {tree}")
            repositories, tags = parse_size(size)
            generate(tree, Params(repositories=repositories, tags=tags), jobs=os.cpu_count() or 1)
        trees.append(tree)
    return trees


def work_dir(given: Path | None, prefix: str, keep: int) -> Path:
    """The work directory (``given``, or a new temporary one), with ``policies/all.yaml``:
    ``keep: {last: keep}`` in every repository."""
    work = Path(given or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies/all.yaml").write_text(
        "policies:\n  - name: all\n    repositories: ['**']\n"
        f"    keep: {{last: {keep}}}\n    allow_mass_delete: true\n"
    )
    return work


def write_config(
    work: Path, name: str, root: Path, url: str, container: str, mode: str, log_level: str
) -> Path:
    """``log_level``: the run's (``debug`` adds the seconds of the frozen read)."""
    state = work / f"state-{name}"
    shutil.rmtree(state, ignore_errors=True)
    config = work / f"{name}.yaml"
    config.write_text(
        json.dumps(
            {
                "registry": {"root": str(root), "url": url},
                "runtime": {"kind": "docker", "container": container, "gc_mode": mode},
                "policies": [str(work / "policies")],
                "state_dir": str(state),
                "log": {"format": "json", "level": log_level},
            }
        )
    )
    return config


def bench_tree(
    source: Path,
    modes: list[str],
    work: Path,
    every: float,
    *,
    in_place: bool = False,
    log_level: str = "info",
) -> list[Row]:
    """``in_place``: run on ``source`` itself, which the run changes (one mode only): no copy
    of a tree that takes longer to copy than to run on."""
    rows: list[Row] = []
    plan: Sampled | None = None
    if in_place and len(modes) > 1:
        raise SystemExit("--in-place runs one mode only")
    for mode in modes:
        name = f"{source.name}-{mode}"
        root = source if in_place else work / f"root-{name}"
        if not in_place:
            shutil.rmtree(root, ignore_errors=True)
            log(f"{name}: copying {source}")
            subprocess.run(["cp", "-a", str(source), str(root)], check=True)
        reg = start_registry(root)
        try:
            config = write_config(work, name, root, reg.url, reg.name, mode, log_level)
            if plan is None:
                log(f"{name}: plan --json")
                plan = sampled_run([*RETENTIOND, "--config", str(config), "plan", "--json"], every)
            log(f"{name}: apply")
            applied = sampled_run(
                [*RETENTIOND, "--config", str(config), "apply", "--yes"],
                every,
                log_to=work / f"{name}-apply.log",
            )
            events = read_events(work / f"{name}-apply.log")
            rows.append(
                Row(source.name, mode, last_run(work / f"state-{name}"), applied, plan, events)
            )
        finally:
            stop_registry(reg)
            if not in_place:
                shutil.rmtree(root, ignore_errors=True)
    return rows


def read_events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a command's log (others passed)."""
    events: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_run(state: Path) -> dict[str, Any]:
    """The record ``apply`` appended to ``state``/runs.jsonl."""
    runs = state / "runs.jsonl"
    if not runs.exists():
        raise SystemExit(
            f"apply recorded no run in {runs}: did the plan delete nothing? "
            "Keep fewer tags (--keep) than each repository has."
        )
    record: dict[str, Any] = json.loads(runs.read_text().splitlines()[-1])
    return record


def modes_report(source: Path, rows: list[Row]) -> str:
    """The plan's size and a line per mode (the table this script has always printed)."""
    plan = rows[0].record["plan"]
    summary = json.loads((source / SUMMARY_FILE).read_text())
    lines = [
        f"tree {source.name}: {summary['repositories']} repositories, {summary['tags']} tags; "
        f"plan deletes {plan['tags_deleted']} tags, {plan['manifests_unlinked']} manifests, "
        f"{plan['blobs_reclaimed']} blobs, {plan['bytes_reclaimed']} bytes",
        "| gc_mode | total (wall) | gc | plan | delete | clean | restart | verify "
        "| writes refused | unavailable | bytes reclaimed = planned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r, d = row.record, row.record["durations"]
        lines.append(
            f"| {row.mode} | {row.apply.wall:.1f} s | {d.get('gc', 0):.2f} s "
            f"| {d.get('plan', 0):.2f} s | {d.get('delete', 0):.2f} s "
            f"| {d.get('clean', 0):.2f} s | {d.get('restart', 0):.2f} s "
            f"| {d.get('verify', 0):.2f} s | {r['read_only_seconds']:.2f} s "
            f"| {r['unavailable_seconds']:.2f} s "
            f"| {r['bytes_reclaimed'] == r['plan']['bytes_reclaimed']} |"
        )
    return "\n".join(lines)


def against_gc(seconds: float, gc: float) -> str:
    return f"{seconds:.1f} s ({seconds / gc:.2f}×)" if gc else f"{seconds:.1f} s"


def table(rows: list[Row]) -> str:
    """Issue 14's table: a row per phase and measure, a column per tree and mode."""
    phases: list[str] = []
    for row in rows:
        phases += [p for p in row.record["durations"] if p not in phases]
    phases.sort(key=lambda p: PHASE_ORDER.index(p) if p in PHASE_ORDER else len(PHASE_ORDER))
    head = "| | " + " | ".join(f"{r.tree} {r.mode}" for r in rows) + " |"
    lines = [head, "|---|" + "--:|" * len(rows)]

    def line(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    gcs = [float(r.record["durations"].get("gc", 0.0)) for r in rows]
    line("tags deleted", [f"{r.record['plan']['tags_deleted']:,}" for r in rows])
    line("blobs reclaimed", [f"{r.record['plan']['blobs_reclaimed']:,}" for r in rows])
    for phase in phases:
        cells = [
            against_gc(float(r.record["durations"].get(phase, 0.0)), gc)
            for r, gc in zip(rows, gcs, strict=True)
        ]
        line(f"**{phase}**" if phase == "gc" else phase, cells)
    refused = [float(r.record["read_only_seconds"]) for r in rows]
    line("writes refused", [against_gc(s, gc) for s, gc in zip(refused, gcs, strict=True)])
    unavailable = [float(r.record["unavailable_seconds"]) for r in rows]
    line("unavailable", [against_gc(s, gc) for s, gc in zip(unavailable, gcs, strict=True)])
    recorded = [r.recorded_after() for r in rows]
    line(
        "**whole run** (until verified and recorded)",
        [against_gc(s, gc) for s, gc in zip(recorded, gcs, strict=True)],
    )
    line(
        "tidying after the run",
        [against_gc(r.tidying(), gc) for r, gc in zip(rows, gcs, strict=True)],
    )
    line(
        "the command (with the tidying)",
        [against_gc(r.apply.wall, gc) for r, gc in zip(rows, gcs, strict=True)],
    )
    line("apply peak RSS", [mib(r.apply.rss) for r in rows])
    line("apply peak tree PSS", [mib(r.apply.pss) for r in rows])
    line("plan peak RSS", [mib(r.plan.rss) for r in rows])
    line("plan peak tree PSS", [mib(r.plan.pss) for r in rows])
    line(
        "apply / plan (RSS; tree PSS)",
        [f"{r.apply.rss / r.plan.rss:.1f}×; {r.apply.pss / r.plan.pss:.1f}×" for r in rows],
    )
    line(
        "bytes reclaimed = planned",
        [str(r.record["bytes_reclaimed"] == r.record["plan"]["bytes_reclaimed"]) for r in rows],
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=200)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument(
        "--size", action="append", default=[], metavar="REPOSxTAGS", help="repeatable"
    )
    parser.add_argument(
        "--source-dir",
        action="append",
        default=[],
        type=Path,
        help="a tree made by bench.generate, copied before every run (repeatable)",
    )
    parser.add_argument(
        "--trees-dir", type=Path, default=None, help="where --size trees may already be"
    )
    parser.add_argument("--keep", type=int, default=20, help="keep: {last: N} for every repo")
    parser.add_argument("--modes", default="readonly,stop,online")
    parser.add_argument("--sample-every", type=float, default=0.2, metavar="SECONDS")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run on the --source-dir tree itself (changed by the run), not on a copy",
    )
    parser.add_argument("--log-level", default="info", help="the runs' (their logs are kept)")
    args = parser.parse_args(argv)
    work = work_dir(args.workdir, "retentiond-apply-bench-", args.keep)
    rows: list[Row] = []
    try:
        for source in source_trees(args, work):
            tree_rows = bench_tree(
                source,
                args.modes.split(","),
                work,
                args.sample_every,
                in_place=args.in_place,
                log_level=args.log_level,
            )
            print(modes_report(source, tree_rows), end="\n\n", flush=True)
            rows += tree_rows
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs; keep: {{last: {args.keep}}} in every repository.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
