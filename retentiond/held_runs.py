"""Runs held for ``undo``: their removals wait in the quarantine until a GC.

With ``safety.grace`` (or ``--no-gc``, or without a runtime to run the GC) a run ends without a
GC: its quarantine is *held*, and ``undo`` can put it back. A GC reclaims the blobs of every
held run at once, so it waits until none is inside its grace; after it, their quarantines are
garbage and are purged (``runs.jsonl`` then says so with a
:class:`~retentiond.run_records.HistoryMark`).
"""

from __future__ import annotations

from datetime import datetime

from retentiond.config import Config
from retentiond.run_files import drop_removals
from retentiond.run_records import HistoryMark, RunStatus
from retentiond.state import append_history, read_history
from retentiond.storage.removal import purge


def gc_allowed(config: Config, now: datetime) -> tuple[bool, str]:
    """Whether a GC may run now, and if not why: a held run is still inside its grace."""
    history = read_history(config.state_dir)
    held = set(held_runs(config))
    for record in history:
        until = record.held_until
        expires = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else None
        if record.run_id in held and expires is not None and expires > now:
            return False, f"run {record.run_id} is held for undo until {until}"
    return True, ""


def held_runs(config: Config) -> list[str]:
    """Runs whose quarantine still waits for a GC."""
    history = read_history(config.state_dir)
    purged = {r.run_id for r in history if r.purged}
    return [r.run_id for r in history if r.held_until and r.run_id not in purged]


def purge_expired(config: Config) -> list[str]:
    """After a GC, quarantines of earlier held runs are garbage: their blobs are gone."""
    purged = held_runs(config)
    for run_id in purged:
        forget_quarantine(config, run_id)
    for run_id in purged:
        append_history(config.state_dir, HistoryMark(run_id, RunStatus.PURGED).to_json())
    return purged


def forget_quarantine(config: Config, run_id: str) -> None:
    """Delete a run's quarantine, then its list of removals (undo is over for it)."""
    purge(config.registry.location, run_id)
    drop_removals(config.state_dir, run_id)
