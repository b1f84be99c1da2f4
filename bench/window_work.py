"""Time retentiond's own work inside the read-only window, without a registry: the read of the
frozen tree (after the preview's read, whose parsed manifests it takes when the code can),
the plan, the run's lists written to ``state_dir`` (removals, deleted, kept) and
the moves into the quarantine, each step's wall and CPU seconds (this process's; the read's
forked workers are not counted in its CPU).

    python -m bench.window_work --source-dir /var/tmp/bench/500x100 --keep 20 [--repeat 2]

from the repository root, with the development venv's python. Each repetition works on a copy
of the source tree (``cp -a`` into a temporary directory beside it, deleted afterwards): the
moves change it. With ``--compare DIR`` (another checkout of retentiond, e.g. a
``git worktree`` of an older commit), the repetitions alternate between that code and this
one, each in a process of its own, so that both see the same machine.

Prints one JSON line per repetition: the code's directory and each step's seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "20261203T000000Z-1a2b3c"
T = TypeVar("T")


def measure(root: Path, state: Path, keep: int) -> dict[str, float]:
    """The window's steps on the tree at ``root`` (changed: its removals are moved), after
    the preview's read."""
    from retentiond.core.plan import make_plan
    from retentiond.core.run_lists import deleted_rows, kept_rows
    from retentiond.policy.loader import load_policies
    from retentiond.policy.model import Safety
    from retentiond.run_files import removal_batches, save_removals, write_deleted, write_kept
    from retentiond.storage.reader import read_inventory
    from retentiond.storage.removal import move_out
    from retentiond.storage.removal_list import Removal, removals_for

    policy = state.parent / "policies.yaml"
    policy.write_text(
        f"policies:\n  - name: all\n    repositories: ['**']\n    keep: {{last: {keep}}}\n"
        "    allow_mass_delete: true\n"
    )
    policies = load_policies([policy])
    seconds: dict[str, float] = {}

    def step(name: str, work: Callable[[], T]) -> T:
        wall, cpu = time.monotonic(), time.process_time()
        result = work()
        seconds[name] = round(time.monotonic() - wall, 3)
        seconds[name + "_cpu"] = round(time.process_time() - cpu, 3)
        return result

    gc.disable()  # as plan and apply do while they hold a tree
    # the preview's read first, as in a run (outside the window; the same page cache for old
    # and new code); code that has it keeps the manifests it parsed, and they cross a pickle
    # as they cross the preview's process boundary
    try:
        from retentiond.storage.reader import read_inventory_keeping
    except ImportError:  # before the frozen read took the preview's manifests
        step("preview_read", lambda: read_inventory(root))
        parsed = None
    else:
        _, kept = step("preview_read", lambda: read_inventory_keeping(root))
        parsed = pickle.loads(pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
        del kept
    if parsed is None:
        inventory = step("read", lambda: read_inventory(root))
    else:
        inventory = step("read", lambda: read_inventory(root, parsed_before=parsed))
    if parsed is not None:
        seconds["manifests_reused"] = parsed.reused
    plan = step("plan", lambda: make_plan(inventory, policies, Safety(), datetime.now(UTC)))
    nested = {r.name for r in inventory.repositories if r.has_nested}
    # (before json_line, save_removals took the removals' JSON objects)
    direct = hasattr(Removal, "json_line")
    step(
        "save_removals",
        lambda: save_removals(
            state,
            RUN_ID,
            removals_for(plan, nested)
            if direct
            else (r.to_json() for r in removals_for(plan, nested)),
        ),
    )
    by_policy: dict[str, dict[str, int]] = {"tags": {}, "manifests": {}}
    step("write_deleted", lambda: write_deleted(state, RUN_ID, deleted_rows(plan, by_policy)))
    step("write_kept", lambda: write_kept(state, RUN_ID, kept_rows(inventory, plan)))

    def moves() -> int:
        moved = 0
        for batch in removal_batches(state, RUN_ID, 10_000):
            moved += move_out(root, RUN_ID, batch, lambda _: None, resumed=False, prechecked=True)
        return moved

    seconds["moved"] = step("moves", moves)
    seconds["lists"] = round(
        seconds["save_removals"] + seconds["write_deleted"] + seconds["write_kept"], 3
    )
    return seconds


def one(code: Path, source: Path, keep: int) -> dict[str, Any]:
    """A repetition in a process of its own, with ``code`` first on its path."""
    work = Path(tempfile.mkdtemp(prefix="window-work-", dir=source.parent))
    try:
        subprocess.run(["cp", "-a", str(source), str(work / "tree")], check=True)
        subprocess.run(["sync"], check=True)
        env = {**os.environ, "PYTHONPATH": str(code)}
        out = subprocess.run(
            # this file run as a script: the code compared may not have it
            [sys.executable, __file__, "--child", str(work), "--keep", str(keep)],
            env=env,
            cwd=code,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return {"code": str(code), **json.loads(out.strip().splitlines()[-1])}
    finally:  # (rm: Python's rmtree takes minutes for a tree of 50k tags)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-dir", type=Path, help="a tree made by bench.generate")
    parser.add_argument("--keep", type=int, default=20, help="keep: {last: N} everywhere")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--compare", type=Path, help="another checkout, run alternately")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # one repetition, in this process
        (args.child / "state").mkdir()
        result = measure(args.child / "tree", args.child / "state", args.keep)
        print(json.dumps(result))
        return 0
    if args.source_dir is None:
        parser.error("--source-dir is needed")
    codes = [args.compare.resolve(), REPO] if args.compare else [REPO]
    for _ in range(args.repeat):
        for code in codes:
            print(json.dumps(one(code, args.source_dir.resolve(), args.keep)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
