"""Typed reading of a positioned YAML tree, collecting every problem instead of stopping.

A :class:`Checker` belongs to one file. Each ``read_*`` method returns the converted value, or
None after recording a problem at the value's line and column, so a loader reads every field,
keeps going, and builds its frozen result only when ``checker.problems`` stays empty. Shared by
the policy loader and the config loader.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Collection
from datetime import timedelta
from typing import TypeVar

from retentiond.durations import parse_duration
from retentiond.errors import SourceProblem
from retentiond.policy.selectors import (
    MAX_REPOSITORY_LENGTH,
    Selector,
    SelectorSyntaxError,
    compile_pattern,
)
from retentiond.policy.text import excerpt
from retentiond.policy.yaml_positions import (
    Position,
    YamlList,
    YamlMap,
    YamlScalar,
    YamlValue,
    describe,
)

E = TypeVar("E", bound=enum.Enum)

MAX_COUNT = 1_000_000  # keep.last, keep.semver and other counts: more is a mistake


def unknown_key_message(key: str, where: str, allowed: Collection[str]) -> str:
    """``unknown key 'withn' in keep; did you mean 'within'?`` or the list of known keys."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"unknown key {excerpt(key)} in {where}; did you mean {close[0]!r}?"
    return f"unknown key {excerpt(key)} in {where}; expected one of: {', '.join(allowed)}"


def is_null(value: YamlValue | None) -> bool:
    """True for a missing value or an explicit ``null`` / empty value."""
    return value is None or (isinstance(value, YamlScalar) and value.value is None)


