"""Durations as written in the config and policy files: ``14d``, ``1h30m``, ``0s``.

Units: ``s`` seconds, ``m`` minutes, ``h`` hours, ``d`` days, ``w`` weeks. Whole numbers only;
several parts add up (``1h30m``), each unit at most once, largest first. At most
:data:`MAX_DURATION` (100 years, ``36500d``): longer is a mistake, and would overflow the
date arithmetic it feeds.
"""

from __future__ import annotations

import re
from datetime import timedelta

from retentiond.policy.text import excerpt

UNITS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

MAX_DURATION = timedelta(days=36500)
MAX_DURATION_TEXT = "100 years (36500d)"

_PART = re.compile(r"(\d+)([a-zA-Z]+)")
_HINT = "write a whole number and a unit (s m h d w), e.g. 90s, 15m, 14d or 1h30m"
_MAX_DIGITS = 12  # 36500d is 3153600000s: 10 digits; more (leading zeros aside) is too long


def parse_duration(text: str) -> timedelta:
    """Parse ``14d`` or ``1h30m``; the ``ValueError`` says what is wrong and how to fix it."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty duration; {_HINT}")
    shown = excerpt(text)
    seconds = 0
    seen: list[str] = []
    position = 0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        number, unit = match.groups()
        if unit not in UNITS:
            raise ValueError(f"invalid duration {shown}: unknown unit {unit!r}; {_HINT}")
        if unit in seen:
            raise ValueError(f"invalid duration {shown}: unit {unit!r} appears twice; {_HINT}")
        if seen and UNITS[unit] > UNITS[seen[-1]]:
            raise ValueError(f"invalid duration {shown}: write the largest unit first; {_HINT}")
        seen.append(unit)
        number = number.lstrip("0") or "0"
        if len(number) > _MAX_DIGITS:
            raise ValueError(_too_long(shown))
        seconds += int(number) * UNITS[unit]
        position = match.end()
    if position != len(stripped):
        raise ValueError(f"invalid duration {shown}: {_HINT}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(_too_long(shown))
    return timedelta(seconds=seconds)


def _too_long(shown: str) -> str:
    return f"duration {shown} is longer than {MAX_DURATION_TEXT}, the most retentiond accepts"


def format_duration(value: timedelta) -> str:
    """The shortest way to write ``value`` in days, hours, minutes and seconds: ``14d``, ``1h30m``.

    Fractions of a second are dropped: ``parse_duration(format_duration(d)) == d`` for whole
    seconds.
    """
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        count, total = divmod(total, UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
