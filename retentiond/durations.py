"""Durations as written in the config and policy files: ``14d``, ``1h30m``, ``0s``.

Units: ``s`` seconds, ``m`` minutes, ``h`` hours, ``d`` days, ``w`` weeks. Whole numbers only;
several parts add up (``1h30m``), each unit at most once, largest first.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

_PART = re.compile(r"(\d+)([a-zA-Z]+)")
_HINT = "write a whole number and a unit (s m h d w), e.g. 90s, 15m, 14d or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse ``14d`` or ``1h30m``; the ``ValueError`` says what is wrong and how to fix it."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty duration; {_HINT}")
    seconds = 0
    seen: list[str] = []
    position = 0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        number, unit = match.groups()
        if unit not in UNITS:
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r}; {_HINT}")
        if unit in seen:
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} appears twice; {_HINT}")
        if seen and UNITS[unit] > UNITS[seen[-1]]:
            raise ValueError(f"invalid duration {text!r}: write the largest unit first; {_HINT}")
        seen.append(unit)
        seconds += int(number) * UNITS[unit]
        position = match.end()
    if position != len(stripped):
        raise ValueError(f"invalid duration {text!r}: {_HINT}")
    return timedelta(seconds=seconds)


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
