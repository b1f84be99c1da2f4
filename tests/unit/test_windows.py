"""retentiond.windows: the run-time estimate and the bounds of a maintenance window, as they
behave today (times passed in, real apscheduler cron triggers)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from retentiond.run_records import HistoryEntry
from retentiond.windows import (
    BASE_ESTIMATE,
    GC_SECONDS_PER_BLOB,
    GC_SECONDS_PER_DELETED_BLOB,
    estimate_seconds,
    gc_seconds_without_history,
    next_opening,
    seconds_left,
    window_bounds,
)

BERLIN = ZoneInfo("Europe/Berlin")
RUN_ID = "20260101T000000Z-abcdef"


def run(
    gc: float | None = None, blobs: int = 1000, gc_ran: bool = True, **others: float
) -> HistoryEntry:
    durations: dict[str, float] = dict(others)
    if gc is not None:
        durations["gc"] = gc
    return HistoryEntry(run_id=RUN_ID, durations=durations, blob_count_before=blobs, gc_ran=gc_ran)


# -- the estimate ---------------------------------------------------------------------------


def measured(blobs: int, deleted: int) -> float:
    """The GC at the measured rates, spelt out."""
    return GC_SECONDS_PER_BLOB * blobs + GC_SECONDS_PER_DELETED_BLOB * deleted


def test_the_measured_rates_are_set() -> None:
    assert GC_SECONDS_PER_BLOB > 0
    assert GC_SECONDS_PER_DELETED_BLOB > GC_SECONDS_PER_BLOB  # deleting costs more than marking
    assert BASE_ESTIMATE == 60.0


def test_no_history_and_no_blobs_is_the_base_estimate() -> None:
    assert estimate_seconds([], 0) == BASE_ESTIMATE
    assert estimate_seconds([], 0, 0) == BASE_ESTIMATE


def test_no_history_counts_the_gc_at_the_measured_rates() -> None:
    assert estimate_seconds([], 1_000_000, 800_000) == pytest.approx(
        measured(1_000_000, 800_000) + BASE_ESTIMATE
    )


def test_no_history_on_a_million_blobs_is_not_a_minute() -> None:
    # the first window on a large registry must not start with a minute left
    assert estimate_seconds([], 1_000_000, 800_000) > 10 * BASE_ESTIMATE


def test_no_history_a_plan_deleting_more_is_estimated_longer() -> None:
    little, most = estimate_seconds([], 200_000, 20_000), estimate_seconds([], 200_000, 180_000)
    assert little < most
    assert most - little == pytest.approx(GC_SECONDS_PER_DELETED_BLOB * 160_000)


def test_no_history_without_the_plan_assumes_every_blob_deleted() -> None:
    assert estimate_seconds([], 50_000) == estimate_seconds([], 50_000, 50_000)


def test_no_history_deletes_no_more_blobs_than_there_are() -> None:
    assert gc_seconds_without_history(100, 1_000) == gc_seconds_without_history(100, 100)


def test_a_run_with_a_gc_wins_over_the_measured_rates() -> None:
    history = [run(gc=1.0, blobs=1000, restart=2.0)]  # this registry's GC: 1 ms a blob
    assert estimate_seconds(history, 1_000_000, 900_000) == pytest.approx(1000.0 + 2.0)


def test_runs_without_a_gc_give_the_other_phases_and_the_measured_gc() -> None:
    history = [run(gc_ran=False, restart=3.0)]
    assert estimate_seconds(history, 5000, 4000) == pytest.approx(measured(5000, 4000) + 3.0)


def test_gc_rate_times_blobs_plus_other_phases() -> None:
    history = [run(gc=100.0, blobs=1000, freeze=2.0, restart=8.0)]
    assert estimate_seconds(history, 2000) == pytest.approx(0.1 * 2000 + 10.0)


def test_highest_rate_and_longest_other_phases_win() -> None:
    history = [
        run(gc=100.0, blobs=1000, restart=30.0),  # 0.1 s/blob
        run(gc=50.0, blobs=100, restart=5.0),  # 0.5 s/blob
    ]
    assert estimate_seconds(history, 10) == pytest.approx(0.5 * 10 + 30.0)


def test_only_the_last_ten_runs_count() -> None:
    slow = run(gc=1000.0, blobs=10, restart=500.0)
    fast = [run(gc=1.0, blobs=10, restart=1.0) for _ in range(10)]
    assert estimate_seconds([slow, *fast], 10) == pytest.approx(1.0 + 1.0)
    assert estimate_seconds([*fast[1:], slow], 10) == pytest.approx(1000.0 + 500.0)


def test_gc_before_removals_counts_as_a_gc_run() -> None:
    record = dataclasses.replace(
        run(gc=20.0, blobs=10, gc_ran=False, restart=1.0), gc_before_removals=True
    )
    assert estimate_seconds([record], 5) == pytest.approx(10.0 + 1.0)


@pytest.mark.parametrize(
    "record",
    [
        run(gc=20.0, blobs=10, gc_ran=False, restart=3.0),  # GC did not run
        run(gc=0.0, blobs=10, restart=3.0),  # no GC time
        run(gc=20.0, blobs=0, restart=3.0),  # no blob count: no rate
        dataclasses.replace(run(gc=20.0, restart=3.0), blob_count_before=None),
    ],
)
def test_runs_without_a_usable_gc_rate_give_the_measured_gc(
    record: HistoryEntry,
) -> None:
    assert estimate_seconds([record], 1000, 10) == pytest.approx(measured(1000, 10) + 3.0)


def test_runs_without_durations_are_like_no_history() -> None:
    history = [HistoryEntry(run_id=RUN_ID, status="refused"), HistoryEntry(run_id=RUN_ID)]
    assert estimate_seconds(history, 50, 5) == estimate_seconds([], 50, 5)


def test_a_run_with_only_gc_time_makes_the_rest_zero() -> None:
    # a record whose durations hold only "gc": the other phases count 0, not BASE_ESTIMATE
    assert estimate_seconds([run(gc=10.0, blobs=10)], 10) == pytest.approx(10.0)


# -- window bounds --------------------------------------------------------------------------


def bounds(
    cron: str, length: timedelta, now: datetime, tz: ZoneInfo = BERLIN
) -> tuple[datetime, datetime] | None:
    return window_bounds(CronTrigger.from_crontab(cron, timezone=tz), length, tz, now)


def berlin(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


def test_inside_a_window() -> None:
    now = berlin(2026, 12, 6, 3, 30)  # a Sunday
    assert bounds("0 3 * * SUN", timedelta(hours=2), now) == (
        berlin(2026, 12, 6, 3, 0),
        berlin(2026, 12, 6, 5, 0),
    )


def test_at_the_opening_is_inside_and_at_the_close_is_outside() -> None:
    length = timedelta(hours=2)
    assert bounds("0 3 * * SUN", length, berlin(2026, 12, 6, 3, 0)) is not None
    assert bounds("0 3 * * SUN", length, berlin(2026, 12, 6, 4, 59, 59)) is not None
    assert bounds("0 3 * * SUN", length, berlin(2026, 12, 6, 5, 0)) is None


def test_before_and_after_a_window() -> None:
    length = timedelta(hours=2)
    assert bounds("0 3 * * SUN", length, berlin(2026, 12, 6, 2, 59)) is None
    assert bounds("0 3 * * SUN", length, berlin(2026, 12, 7, 3, 30)) is None  # Monday


def test_now_in_another_zone_is_compared_as_an_instant() -> None:
    now = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)  # 03:30 in Berlin
    assert bounds("0 3 * * SUN", timedelta(hours=2), now) == (
        berlin(2026, 12, 6, 3, 0),
        berlin(2026, 12, 6, 5, 0),
    )


def test_across_midnight() -> None:
    length = timedelta(hours=3)
    expected = (berlin(2026, 12, 5, 23, 0), berlin(2026, 12, 6, 2, 0))
    assert bounds("0 23 * * *", length, berlin(2026, 12, 5, 23, 30)) == expected
    assert bounds("0 23 * * *", length, berlin(2026, 12, 6, 1, 30)) == expected
    assert bounds("0 23 * * *", length, berlin(2026, 12, 6, 2, 0)) is None


def test_overlapping_windows_give_the_one_opened_last() -> None:
    now = berlin(2026, 12, 6, 3, 10, 30)
    assert bounds("*/5 * * * *", timedelta(minutes=10), now) == (
        berlin(2026, 12, 6, 3, 10),
        berlin(2026, 12, 6, 3, 20),
    )


def test_a_window_that_never_fires_again() -> None:
    trigger = CronTrigger.from_crontab("0 3 * * *", timezone=BERLIN)
    trigger.end_date = berlin(2026, 1, 1)
    assert window_bounds(trigger, timedelta(hours=2), BERLIN, berlin(2026, 12, 6, 3, 30)) is None


def test_spring_forward_closes_by_wall_clock() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC). A 2h window opened at
    # 01:00 closes at 03:00 on the wall clock: one real hour today.
    length = timedelta(hours=2)
    opened, closes = berlin(2026, 3, 29, 1, 0), berlin(2026, 3, 29, 3, 0)
    assert bounds("0 1 * * *", length, datetime(2026, 3, 29, 0, 0, tzinfo=UTC)) == (opened, closes)
    assert bounds("0 1 * * *", length, datetime(2026, 3, 29, 0, 59, tzinfo=UTC)) is not None
    assert bounds("0 1 * * *", length, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) is None
    assert (closes - opened) == length  # wall-clock difference
    assert (closes.astimezone(UTC) - opened.astimezone(UTC)) == timedelta(hours=1)


def test_fall_back_keeps_the_wall_clock_close() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; a 2h window from 01:00 CEST closes at
    # 03:00 CET: three real hours.
    length = timedelta(hours=2)
    expected = (berlin(2026, 10, 25, 1, 0), berlin(2026, 10, 25, 3, 0))
    assert bounds("0 1 * * *", length, datetime(2026, 10, 24, 23, 0, tzinfo=UTC)) == expected
    assert bounds("0 1 * * *", length, datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == expected


def test_first_of_the_repeated_hour_at_fall_back() -> None:
    length = timedelta(hours=1)
    assert bounds("30 2 * * *", length, datetime(2026, 10, 25, 0, 0, tzinfo=UTC)) is None
    # 02:30 CEST (00:30 UTC)
    opened_bounds = bounds("30 2 * * *", length, datetime(2026, 10, 25, 0, 30, tzinfo=UTC))
    assert opened_bounds is not None
    assert opened_bounds[0].utcoffset() == timedelta(hours=2)


def test_second_of_the_repeated_hour_at_fall_back() -> None:
    now = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, the second one
    assert bounds("30 2 * * *", timedelta(hours=1), now) is not None


# -- does the estimate fit? -----------------------------------------------------------------


def test_seconds_left() -> None:
    closes = berlin(2026, 12, 6, 5, 0)
    assert seconds_left(closes, berlin(2026, 12, 6, 4, 0)) == 3600.0
    assert seconds_left(closes, datetime(2026, 12, 6, 3, 59, tzinfo=UTC)) == 60.0
    assert seconds_left(closes, berlin(2026, 12, 6, 5, 1)) == -60.0


def test_a_window_that_ends_before_the_estimate_fits() -> None:
    history = [run(gc=600.0, blobs=1000, restart=60.0)]  # 0.6 s/blob + 60 s
    estimate = estimate_seconds(history, 10_000)  # 6,060 s: more than 1h40
    now = berlin(2026, 12, 6, 3, 20)
    found = bounds("0 3 * * SUN", timedelta(hours=2), now)
    assert found is not None
    left = seconds_left(found[1], now)
    assert left == 6000.0
    assert estimate > left  # the daemon skips this window (not-enough-time)
    assert estimate_seconds(history, 9_900) <= left  # 100 blobs fewer would fit


def test_next_opening() -> None:
    trigger = CronTrigger.from_crontab("0 3 * * SUN", timezone=BERLIN)
    now = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)  # inside Sunday's window
    assert next_opening(trigger, BERLIN, now) == berlin(2026, 12, 13, 3, 0)
    assert next_opening(trigger, BERLIN, berlin(2026, 12, 6, 3, 0)) == berlin(2026, 12, 6, 3, 0)
