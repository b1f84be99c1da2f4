"""Maintenance windows and the run-time estimate: pure arithmetic, no I/O, no clock.

A *window* is a cron time (``schedule.window``, read in ``schedule.timezone``) plus a length
(``schedule.window_length``): each time the cron expression fires, a window opens, and it
closes ``window_length`` later. ``window_bounds`` answers whether a given instant falls in one,
and if so when that window opened and when it closes. The cron arithmetic, including daylight
saving changes in the time zone, is the trigger's (apscheduler's ``CronTrigger``).

The *estimate* says how long a maintenance is expected to take, so that one starts only when it
should finish before its window closes. It has two parts, the registry's GC and the other
phases (freeze, quarantine, clean, restart, verify...).

With run history (the last 10 run records of ``runs.jsonl``), each part comes from this
registry's own runs: the GC's seconds per blob, from the runs that ran the GC (the highest
rate), times the number of blobs in the registry now; the other phases, the longest of those
runs. History wins as soon as it has a run that ran the GC (for the GC part) or any run with
phase times (for the other part): it was measured on this machine and this storage.

Without history, the GC part is the registry's real ``garbage-collect`` at the conservative
rates :data:`GC_SECONDS_PER_BLOB` (every blob in the store: the GC reads every repository and
lists the store) plus :data:`GC_SECONDS_PER_DELETED_BLOB` (each blob it deletes: the sweep,
which dominates when a plan reclaims much); the other phases count ``BASE_ESTIMATE``.

Every time is passed in by the caller; nothing here reads the clock or the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from retentiond.run_records import HistoryEntry

#: minimum seconds a maintenance needs besides the GC (freeze, restart, verify) when there
#: is no history to estimate from
BASE_ESTIMATE = 60.0

# The two GC rates below are about twice the highest that registry 2.8.2's real garbage-collect
# showed on a quiet 2-vCPU machine (bench/README.md, "A GC estimate without history"): the dry
# run's seconds per blob in the store (the mark: 52 us a blob at 50,000 tags, 104 us at 1M tags,
# where the tree no longer fits in the page cache) and the real GC's seconds beyond its dry run
# per blob it deleted (the sweep: 324 to 449 us at 50,000 tags). At 50,000 tags (176,640 blobs,
# 145,399 deleted) they say 181 s for a GC that took 74.5 s. On a machine busy with other work
# the GC was slower still (`python -m bench.gc_rate`: up to 724 us and 2.8 ms at load 10 to 21):
# a registry's own history, once there is some, replaces these rates.

#: seconds the registry's GC spends per blob in the store (reading every repository, listing
#: the store, marking), without history
GC_SECONDS_PER_BLOB = 200e-6

#: seconds the registry's GC spends per blob it deletes (the sweep), without history
GC_SECONDS_PER_DELETED_BLOB = 1e-3

#: how many of the most recent run records the estimate reads
HISTORY_RUNS = 10


class FireTimes(Protocol):
    """What a window's cron schedule must answer (apscheduler's ``CronTrigger`` does)."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None: ...


def estimate_seconds(
    history: Sequence[HistoryEntry], blobs: int, reclaimable: int | None = None
) -> float:
    """Expected run time of a maintenance on a registry of ``blobs`` blobs whose plan
    reclaims ``reclaimable`` of them (None: as many as there are, the most the GC can delete):
    the GC plus the other phases, each from the history when it has them, else from the
    measured rates (see the module's docstring)."""
    rates: list[float] = []
    others: list[float] = []
    for record in history[-HISTORY_RUNS:]:
        durations = record.durations or {}
        blob_count = record.blob_count_before or 0
        if (record.gc_ran or record.gc_before_removals) and durations.get("gc") and blob_count:
            rates.append(durations["gc"] / blob_count)
        if durations:
            others.append(sum(v for k, v in durations.items() if k != "gc"))
    measured_gc = gc_seconds_without_history(blobs, blobs if reclaimable is None else reclaimable)
    gc = max(rates) * blobs if rates else measured_gc
    rest = max(others) if others else BASE_ESTIMATE
    return gc + rest


def gc_seconds_without_history(blobs: int, deleted: int) -> float:
    """The registry GC's seconds at the measured conservative rates, for ``blobs`` blobs in
    the store of which it deletes ``deleted``."""
    return GC_SECONDS_PER_BLOB * blobs + GC_SECONDS_PER_DELETED_BLOB * min(deleted, blobs)


def window_bounds(
    window: FireTimes, length: timedelta, tz: tzinfo, now: datetime
) -> tuple[datetime, datetime] | None:
    """The window ``now`` falls in, as (opened, closes), or None. ``now`` must be aware; the
    bounds are in ``tz``. When windows overlap, the one opened last."""
    probe = now.astimezone(tz) - length - timedelta(seconds=1)
    opened: datetime | None = None
    while True:
        fire = window.get_next_fire_time(None, probe)
        if fire is None or fire > now or (opened is not None and fire <= opened):
            break  # (the last: a schedule that does not move forward ends the search)
        opened = fire
        # one second later in real time: wall-clock arithmetic on an aware datetime ignores
        # ``fold``, so in the repeated hour of a fall-back night it would step back an hour
        probe = (fire.astimezone(UTC) + timedelta(seconds=1)).astimezone(tz)
    if opened is None or now >= opened + length:
        return None
    return opened, opened + length


def next_opening(window: FireTimes, tz: tzinfo, now: datetime) -> datetime | None:
    """When the next window opens at or after ``now`` (in ``tz``), or None if none will."""
    return window.get_next_fire_time(None, now.astimezone(tz))


def seconds_left(closes: datetime, now: datetime) -> float:
    """Seconds from ``now`` until the window closes (negative once it has closed). A
    maintenance starts only when ``estimate_seconds(...)`` is not more than this."""
    return (closes - now).total_seconds()
