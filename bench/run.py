"""Benchmark ``retentiond plan`` against the floor and the registry's own GC, on generated trees.

    python -m bench.run --size 500x100 --size 1000x250        # generates bench/trees/<size>
    python -m bench.run /path/to/tree [...]                   # trees made by bench.generate

(from the repository root, with the development venv's python: ``plan`` runs its
``retentiond``, the quarantine timing imports its ``retentiond`` package).

For each tree, ``--runs`` runs (default 3; median reported) of each of:

- ``floor``: ``bench/floor.py``, the plainest Python reading exactly what a plan needs;
- ``plan``: ``retentiond plan --json`` with a generated config and policy (keep the last 20 tags
  of every repository, delete untagged manifests, no mass-delete limit);
- ``gc``: ``docker-registry garbage-collect --dry-run`` on the same tree.

retentiond runs from compiled modules, as installed (``compileall`` first). Each command runs
under ``/usr/bin/time`` (Debian package ``time``, installed if missing):
wall time and peak RSS of its largest process. ``plan`` also runs once more with its whole
process tree sampled (``--tree-memory``): the peak of the sum of the proportional set sizes
(PSS) of the parent and its worker processes, so that shared pages count once.

By default each command's runs come in a row, after one untimed run of it (``--order
grouped``): each is measured with the cache holding what it reads itself, as far as that fits.
``--order interleaved`` runs one warm-up of each, then rounds of floor, plan, GC; on a tree
larger than the page cache each command then pays for what the one before it read (at 1M tags
the GC between two plans doubles the plan's time). ``--no-warmup`` skips the untimed runs;
``--cold`` drops the page cache before every run (root only), which makes every command wait
on the disk.

Then (``--no-sizes-check`` skips it) the inventory is read twice more in-process, as ``plan``
reads it (layer sizes from the manifests) and with every blob's ``data`` stat'ed (what ``apply``
uses): the blobs, sizes and reclaimable set must be the same.

Then the removal phase of ``apply``, ``--apply-runs`` times, each on two fresh copies of
``repositories/`` (``cp -a``; blobs are shared through a symbolic link, nothing writes them):
retentiond's quarantine renames (``retentiond.storage.removal.move_out``, timed around the
call, without the interpreter's start) of the plan's removals, and ``rm -rf`` of the same
paths (``xargs -0 rm -rf``, the whole command). Finally the real GC dry-run
runs on the first copy, after the removals: the blobs it calls eligible must be exactly the
plan's reclaimable set, and the script says whether they are.

Prints markdown tables (and ``--json FILE`` writes every measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.generate import SUMMARY_FILE, Params, generate
from retentiond.core.plan import make_plan
from retentiond.policy.loader import validate_policies_text
from retentiond.policy.model import Safety
from retentiond.storage.reader import read_inventory
from retentiond.storage.removal_list import removals_for

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

REGISTRY = os.environ.get("RETENTIOND_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")
RETENTIOND = shutil.which("retentiond", path=str(REPO / ".venv/bin")) or "retentiond"
PYTHON = sys.executable
POLICY = """\
policies:
  - name: keep-last-20
    repositories: ["**"]
    keep: {last: 20}
    untagged: delete
    allow_mass_delete: true
"""


@dataclass
class Measure:
    wall: float  # seconds
    rss: int  # bytes, the largest process (/usr/bin/time)
    tree_pss: int | None = None  # bytes, the whole process tree (sampled)


@dataclass
class TreeResult:
    root: str
    summary: dict[str, Any]
    runs: dict[str, list[Measure]] = field(default_factory=dict)
    apply: dict[str, list[Measure]] = field(default_factory=dict)
    removals: int = 0
    check: str = ""
    sizes_check: str = ""

    def median(self, name: str, what: str = "wall") -> float:
        measures = self.runs.get(name) or self.apply.get(name) or []
        values: list[float] = [getattr(m, what) for m in measures]
        return statistics.median(values)


def ensure_time() -> str:
    if not Path("/usr/bin/time").exists():
        print("installing GNU time (Debian package 'time')", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "time"], check=True)
    return "/usr/bin/time"


def ensure_bytecode() -> None:
    """Compile retentiond's modules, as ``pip install .`` does: with PYTHONDONTWRITEBYTECODE
    set (as in some shells and CI images) an editable install would compile every module from
    source on every run, some 30 ms a ``plan`` pays that an installed one does not."""
    package = Path(__file__).resolve().parent.parent / "retentiond"
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(package)], check=True)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(
    cmd: list[str], *, stdin: Any = None, sample: bool = False, own_clock: bool = False
) -> Measure:
    """Run ``cmd`` under /usr/bin/time; wall from our clock (or, with ``own_clock``, the
    seconds the command prints last), peak RSS from time(1)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.monotonic()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *cmd],
            stdin=stdin,
            stdout=subprocess.PIPE if own_clock else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        peak = sample_tree(proc) if sample else None
        out, err = proc.communicate()
        wall = time.monotonic() - started
        if own_clock:
            wall = float(out.split()[-1])
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        lines = [line for line in Path(report.name).read_text().splitlines() if line.strip()]
        return Measure(wall, int(lines[-1]) * 1024, peak)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_tree(proc: subprocess.Popen[bytes], every: float = 0.05) -> int:
    """Peak of the summed PSS of ``proc``'s process tree (time(1) and its command)."""
    peak = 0
    while proc.poll() is None:
        # /usr/bin/time itself is tiny; its command and the command's workers are the tree
        peak = max(peak, sum(_pss(pid) for pid in _descendants(proc.pid)[1:]))
        time.sleep(every)
    return peak


