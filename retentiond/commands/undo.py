"""``retentiond undo RUN_ID``: put back what a run removed, while its quarantine still holds it."""

from __future__ import annotations

from pathlib import Path

from retentiond.commands.context import load_context
from retentiond.errors import RetentiondError, UsageError
from retentiond.logs import get_logger
from retentiond.state import append_history, read_history, run_lock
from retentiond.storage.removal import held_removals, put_back


def run_undo(config_arg: Path | None, run_id: str) -> int:
    ctx = load_context(config_arg)
    root = Path(ctx.config.registry.root)
    with run_lock(ctx.config.state_dir):
        history = read_history(ctx.config.state_dir)
        records = [r for r in history if r.get("run_id") == run_id]
        if not records:
            known = ", ".join(r["run_id"] for r in history[-5:] if "run_id" in r) or "none"
            raise UsageError(f"no run {run_id!r} in {ctx.config.state_dir}; recent runs: {known}")
        later = history[history.index(records[0]) + 1 :]
        collected = any(r.get("gc_ran") for r in records) or any(
            r.get("gc_ran") or r.get("gc_before_removals") for r in later
        )
        if collected or any(r.get("purged") for r in records):
            raise RetentiondError(
                f"run {run_id} cannot be undone: a garbage collection has run since, so its "
                "blobs are gone. Push the images again from their source"
            )
        removals = held_removals(root, run_id)
        if removals is None:
            raise RetentiondError(f"run {run_id} has nothing in quarantine to put back")
        conflicts = put_back(root, run_id, removals)
        append_history(
            ctx.config.state_dir,
            {"run_id": run_id, "status": "undone", "purged": True, "conflicts": conflicts},
        )
    for line in conflicts:
        print(f"conflict: {line}")
    print(f"run {run_id}: put back {len(removals) - len(conflicts)} of {len(removals)} removals")
    get_logger(job="undo", run_id=run_id).info(
        "undo", restored=len(removals) - len(conflicts), conflicts=len(conflicts)
    )
    return 1 if conflicts else 0
