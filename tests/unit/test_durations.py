from datetime import timedelta

import pytest

from retentiond.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("14d", timedelta(days=14)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 14d ", timedelta(days=14)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("14", "write a whole number and a unit"),
        ("d", "write a whole number and a unit"),
        ("1.5h", "write a whole number and a unit"),
        ("-5m", "write a whole number and a unit"),
        ("14 d", "write a whole number and a unit"),
        ("14days", "unknown unit 'days'"),
        ("3y", "unknown unit 'y'"),
        ("1h1h", "unit 'h' appears twice"),
        ("30m1h", "largest unit first"),
    ],
)
def test_parse_duration_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert fragment in str(info.value)
    assert "s m h d w" in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(days=14), "14d"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(seconds=59, milliseconds=999), "59s"),
        (timedelta(hours=-2), "-2h"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_format_then_parse_round_trips() -> None:
    for seconds in (1, 59, 61, 3600, 86399, 86400 * 17 + 5):
        value = timedelta(seconds=seconds)
        assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    "text", ["99999999999d", "36501d", "5215w", "3153600001s", "9" * 5000 + "s"]
)
def test_durations_longer_than_100_years_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is longer than 100 years \(36500d\)") as raised:
        parse_duration(text)
    assert len(str(raised.value)) < 120  # an excerpt of the text, not all of it


def test_100_years_is_accepted() -> None:
    assert parse_duration("36500d") == timedelta(days=36500)
    assert parse_duration("5214w") == timedelta(weeks=5214)
