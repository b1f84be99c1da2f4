"""Measure one maintenance run as the service makes it: `retentiond serve` started inside a
window, on a copy of a generated tree served by a real registry container.

    python -m bench.serve_window --source-dir /var/tmp/bench/500x100 [--keep 20]
        [--window-length 30m] [--in-place] [--workdir W]

from the repository root, with the development venv's python (Docker and the test registry
image: bash scripts/start-docker.sh). ``apply`` (``bench.apply_modes``) is one process that
forks its readers; the daemon runs its jobs in a thread beside its HTTP server, so its own
reads are in-process, and it decides whether a window is long enough for the run. This
measures what that costs.

The daemon starts inside the window: its first plan job runs (a read of the tree in its own
process, as every ``plan_every``), then the maintenance job. It is sampled from /proc every
``--sample-every`` seconds until the run is recorded and tidied, then stopped (SIGTERM).
Prints the daemon's peak RSS during the plan job and during the maintenance job (its own
process: the preview's child and the readers it forks are not in it), the largest process of
its tree and the tree's summed PSS, the run's phases from runs.jsonl with their ratios to the
GC, and the maintenance job's wall time (from the plan job's end to the run's summary line).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.apply_modes import (
    PHASE_ORDER,
    REPO,
    RETENTIOND,
    _rss,
    against_gc,
    read_events,
    work_dir,
)
from bench.run import _descendants, _pss, log, mib
from tests.harness.registry import start_registry, stop_registry


def write_config(work: Path, root: Path, url: str, container: str, length: str) -> Path:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    config = work / "serve.yaml"
    config.write_text(
        json.dumps(
            {
                "registry": {"root": str(root), "url": url},
                "runtime": {"kind": "docker", "container": container, "gc_mode": "readonly"},
                "policies": [str(work / "policies")],
                "state_dir": str(state),
                "schedule": {"window": "* * * * *", "window_length": length},
                "metrics": {"listen": f"127.0.0.1:{_free_port()}"},
                "log": {"format": "json"},
            }
        )
    )
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def serve_once(config: Path, log_to: Path, every: float, timeout: float) -> dict[str, Any]:
    """Run ``serve`` until its first run is recorded and tidied; the peaks of its memory."""
    peaks = {"plan_rss": 0, "run_rss": 0, "tree_rss": 0, "tree_pss": 0}
    with open(log_to, "w+b") as err:
        proc = subprocess.Popen(
            [*RETENTIOND, "--config", str(config), "serve"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen = [e.get("event") for e in read_events(log_to)]
                phase = "run_rss" if "plan" in seen else "plan_rss"
                peaks[phase] = max(peaks[phase], _rss(proc.pid))
                pids = _descendants(proc.pid)
                peaks["tree_rss"] = max(peaks["tree_rss"], max(_rss(p) for p in pids))
                peaks["tree_pss"] = max(peaks["tree_pss"], sum(_pss(p) for p in pids))
                if "tidied after the run" in seen or "maintenance failed" in seen:
                    break
                time.sleep(every)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
    events = read_events(log_to)
    done: dict[str, dict[str, Any]] = {str(e.get("event")): e for e in events}
    if "maintenance" not in done:
        raise SystemExit(f"no run recorded; see {log_to}")
    plan_end, run_end = _timestamp(done["plan"]), _timestamp(done["maintenance"])
    return {**peaks, "job_seconds": run_end - plan_end, "plan_seconds": done["plan"]["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, required=True, help="made by bench.generate")
    parser.add_argument("--keep", type=int, default=20, help="keep: {last: N} for every repo")
    parser.add_argument("--window-length", default="30m")
    parser.add_argument("--sample-every", type=float, default=0.2, metavar="SECONDS")
    parser.add_argument("--timeout", type=float, default=7200.0, metavar="SECONDS")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument("--in-place", action="store_true", help="run on --source-dir itself")
    args = parser.parse_args(argv)
    work = work_dir(args.workdir, "retentiond-serve-bench-", args.keep)
    source = args.source_dir.resolve()
    root = source if args.in_place else work / "root"
    try:
        if not args.in_place:
            shutil.rmtree(root, ignore_errors=True)
            log(f"copying {source}")
            subprocess.run(["cp", "-a", str(source), str(root)], check=True)
        reg = start_registry(root)
        try:
            config = write_config(work, root, reg.url, reg.name, args.window_length)
            log("serve")
            got = serve_once(config, work / "serve.log", args.sample_every, args.timeout)
        finally:
            stop_registry(reg)
    finally:
        if not args.in_place:
            shutil.rmtree(root, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    record = json.loads((work / "state/runs.jsonl").read_text().splitlines()[-1])
    durations, gc = record["durations"], record["durations"].get("gc", 0.0)
    print(
        f"tree {source.name}; keep: {{last: {args.keep}}}; plan deletes "
        f"{record['plan']['tags_deleted']} tags, {record['plan']['blobs_reclaimed']} blobs"
    )
    print("| | serve |\n|---|--:|")
    print(f"| plan job (the daemon's own read) | {got['plan_seconds']:.1f} s |")
    for phase in PHASE_ORDER:
        print(f"| {phase} | {against_gc(durations.get(phase, 0.0), gc)} |")
    print(f"| writes refused | {against_gc(record['read_only_seconds'], gc)} |")
    print(f"| maintenance job (until recorded) | {against_gc(got['job_seconds'], gc)} |")
    print(
        f"| daemon RSS, plan job / maintenance job | {mib(got['plan_rss'])} / "
        f"{mib(got['run_rss'])} |"
    )
    print(f"| largest process / tree PSS | {mib(got['tree_rss'])} / {mib(got['tree_pss'])} |")
    same = record["bytes_reclaimed"] == record["plan"]["bytes_reclaimed"]
    print(f"| bytes reclaimed = planned | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
