"""Selectors: lists of globs (``*`` within a path segment, ``**`` across), ``re:`` full-match
regexes, and ``!`` exclusions. Pure and precompiled."""

from __future__ import annotations

import re
from dataclasses import dataclass


class SelectorSyntaxError(ValueError):
    """A pattern that does not compile; the message says which and why."""


def glob_to_regex(glob: str) -> str:
    """Translate a glob into a regex: ``**`` crosses ``/``, ``*`` and ``?`` do not."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one pattern (without its ``!``) to a full-match regex."""
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise SelectorSyntaxError(f"invalid regex {pattern[3:]!r}: {exc}") from exc
    if not pattern:
        raise SelectorSyntaxError("empty pattern")
    return re.compile(glob_to_regex(pattern))


@dataclass(frozen=True, slots=True)
class Selector:
    """Matches a name when an including pattern matches it and no ``!`` pattern does.

    A selector made only of exclusions includes everything else.
    """

    patterns: tuple[str, ...]
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, patterns: list[str] | tuple[str, ...]) -> Selector:
        include: list[re.Pattern[str]] = []
        exclude: list[re.Pattern[str]] = []
        for pattern in patterns:
            if pattern.startswith("!"):
                exclude.append(compile_pattern(pattern[1:]))
            else:
                include.append(compile_pattern(pattern))
        if not include and exclude:
            include.append(re.compile(".*"))
        return cls(tuple(patterns), tuple(include), tuple(exclude))

    def matches(self, name: str) -> bool:
        include, exclude = self.include, self.exclude
        if len(include) == 1:  # the usual selector, once per tag: no generator
            if include[0].fullmatch(name) is None:
                return False
        elif not any(p.fullmatch(name) for p in include):
            return False
        return not exclude or not any(p.fullmatch(name) for p in exclude)


ALL = Selector.parse(["**"])
