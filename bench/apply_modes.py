"""Measure one `retentiond apply` per gc_mode on copies of a generated tree, served by a real
registry container: GC and total run time, seconds the registry refused writes and answered
nothing (as recorded in runs.jsonl), and bytes reclaimed against the plan.

    python -m bench.apply_modes --repositories 200 --tags 50 [--modes readonly,stop,online]

from the repository root, with the development venv's python. Needs Docker and the test
registry image (bash scripts/start-docker.sh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.registry import start_registry, stop_registry

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repositories", type=int, default=200)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--keep", type=int, default=20, help="keep: {last: N} for every repo")
    parser.add_argument("--modes", default="readonly,stop,online")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="retentiond-apply-bench-"))
    source = work / "source"
    if not source.exists():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench/generate.py"),
                str(source),
                "--repositories",
                str(args.repositories),
                "--tags",
                str(args.tags),
            ],
            check=True,
        )
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies/all.yaml").write_text(
        "policies:\n  - name: all\n    repositories: ['**']\n"
        f"    keep: {{last: {args.keep}}}\n    allow_mass_delete: true\n"
    )
    rows = []
    for mode in args.modes.split(","):
        root = work / f"root-{mode}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root, symlinks=True)
        reg = start_registry(root)
        try:
            state = work / f"state-{mode}"
            shutil.rmtree(state, ignore_errors=True)
            config = work / f"{mode}.yaml"
            config.write_text(
                json.dumps(
                    {
                        "registry": {"root": str(root), "url": reg.url},
                        "runtime": {"kind": "docker", "container": reg.name, "gc_mode": mode},
                        "policies": [str(work / "policies")],
                        "state_dir": str(state),
                        "log": {"format": "json"},
                    }
                )
            )
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "retentiond", "--config", str(config), "apply", "--yes"],
                check=True,
                cwd=REPO,
                capture_output=True,
            )
            wall = time.monotonic() - started
            record = json.loads((state / "runs.jsonl").read_text().splitlines()[-1])
            rows.append((mode, record, wall))
        finally:
            stop_registry(reg)
            shutil.rmtree(root, ignore_errors=True)
    plan = rows[0][1]["plan"]
    print(
        f"tree: {args.repositories} repositories x {args.tags} tags; plan deletes "
        f"{plan['tags_deleted']} tags, {plan['manifests_unlinked']} manifests, "
        f"{plan['blobs_reclaimed']} blobs, {plan['bytes_reclaimed']} bytes"
    )
    print(
        "| gc_mode | total (wall) | gc | plan | delete | clean | restart | verify "
        "| writes refused | unavailable | bytes reclaimed = planned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, r, wall in rows:
        d = r["durations"]
        print(
            f"| {mode} | {wall:.1f} s | {d.get('gc', 0):.2f} s | {d.get('plan', 0):.2f} s "
            f"| {d.get('delete', 0):.2f} s | {d.get('clean', 0):.2f} s "
            f"| {d.get('restart', 0):.2f} s | {d.get('verify', 0):.2f} s "
            f"| {r['read_only_seconds']:.2f} s | {r['unavailable_seconds']:.2f} s "
            f"| {r['bytes_reclaimed'] == r['plan']['bytes_reclaimed']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
