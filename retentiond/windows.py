"""Maintenance windows and the run-time estimate: pure arithmetic, no I/O, no clock.

A *window* is a cron time (``schedule.window``, read in ``schedule.timezone``) plus a length
(``schedule.window_length``): each time the cron expression fires, a window opens, and it
closes ``window_length`` later. ``window_bounds`` answers whether a given instant falls in one,
and if so when that window opened and when it closes. The cron arithmetic, including daylight
saving changes in the time zone, is the trigger's (apscheduler's ``CronTrigger``).

The *estimate* says how long a maintenance is expected to take, so that one starts only when it
should finish before its window closes. From the last 10 run records (``runs.jsonl``): the GC's
seconds per blob, from the runs that ran the GC (the highest rate), times the number of blobs
in the registry now; plus the time of the other phases (freeze, quarantine, restart, verify...:
the longest of those runs). Without any history the GC counts for nothing and the other phases
for ``BASE_ESTIMATE`` seconds.

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

#: how many of the most recent run records the estimate reads
HISTORY_RUNS = 10


class FireTimes(Protocol):
    """What a window's cron schedule must answer (apscheduler's ``CronTrigger`` does)."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None: ...


def estimate_seconds(history: Sequence[HistoryEntry], blobs: int) -> float:
    """Expected run time: GC seconds per blob from the last runs that ran GC, times ``blobs``,
    plus the other phases' time."""
    rates: list[float] = []
    others: list[float] = []
    for record in history[-HISTORY_RUNS:]:
        durations = record.durations or {}
        blob_count = record.blob_count_before or 0
        if (record.gc_ran or record.gc_before_removals) and durations.get("gc") and blob_count:
            rates.append(durations["gc"] / blob_count)
        if durations:
            others.append(sum(v for k, v in durations.items() if k != "gc"))
    gc = max(rates) * blobs if rates else 0.0
    rest = max(others) if others else BASE_ESTIMATE
    return gc + rest


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
