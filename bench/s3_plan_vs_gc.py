"""``retentiond plan`` against the registry's ``garbage-collect --dry-run`` on a tree in an S3
bucket, and ``plan`` on the same tree on a filesystem, side by side in one run.

    python -m bench.s3_plan_vs_gc --repositories 500 --tags 100

(from the repository root, with the development venv's python; as root, or with the Ceph
packages installed: it starts its own S3 server.)

1. Starts a Ceph RADOS Gateway of its own (``scripts/s3/start-rgw.sh`` in the work directory,
   on 127.0.0.1, a random port, an in-memory OSD of ``--rgw-memory-gib``), stopped and purged at
   the end, also on errors (and by the script's watcher if this process is killed).
2. Creates a bucket and generates the tree into it (``bench.generate_s3``: ``--jobs``
   processes of ``--threads`` PUT threads), then the same tree on disk (``bench.generate``;
   ``--fs-tree DIR`` reuses one made with the same options).
3. Measures, one after the other, each under ``/usr/bin/time`` (wall time, peak RSS of the
   largest process), ``plan`` also with its process tree's PSS sampled (its forked readers):
   - ``plan`` on the filesystem tree (after one untimed run: the page cache holds the tree);
   - ``plan`` on the bucket, if this checkout's retentiond reads S3 (tried: a config whose
     ``registry.storage`` is the ``s3`` section; when it is refused, the table says so);
   - ``bench.floor_s3``: the plainest Python reading from the bucket what a plan needs;
   - the registry's ``garbage-collect --dry-run`` on the bucket, per ``--gc-version``: the host
     binaries (2.8.2: Debian's ``/usr/bin/docker-registry``; 3.1.1: the test build), with a
     config.yml whose storage is the ``s3`` driver on the gateway (``regionendpoint``,
     ``forcepathstyle``, ``secure: false``, ``v4auth``), run without any ``AWS_*`` variable
     (``AWS_CA_BUNDLE`` makes the registry panic);
   - the registry 2.8.2's ``garbage-collect --dry-run`` on the filesystem tree (reference).

The policy: keep the last ``--keep`` tags of every repository, delete untagged manifests, no
mass-delete limit, and ``safety.untagged_min_age: 0s`` (on S3 every object is as old as its
upload, see ``bench.generate_s3``: with the default 1 h no untagged manifest would be old enough
there, and the two plans would not do the same work).

Prints a table (seconds, peak RSS, tree PSS, GC / plan, plan on S3 / plan on the filesystem
memory), each GC's summary line, each plan's summary, and the exact commands; ``--json FILE``
writes every measurement. The work directory (configs, outputs, the filesystem tree) is removed
unless ``--workdir`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.generate import SUMMARY_FILE, Params, add_tree_options, generate, pop_params
from bench.generate_s3 import S3Target, generate_s3, registry_env
from bench.run import ensure_bytecode, ensure_time, sample_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START_RGW = REPO / "scripts/s3/start-rgw.sh"
STOP_RGW = REPO / "scripts/s3/stop-rgw.sh"
PYTHON = sys.executable
RETENTIOND = shutil.which("retentiond", path=str(REPO / ".venv/bin")) or "retentiond"
REGISTRY_BINS = {
    "2.8.2": os.environ.get("RETENTIOND_TEST_REGISTRY_BIN", "/usr/bin/docker-registry"),
    "3.1.1": os.environ.get(
        "RETENTIOND_TEST_REGISTRY3_BIN", "/var/cache/retentiond-test/bin/registry-3.1.1"
    ),
}
GC_SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible", re.M)
NOT_AVAILABLE = "retentiond plan on S3: not available in this checkout"


@dataclass
class Measure:
    name: str
    cmd: list[str]
    wall: float | None = None  # seconds; None: not measured (failed or unavailable)
    rss: int | None = None  # bytes, the largest process (/usr/bin/time)
    tree_pss: int | None = None  # bytes, the process tree, sampled (plans only)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after
    note: str = ""  # the GC's summary line, the plan's summary, or why it failed
    ok: bool = False

    @property
    def memory(self) -> int | None:
        """The larger of the peak RSS and the tree's PSS."""
        values = [v for v in (self.rss, self.tree_pss) if v is not None]
        return max(values) if values else None


