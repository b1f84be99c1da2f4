"""``retentiond undo RUN_ID``: put back what a run removed, while its quarantine still holds it.

What to put back is read from ``state_dir`` only (``removals/<RUN_ID>.json``, checked whole),
never from the quarantine, which lives under the storage root where the registry writes.
"""

from __future__ import annotations

from pathlib import Path

from retentiond.commands.context import load_context
from retentiond.errors import RetentiondError, UsageError
from retentiond.logs import get_logger
from retentiond.run_files import drop_removals
from retentiond.run_records import HistoryEntry, HistoryMark, RunStatus, run_id_problem
from retentiond.state import append_history, read_history, run_lock
from retentiond.storage.removal import put_back, quarantine_exists, run_removals


def _check_undoable(run_id: str, state_dir: Path, history: list[HistoryEntry]) -> None:
    records = [r for r in history if r.run_id == run_id]
    if not records:
        known = ", ".join(r.run_id for r in history[-5:]) or "none"
        raise UsageError(f"no run {run_id!r} in {state_dir}; recent runs: {known}")
    later = history[history.index(records[0]) + 1 :]
    collected = any(r.gc_ran for r in records) or any(
        r.gc_ran or r.gc_before_removals for r in later
    )
    if collected or any(r.purged for r in records):
        raise RetentiondError(
            f"run {run_id} cannot be undone: a garbage collection has run since, so its "
            "blobs are gone. Push the images again from their source"
        )


def run_undo(config_arg: Path | None, run_id: str) -> int:
    problem = run_id_problem(run_id)
    if problem is not None:
        raise UsageError(f"RUN_ID {problem}; see `run_id` in state_dir/runs.jsonl")
    ctx = load_context(config_arg)
    root = ctx.config.registry.location
    state_dir = ctx.config.state_dir
    with run_lock(state_dir):
        _check_undoable(run_id, state_dir, read_history(state_dir))
        removals = run_removals(state_dir, root, run_id)
        if removals is None or not quarantine_exists(root, run_id):
            raise RetentiondError(f"run {run_id} has nothing in quarantine to put back")
        result = put_back(root, run_id, removals)
        if not result.conflicts:
            drop_removals(state_dir, run_id)
        append_history(state_dir, HistoryMark(run_id, RunStatus.UNDONE, result.conflicts).to_json())
    for line in result.conflicts:
        print(f"conflict: {line}")
    print(f"run {run_id}: put back {result.restored} of {len(removals)} removals")
    get_logger(job="undo", run_id=run_id).info(
        "undo", restored=result.restored, conflicts=len(result.conflicts)
    )
    return 1 if result.conflicts else 0