def write_config(tree: Path, workdir: Path) -> tuple[Path, Path]:
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    (workdir / "policies/keep-last-20.yaml").write_text(POLICY)
    config = workdir / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            registry:
              root: {tree}
            runtime:
              kind: none
            policies: [policies/]
            state_dir: {workdir / "state"}
            log:
              format: json
              level: warning
            """
        )
    )
    gc = workdir / "gc.yml"
    gc.write_text(gc_config(tree))
    return config, gc


def gc_config(root: Path) -> str:
    return (
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
    )


def commands(tree: Path, config: Path, gc: Path) -> dict[str, list[str]]:
    return {
        "floor": [PYTHON, str(BENCH / "floor.py"), str(tree)],
        "plan": [RETENTIOND, "--config", str(config), "plan", "--json"],
        "gc": [REGISTRY, "garbage-collect", "--dry-run", str(gc)],
    }


def gc_eligible(gc: Path) -> tuple[set[str], str]:
    """The digests the GC dry-run calls eligible, and its summary line (output streamed)."""
    proc = subprocess.Popen(
        [REGISTRY, "garbage-collect", "--dry-run", str(gc)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    eligible: set[str] = set()
    summary = ""
    for line in proc.stdout:
        if line.startswith("blob eligible for deletion: "):
            eligible.add(line.split(": ", 1)[1].strip())
        elif "eligible for deletion" in line and "blobs marked" in line:
            summary = line.strip()
    if proc.wait() != 0:
        raise SystemExit(f"garbage-collect --dry-run failed on {gc}")
    return eligible, summary


def copy_repositories(tree: Path, dest: Path) -> Path:
    """``dest`` as a registry root: a copy of ``repositories/``, the blobs linked."""
    v2 = dest / "docker/registry/v2"
    v2.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(tree / "docker/registry/v2/repositories"), str(v2)], check=True)
    os.symlink(tree / "docker/registry/v2/blobs", v2 / "blobs")
    return dest


def bench_apply(result: TreeResult, tree: Path, work: Path, runs: int) -> None:
    policies = list(validate_policies_text(POLICY, "keep-last-20.yaml").policies)
    inventory = read_inventory(tree)
    plan = make_plan(
        inventory, policies, Safety(untagged_min_age=timedelta(hours=1)), datetime.now(UTC)
    )
    nested = [r.name for r in inventory.repositories if r.has_nested]
    removals = list(removals_for(plan, nested))
    result.removals = len(removals)
    reclaimable = set(plan.reclaimable)
    del inventory
    mover = work / "move_out.py"
    mover.write_text(
        textwrap.dedent(
            """\
            import json, sys, time
            from pathlib import Path
            from retentiond.storage.removal import move_out
            from retentiond.storage.removal_list import Removal
            removals = [Removal.from_json(r) for r in json.load(open(sys.argv[2]))]
            started = time.monotonic()
            move_out(Path(sys.argv[1]), "20000101T000000Z-000000", removals, lambda r: None)
            print(time.monotonic() - started)
            """
        )
    )
    listing = work / "removals.json"
    listing.write_text(json.dumps([r.to_json() for r in removals]))
    paths = work / "paths.bin"
    result.apply = {"move_out": [], "rm -rf": []}
    for n in range(runs):
        moved = copy_repositories(tree, work / f"moved-{n}")
        removed = copy_repositories(tree, work / f"removed-{n}")
        v2 = removed / "docker/registry/v2"
        paths.write_bytes(b"".join(str(v2 / r.live).encode() + b"\0" for r in removals))
        os.sync()
        result.apply["move_out"].append(
            timed([PYTHON, str(mover), str(moved), str(listing)], own_clock=True)
        )
        with paths.open("rb") as names:
            result.apply["rm -rf"].append(timed(["xargs", "-0", "rm", "-rf", "--"], stdin=names))
        shutil.rmtree(removed)
        if n == 0:
            gc = work / "gc-moved.yml"
            gc.write_text(gc_config(moved))
            eligible, summary = gc_eligible(gc)
            same = eligible == reclaimable
            result.check = (
                f"{'MATCH' if same else 'MISMATCH'}: the plan's reclaimable set "
                f"({len(reclaimable)} blobs) {'equals' if same else 'differs from'} what the "
                f"registry's GC dry-run calls eligible after the plan's removals "
                f"({len(eligible)} blobs; {summary})"
            )
            if not same:
                result.check += (
                    f"; only in the plan: {sorted(reclaimable - eligible)[:5]}, "
                    f"only in the GC: {sorted(eligible - reclaimable)[:5]}"
                )
        shutil.rmtree(moved)


def check_sizes(tree: Path) -> str:
    """The plan reads layer sizes from manifests; ``stat_blobs`` (what apply uses) reads every
    blob's data: both must give the same blobs, sizes and reclaimable set."""
    policies = list(validate_policies_text(POLICY, "keep-last-20.yaml").policies)
    found = []
    for stat_blobs in (False, True):
        inventory = read_inventory(tree, stat_blobs=stat_blobs)
        plan = make_plan(
            inventory, policies, Safety(untagged_min_age=timedelta(hours=1)), datetime.now(UTC)
        )
        found.append((dict(inventory.blobs), dict(plan.reclaimable)))
        del inventory, plan
    (blobs, reclaimable), (stat_blobs_found, stat_reclaimable) = found
    same = blobs == stat_blobs_found and reclaimable == stat_reclaimable
    return (
        f"sizes {'MATCH' if same else 'MISMATCH'}: {len(blobs):,} blobs "
        f"({sum(blobs.values()):,} bytes) and {len(reclaimable):,} reclaimable "
        f"({sum(reclaimable.values()):,} bytes) as the plan reads them; with every data stat'ed: "
        f"{len(stat_blobs_found):,} ({sum(stat_blobs_found.values()):,} bytes) and "
        f"{len(stat_reclaimable):,} ({sum(stat_reclaimable.values()):,} bytes)"
    )