@dataclass
class Rgw:
    directory: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    memory: int
    log: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_rgw(directory: Path, memory: int) -> Rgw:
    """scripts/s3/start-rgw.sh on a random free port (3 tries), watched by this process."""
    env = os.environ | {
        "RGW_BIND": "127.0.0.1",
        "RGW_MEMORY": str(memory),
        "RGW_OWNER_PID": str(os.getpid()),
    }
    last = ""
    for _ in range(3):
        port = random.randrange(20000, 32000, 11)
        proc = subprocess.run(
            ["bash", str(START_RGW), str(directory), str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode == 0:
            values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
            return Rgw(
                directory,
                values["S3_ENDPOINT"],
                values["AWS_ACCESS_KEY_ID"],
                values["AWS_SECRET_ACCESS_KEY"],
                values.get("AWS_REGION", "us-east-1"),
                memory,
            )
        last = proc.stderr
        if "in use already" not in proc.stderr:
            break
    raise SystemExit(f"start-rgw.sh failed:\n{last[-3000:]}")


def stop_rgw(rgw: Rgw) -> None:
    proc = subprocess.run(
        ["bash", str(STOP_RGW), str(rgw.directory), "--purge"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        log(f"stop-rgw.sh failed ({proc.returncode}): {proc.stderr.strip()}")


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


class MemoryGuard(threading.Thread):
    """Stops the gateway when the machine's available memory falls below ``floor`` (the
    in-memory OSD grows with every object; other processes share the machine): the PUTs or
    reads then fail and the run ends with that message instead of the kernel's OOM killer
    choosing a victim."""

    def __init__(self, rgw: Rgw, floor: int) -> None:
        super().__init__(name="memory-guard", daemon=True)
        self.rgw, self.floor = rgw, floor
        self.tripped = ""
        self.done = threading.Event()
        self.peak: dict[str, int] = {}  # the gateway's daemons' peak RSS, sampled every second

    def run(self) -> None:
        while not self.done.wait(1.0):
            for name, rss in daemon_rss(self.rgw).items():
                self.peak[name] = max(rss, self.peak.get(name, 0))
            available = mem_available()
            if available < self.floor:
                self.tripped = (
                    f"stopped the S3 server: the machine had {mib(available)} MiB available, "
                    f"below --min-available-gib ({mib(self.floor)} MiB); gateway RSS "
                    + ", ".join(f"{k} {mib(v)} MiB" for k, v in daemon_rss(self.rgw).items())
                )
                log(self.tripped)
                stop_rgw(self.rgw)
                return


def daemon_rss(rgw: Rgw) -> dict[str, int]:
    """RSS (bytes) of the gateway's daemons now, by their pid files."""
    found = {}
    for name in ("client.rgw", "osd.0", "mon.a"):
        try:
            pid = (rgw.directory / "run" / f"{name}.pid").read_text().strip()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                found[name] = int(line.split()[1]) * 1024
    return found


def gc_config_fs(root: Path) -> str:
    return (
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
    )


def policy(keep: int) -> str:
    return (
        f"policies:\n  - name: keep-last-{keep}\n    repositories: ['**']\n"
        f"    keep: {{last: {keep}}}\n    untagged: delete\n    allow_mass_delete: true\n"
    )


def retentiond_config(work: Path, name: str, storage: str) -> Path:
    """A config for ``plan`` only (runtime none); ``storage`` is the registry section's
    storage lines."""
    config = work / f"retentiond-{name}.yaml"
    config.write_text(
        f"registry:\n{storage}runtime:\n  kind: none\npolicies: [policies/]\n"
        f"state_dir: {work / ('state-' + name)}\nsafety:\n  untagged_min_age: 0s\n"
        "log:\n  format: json\n  level: warning\n"
    )
    return config


def timed(name: str, cmd: list[str], out: Path, *, env: dict[str, str], sample: bool) -> Measure:
    """Run ``cmd`` under /usr/bin/time, stdout and stderr into ``out`` (+ ``.err``)."""
    measure = Measure(name, cmd)
    report = out.with_suffix(".time")
    before = os.getloadavg()[0]
    log(f"{name}: {' '.join(cmd)}")
    with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", str(report), *cmd],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=REPO,
        )
        peak = sample_tree(proc) if sample else None
        proc.wait()
        wall = time.monotonic() - started
    measure.load = (before, os.getloadavg()[0])
    if proc.returncode != 0:
        error = out.with_suffix(".err").read_text(errors="replace").strip()
        measure.note = f"exit {proc.returncode}: {error[-600:]}"
        log(f"{name}: failed, {measure.note}")
        return measure
    lines = [line for line in report.read_text().splitlines() if line.strip()]
    measure.wall, measure.rss, measure.tree_pss = wall, int(lines[-1]) * 1024, peak
    measure.ok = True
    log(f"{name}: {wall:.2f} s, peak RSS {mib(measure.rss)} MiB")
    return measure


def gc_note(measure: Measure, out: Path) -> None:
    """The GC's summary line into ``measure.note`` (a GC without one did not finish)."""
    if not measure.ok:
        return
    text = out.read_text(errors="replace") + out.with_suffix(".err").read_text(errors="replace")
    found = GC_SUMMARY.search(text)
    if found is None:
        measure.ok, measure.note = False, "no summary line: " + text.strip()[-600:]
    else:
        measure.note = found.group(0) + " for deletion"


def plan_note(measure: Measure, out: Path) -> dict[str, Any]:
    """The plan's summary (counts) into ``measure.note``; returned too."""
    if not measure.ok:
        return {}
    summary: dict[str, Any] = json.loads(out.read_text())["summary"]
    wanted = ("tags", "tags_deleted", "manifests_unlinked", "blobs_reclaimed", "bytes_reclaimed")
    measure.note = ", ".join(f"{k} {summary[k]:,}" for k in wanted if k in summary)
    return summary


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.1f}x"


def fs_tree(args: argparse.Namespace, params: Params, work: Path) -> Path:
    """The filesystem tree: ``--fs-tree`` if made with the same options, else generated."""
    if args.fs_tree is not None:
        summary = json.loads((args.fs_tree / SUMMARY_FILE).read_text())
        if summary["params"] != asdict(params):
            raise SystemExit(f"{args.fs_tree} was made with other options: {summary['params']}")
        return Path(args.fs_tree).resolve()
    root = work / "fs-tree"
    log(f"generating the same tree on disk: {root}")
    summary = generate(root, params, jobs=args.jobs)
    log(f"on disk in {summary['seconds']} s: {summary['files']:,} files")
    return root


def report(
    params: Params,
    upload: dict[str, Any],
    rss: dict[str, int],
    measures: list[Measure],
    plans: dict[str, dict[str, Any]],
) -> str:
    by = {m.name: m for m in measures}
    plan_s3, plan_fs = by.get("plan on S3"), by["plan on the filesystem"]
    lines = [
        f"{params.repositories} x {params.tags} ({upload['tags']:,} tags, "
        f"{upload['manifests']:,} manifests, {upload['blobs']:,} blobs); "
        f"{os.cpu_count()} CPUs",
        f"upload: {upload['objects']:,} objects, {upload['bytes'] / 2**20:,.1f} MiB in "
        f"{upload['seconds']} s ({upload['objects_per_second']:,} objects/s, "
        f"{upload['mib_per_second']} MiB/s; {upload['jobs']} processes x "
        f"{upload['threads']} threads)",
        "gateway RSS after the upload: "
        + ", ".join(f"{name} {mib(value)} MiB" for name, value in rss.items()),
        "",
        "| command | seconds | peak RSS MiB | tree PSS MiB | GC 2.8.2 on S3 / this "
        "| memory / plan on the filesystem | load before, after |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    gc_s3 = by.get("GC 2.8.2 --dry-run on S3")
    for m in measures:
        lines.append(
            f"| {m.name} | {seconds(m.wall)} | {mib(m.rss)} | {mib(m.tree_pss)} "
            f"| {ratio(gc_s3.wall if gc_s3 else None, m.wall)} "
            f"| {ratio(m.memory, plan_fs.memory) if m.name.startswith('plan') else ''} "
            f"| {m.load[0]:.1f}, {m.load[1]:.1f} |"
        )
    lines.append("")
    floor = by.get("floor on S3")
    if floor is not None and gc_s3 is not None:
        lines.append(
            f"GC 2.8.2 on S3 / floor on S3: {ratio(gc_s3.wall, floor.wall)} (the floor reads "
            "what a plan needs and nothing else: the bound a plan on S3 can reach)"
        )
    if plan_s3 is None or not plan_s3.ok:
        lines.append(NOT_AVAILABLE + (f" ({plan_s3.note[:300]})" if plan_s3 else ""))
    else:
        for gc in (m for m in measures if m.name.startswith("GC") and "S3" in m.name):
            lines.append(
                f"{gc.name} / plan on S3: {ratio(gc.wall, plan_s3.wall)} (target: at least 10x)"
            )
        lines.append(
            f"plan on S3 / plan on the filesystem, peak memory: "
            f"{ratio(plan_s3.memory, plan_fs.memory)} (the larger of RSS and tree PSS; "
            f"RSS alone {ratio(plan_s3.rss, plan_fs.rss)}; target: at most 1.5x)"
        )
        same = {k: v for k, v in plans.get("S3", {}).items() if plans["fs"].get(k) != v}
        lines.append(
            "the two plans' summaries agree"
            if not same
            else f"the plans differ (push times on S3 are upload times) in: {sorted(same)}"
        )
    lines += ["", "notes:"]
    lines += [f"- {m.name}: {m.note}" for m in measures if m.note]
    lines += ["", "commands:"]
    lines += [f"- {m.name}: `{' '.join(m.cmd)}`" for m in measures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tree_options(parser)
    parser.set_defaults(min_size=1, max_size=64, repositories=50, tags=100)
    parser.add_argument("--keep", type=int, default=20, help="keep: {last: N} in every repository")
    parser.add_argument(
        "--gc-version",
        action="append",
        choices=sorted(REGISTRY_BINS),
        help="registry versions whose GC runs on the bucket (default: 2.8.2 and 3.1.1)",
    )
    parser.add_argument("--no-fs-gc", action="store_true", help="skip the GC on the filesystem")
    parser.add_argument("--rootdirectory", default="", help="the registry's s3 rootdirectory")
    parser.add_argument("--rgw-memory-gib", type=float, default=16.0)
    parser.add_argument(
        "--min-available-gib",
        type=float,
        default=3.0,
        help="stop the S3 server (and the run) when the machine has less memory available",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=16, help="PUT threads per process")
    parser.add_argument("--floor-threads", type=int, default=32, help="bench.floor_s3's threads")
    parser.add_argument("--fs-tree", type=Path, help="a tree bench.generate made, same options")
    parser.add_argument("--workdir", type=Path, help="kept when given")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    options = vars(args).copy()
    params = pop_params(options)
    versions = args.gc_version or ["2.8.2", "3.1.1"]
    versions = [v for v in versions if Path(REGISTRY_BINS[v]).exists() or v == "2.8.2"]
    ensure_time()
    ensure_bytecode()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="retentiond-s3-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies/keep.yaml").write_text(policy(args.keep))
    rgw_dir = work / "rgw"
    log(f"starting the S3 server in {rgw_dir}")
    rgw = start_rgw(rgw_dir, int(args.rgw_memory_gib * 2**30))
    guard = MemoryGuard(rgw, int(args.min_available_gib * 2**30))
    guard.start()
    try:
        bucket = "bench"
        target = S3Target(
            endpoint=rgw.endpoint,
            bucket=bucket,
            access_key=rgw.access_key,
            secret_key=rgw.secret_key,
            region=rgw.region,
            rootdirectory=args.rootdirectory,
            threads=args.threads,
        )
        target.client().create_bucket(Bucket=bucket)
        log(f"S3 at {rgw.endpoint}; generating {params.repositories}x{params.tags} into {bucket}")
        upload = generate_s3(target, params, jobs=args.jobs, progress=True)
        rss = daemon_rss(rgw)
        log(
            f"uploaded {upload['objects']:,} objects ({upload['bytes']:,} bytes) in "
            f"{upload['seconds']} s: {upload['objects_per_second']} objects/s"
        )
        tree = fs_tree(args, params, work)

        storage_s3 = "  storage:\n    s3:\n" + target.storage_section("      ")
        config_s3 = retentiond_config(work, "s3", storage_s3)
        config_fs = retentiond_config(work, "fs", f"  root: {tree}\n")
        (work / "gc-s3.yml").write_text(target.registry_config())
        (work / "gc-fs.yml").write_text(gc_config_fs(tree))
        env = dict(os.environ)
        plan_fs_cmd = [RETENTIOND, "--config", str(config_fs), "plan", "--json"]
        plan_s3_cmd = [RETENTIOND, "--config", str(config_s3), "plan", "--json"]

        measures: list[Measure] = []
        plans: dict[str, dict[str, Any]] = {}
        log("plan on the filesystem: one untimed run first (page cache)")
        timed("warm-up", plan_fs_cmd, work / "warmup.out", env=env, sample=False)
        m = timed("plan on the filesystem", plan_fs_cmd, work / "plan-fs.out", env=env, sample=True)
        plans["fs"] = plan_note(m, work / "plan-fs.out")
        measures.append(m)
        m = timed("plan on S3", plan_s3_cmd, work / "plan-s3.out", env=env, sample=True)
        plans["S3"] = plan_note(m, work / "plan-s3.out")
        if not m.ok:
            log(NOT_AVAILABLE)
        measures.append(m)
        floor_cmd = [PYTHON, "-m", "bench.floor_s3", "--endpoint", rgw.endpoint]
        floor_cmd += ["--bucket", bucket, "--threads", str(args.floor_threads)]
        if args.rootdirectory:
            floor_cmd += ["--rootdirectory", args.rootdirectory]
        floor_env = env | {
            "AWS_ACCESS_KEY_ID": rgw.access_key,
            "AWS_SECRET_ACCESS_KEY": rgw.secret_key,
        }
        m = timed("floor on S3", floor_cmd, work / "floor-s3.out", env=floor_env, sample=False)
        if m.ok:
            m.note = (work / "floor-s3.out").read_text().strip()
        measures.append(m)
        for version in versions:
            out = work / f"gc-s3-{version}.out"
            cmd = [REGISTRY_BINS[version], "garbage-collect", "--dry-run", str(work / "gc-s3.yml")]
            m = timed(f"GC {version} --dry-run on S3", cmd, out, env=registry_env(), sample=False)
            gc_note(m, out)
            measures.append(m)
        if not args.no_fs_gc:
            out = work / "gc-fs-2.8.2.out"
            cmd = [REGISTRY_BINS["2.8.2"], "garbage-collect", "--dry-run", str(work / "gc-fs.yml")]
            m = timed(
                "GC 2.8.2 --dry-run on the filesystem", cmd, out, env=registry_env(), sample=False
            )
            gc_note(m, out)
            measures.append(m)
        text = report(params, upload, rss, measures, plans)
        text += "\ngateway peak RSS over the run: " + ", ".join(
            f"{name} {mib(value)} MiB" for name, value in guard.peak.items()
        )
        print(text)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "params": asdict(params),
                        "upload": upload,
                        "gateway_rss": rss,
                        "gateway_peak_rss": guard.peak,
                        "measures": [asdict(m) for m in measures],
                        "plans": plans,
                        "report": text,
                    },
                    indent=2,
                )
                + "\n"
            )
    except BaseException:
        if guard.tripped:
            raise SystemExit(guard.tripped) from None
        raise
    finally:
        guard.done.set()
        log("stopping the S3 server")
        stop_rgw(rgw)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
