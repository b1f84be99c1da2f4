"""Time a read of a tree (`retentiond.storage.reader.read_inventory`) per count of reader
processes, from a cold page cache or a warm one, with the seconds at which each phase started.

    .venv/bin/python -m bench.cold_read TREE [--workers default,4,16] [--cold] [--repeat N]

from the repository root. ``default`` is the count the reader picks itself (at least
``DISK_READERS`` for the phases that wait on the disk); a number is used for every phase.
``--cold`` writes back dirty pages and drops the page, dentry and inode caches before each read
(``/proc/sys/vm/drop_caches``: root only); without it each read follows the previous one. The
tree is only read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from retentiond.storage.reader import read_inventory


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("3\n")
    except OSError as exc:
        sys.exit(f"--cold needs root (writing /proc/sys/vm/drop_caches: {exc.strerror})")


def timed_read(tree: str, workers: int | None) -> tuple[float, dict[str, float], int]:
    """Seconds of the read, the second each phase reported first, and the blobs read."""
    started = time.monotonic()
    phases: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        phases.setdefault(phase, round(time.monotonic() - started, 2))

    inventory = read_inventory(tree, workers=workers, progress=progress)
    return time.monotonic() - started, phases, len(inventory.blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", help="a registry root (holds docker/registry/v2)")
    parser.add_argument("--workers", default="default,4,16", help="comma-separated")
    parser.add_argument("--cold", action="store_true", help="drop the caches before each read")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    counts = [None if w == "default" else int(w) for w in args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs; {'cold' if args.cold else 'warm'} reads of {args.tree}\n")
    print("| workers | seconds | phases started at (s) | blobs |")
    print("|---|--:|---|--:|")
    for _ in range(args.repeat):
        for count in counts:
            if args.cold:
                drop_caches()
            seconds, phases, blobs = timed_read(args.tree, count)
            marks = ", ".join(f"{name} {at}" for name, at in phases.items())
            name = "default" if count is None else str(count)
            print(f"| {name} | {seconds:.2f} | {marks} | {blobs:,} |", flush=True)


if __name__ == "__main__":
    main()