def bench_tree(tree: Path, args: argparse.Namespace) -> TreeResult:
    summary = json.loads((tree / SUMMARY_FILE).read_text())
    result = TreeResult(str(tree), summary)
    with tempfile.TemporaryDirectory(prefix="retentiond-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        config, gc = write_config(tree, work)
        cmds = commands(tree, config, gc)
        result.runs = {name: [] for name in cmds}
        warm_up = args.warmup and not args.cold
        if args.order == "grouped":  # each command's runs in a row, after its own warm-up
            first = -1 if warm_up else 0  # -1: the untimed warm-up
            schedule = [(name, n) for name in cmds for n in range(first, args.runs)]
        else:  # one warm-up of each, then rounds of floor, plan, GC
            schedule = [(name, -1) for name in cmds if warm_up]
            schedule += [(name, n) for n in range(args.runs) for name in cmds]
        for name, n in schedule:
            if args.cold:
                drop_caches()
            if n < 0:
                log(f"{tree.name}: warm-up {name}")
                timed(cmds[name])
            else:
                log(f"{tree.name}: run {n + 1}/{args.runs} {name}")
                result.runs[name].append(timed(cmds[name]))
        if args.tree_memory and args.runs:
            log(f"{tree.name}: plan, process tree memory")
            if args.cold:
                drop_caches()
            sampled = timed(cmds["plan"], sample=True)
            result.runs["plan"][0].tree_pss = sampled.tree_pss
        if args.sizes_check:
            log(f"{tree.name}: plan's sizes against every blob's data stat'ed")
            result.sizes_check = check_sizes(tree)
        if args.apply_runs:
            log(f"{tree.name}: apply removal phase")
            bench_apply(result, tree, work, args.apply_runs)
    return result


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(results: list[TreeResult], args: argparse.Namespace) -> str:
    mode = (
        "cold page cache (dropped before every run)"
        if args.cold
        else "page cache warmed by a first untimed run"
        if args.warmup
        else "no warm-up run"
    )
    order = (
        "each command's runs in a row"
        if args.order == "grouped"
        else "in rounds of floor, plan, GC"
    )
    lines = [
        f"Median of {args.runs} runs, {mode}, {order}; {os.cpu_count()} CPUs.",
        "",
        "| tree | repositories | tags | manifests | blobs | files | directories |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        s = r.summary
        lines.append(
            f"| {Path(r.root).name} | {s['repositories']:,} | {s['tags']:,} | "
            f"{s['manifests']:,} | {s['blobs']:,} | {s['files']:,} | {s['directories']:,} |"
        )
    lines += [
        "",
        "| tree | floor | plan | GC dry-run | plan / floor | GC / plan | "
        "floor RSS | plan RSS | plan tree PSS | plan bytes/tag | GC RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.runs.get("plan"):  # --runs 0: the apply phase only
            continue
        floor, plan, gc = r.median("floor"), r.median("plan"), r.median("gc")
        plan_rss = r.median("plan", "rss")
        pss = r.runs["plan"][0].tree_pss
        peak = max(plan_rss, pss or 0)
        lines.append(
            f"| {Path(r.root).name} | {floor:.2f} s | {plan:.2f} s | {gc:.2f} s | "
            f"{plan / floor:.2f}x | {gc / plan:.1f}x | {mib(r.median('floor', 'rss'))} | "
            f"{mib(plan_rss)} | {mib(pss) if pss else '-'} | "
            f"{peak / r.summary['tags']:,.0f} | {mib(r.median('gc', 'rss'))} |"
        )
    if any(r.apply for r in results):
        lines += [
            "",
            "| tree | removals | move_out (quarantine renames) | rm -rf of the same paths | "
            "rm -rf / move_out |",
            "|---|--:|--:|--:|--:|",
        ]
        for r in results:
            if r.apply:
                moved, removed = r.median("move_out"), r.median("rm -rf")
                lines.append(
                    f"| {Path(r.root).name} | {r.removals:,} | {moved:.2f} s | "
                    f"{removed:.2f} s | {removed / moved:.1f}x |"
                )
        lines.append("")
        lines += [f"- {Path(r.root).name}: {r.check}" for r in results if r.check]
    if any(r.sizes_check for r in results):
        lines.append("")
        lines += [f"- {Path(r.root).name}: {r.sizes_check}" for r in results if r.sizes_check]
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    repositories, _, tags = text.partition("x")
    return int(repositories), int(tags)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, help="trees made by bench.generate")
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="REPOSxTAGS",
        help="generate (if missing) and measure bench/trees/REPOSxTAGS",
    )
    parser.add_argument("--trees-dir", type=Path, default=BENCH / "trees")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before runs")
    parser.add_argument(
        "--order",
        choices=("grouped", "interleaved"),
        default="grouped",
        help="grouped: each command's warm-up and runs in a row (the cache holds "
        "what that command reads, as far as it fits); interleaved: rounds of "
        "floor, plan, GC (each command runs in what the one before left)",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="no untimed first run (for trees larger than the page cache)",
    )
    parser.add_argument("--apply-runs", type=int, default=1, help="0: skip the apply phase")
    parser.add_argument("--no-tree-memory", dest="tree_memory", action="store_false")
    parser.add_argument(
        "--no-sizes-check",
        dest="sizes_check",
        action="store_false",
        help="skip comparing the plan's sizes with every blob's data stat'ed",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch space for configs and copies (default: next to each tree)",
    )
    parser.add_argument(
        "--delete", action="store_true", help="delete the generated trees afterwards"
    )
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    ensure_time()
    ensure_bytecode()
    trees = list(args.trees)
    generated = []
    for size in args.size:
        repositories, tags = parse_size(size)
        tree = args.trees_dir / size
        if not (tree / SUMMARY_FILE).exists():
            shutil.rmtree(tree, ignore_errors=True)
            log(f"generating {tree}")
            summary = generate(
                tree,
                Params(repositories=repositories, tags=tags, seed=args.seed),
                jobs=os.cpu_count() or 1,
                progress=sys.stderr.isatty(),
            )
            log(f"generated {tree} in {summary['seconds']} s")
            generated.append(tree)
        trees.append(tree)
    results = []
    for tree in trees:
        if args.work is None:
            args.work = tree.parent
        results.append(bench_tree(tree.resolve(), args))
        log("so far:\n" + report(results, args))  # a long run's figures survive its interruption
    text = report(results, args)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps([r.__dict__ for r in results], default=lambda o: o.__dict__, indent=2)
        )
    if args.delete:
        for tree in generated:
            shutil.rmtree(tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