class Checker:
    """Reads values of one file and collects its problems and warnings."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[SourceProblem] = []
        self.warnings: list[SourceProblem] = []

    def problem(self, at: Position | YamlValue, message: str) -> None:
        position = at if isinstance(at, Position) else at.position
        self.problems.append(SourceProblem(self.file, position.line, position.column, message))

    def warning(self, at: Position | YamlValue, message: str) -> None:
        position = at if isinstance(at, Position) else at.position
        self.warnings.append(SourceProblem(self.file, position.line, position.column, message))

    def read_mapping(
        self, value: YamlValue, what: str, allowed: Collection[str], *, null_is_empty: bool = False
    ) -> YamlMap | None:
        """``value`` as a mapping whose keys are all in ``allowed`` (unknown keys are problems)."""
        if null_is_empty and is_null(value):
            return YamlMap({}, value.position)
        if not isinstance(value, YamlMap):
            self.problem(value, f"{what} must be a mapping, got {describe(value)}")
            return None
        for entry in value.entries.values():
            if entry.key not in allowed:
                self.problem(entry.key_position, unknown_key_message(entry.key, what, allowed))
        return value

    def read_string(self, value: YamlValue, what: str) -> str | None:
        """A non-empty string."""
        if not isinstance(value, YamlScalar) or not isinstance(value.value, str):
            hint = "; quote it" if isinstance(value, YamlScalar) and value.value is not None else ""
            self.problem(value, f"{what} must be a string, got {describe(value)}{hint}")
            return None
        if not value.value.strip():
            self.problem(value, f"{what} must not be empty")
            return None
        return value.value

    def read_optional_string(self, value: YamlValue | None, what: str) -> str | None:
        """A non-empty string, or None when missing or null."""
        return None if value is None or is_null(value) else self.read_string(value, what)

    def read_bool(self, value: YamlValue, what: str) -> bool | None:
        if isinstance(value, YamlScalar) and isinstance(value.value, bool):
            return value.value
        self.problem(value, f"{what} must be true or false, got {describe(value)}")
        return None

    def read_positive_int(self, value: YamlValue, what: str) -> int | None:
        """A whole number from 1 to :data:`MAX_COUNT`."""
        raw = value.value if isinstance(value, YamlScalar) else None
        if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
            if raw <= MAX_COUNT:
                return raw
            self.problem(value, f"{what} must be at most {MAX_COUNT:,}, got {describe(value)}")
            return None
        self.problem(value, f"{what} must be a whole number of at least 1, got {describe(value)}")
        return None

    def read_choice(self, value: YamlValue, what: str, choices: type[E]) -> E | None:
        """One of an enum's values, written as its string value."""
        names = [str(member.value) for member in choices]
        if isinstance(value, YamlScalar) and isinstance(value.value, str):
            for member in choices:
                if member.value == value.value:
                    return member
        hint = ""
        if isinstance(value, YamlScalar) and isinstance(value.value, bool):
            hint = " (YAML reads yes, no, on and off as true or false)"
        self.problem(
            value, f"{what} must be one of {', '.join(names)}, got {describe(value)}{hint}"
        )
        return None

    def read_duration(
        self, value: YamlValue, what: str, *, allow_zero: bool = True
    ) -> timedelta | None:
        """A duration like ``14d`` or ``1h30m``."""
        raw = value.value if isinstance(value, YamlScalar) else None
        if isinstance(raw, int) and not isinstance(raw, bool):
            n = raw if abs(raw) < 10**12 else 14
            shown = excerpt(raw, quoted=False)
            self.problem(value, f"{what}: {shown} has no unit; write e.g. {n}s, {n}m or {n}d")
            return None
        if not isinstance(raw, str):
            self.problem(
                value, f"{what} must be a duration like 14d or 1h30m, got {describe(value)}"
            )
            return None
        try:
            duration = parse_duration(raw)
        except ValueError as exc:
            self.problem(value, f"{what}: {exc}")
            return None
        if not allow_zero and not duration:
            self.problem(value, f"{what} must be longer than 0s")
            return None
        return duration

    def read_string_list(self, value: YamlValue, what: str) -> list[tuple[str, YamlScalar]] | None:
        """A string or a list of strings, each with its node (for positions)."""
        before = len(self.problems)
        items = self._strings(value, what)
        return items if len(self.problems) == before else None

    def _strings(self, value: YamlValue, what: str) -> list[tuple[str, YamlScalar]]:
        """The string entries of a string or list; every other entry is recorded as a problem."""
        if isinstance(value, YamlMap) or is_null(value):
            self.problem(
                value, f"{what} must be a string or a list of strings, got {describe(value)}"
            )
            return []
        items: tuple[YamlValue, ...] = value.items if isinstance(value, YamlList) else (value,)
        if not items:
            self.problem(value, f"{what} is an empty list; give at least one entry")
        result: list[tuple[str, YamlScalar]] = []
        for item in items:
            if isinstance(item, YamlScalar) and isinstance(item.value, str):
                result.append((item.value, item))
            else:
                hint = (
                    "; quote it" if isinstance(item, YamlScalar) and item.value is not None else ""
                )
                self.problem(
                    item, f"{what}: each entry must be a string, got {describe(item)}{hint}"
                )
        return result

    def read_selector(
        self,
        value: YamlValue,
        what: str,
        *,
        max_length: int = MAX_REPOSITORY_LENGTH,
        when_too_long: bool = False,
    ) -> Selector | None:
        """Globs, ``re:`` regexes and ``!`` exclusions; each bad pattern is reported where it is.

        ``max_length`` and ``when_too_long``: see :class:`~retentiond.policy.selectors.Selector`.
        """
        before = len(self.problems)
        patterns = self._strings(value, what)
        for pattern, node in patterns:
            if not pattern.removeprefix("!").strip():
                self.problem(node, f"{what}: empty pattern; remove it or write a glob like 'ci/**'")
                continue
            try:
                compile_pattern(pattern.removeprefix("!"))
            except SelectorSyntaxError as exc:
                self.problem(node, f"{what}: {exc}")
        if len(self.problems) > before:
            return None
        return Selector.parse(
            [pattern for pattern, _ in patterns],
            max_length=max_length,
            when_too_long=when_too_long,
        )
