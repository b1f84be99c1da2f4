"""Selectors: lists of globs (``*`` within a path segment, ``**`` across), ``re:`` full-match
regexes, and ``!`` exclusions. Pure and precompiled.

Every pattern matches in time bounded by the length of the name, whatever the policy says:

- a glob is matched without backtracking (:class:`Glob`): literal text is found left to right
  with ``str.find`` when that is exact, else the pattern runs as a set of states, one pass
  over the name (``O(len(name) * len(pattern))``);
- a ``re:`` regex runs in Python's backtracking ``re``, so one that could backtrack
  catastrophically is refused when it is compiled (:mod:`retentiond.policy.regex_safety`
  says which and why), and it only ever sees names no longer than the selector's
  ``max_length`` (the registry's limits: a tag at most 128 characters, a repository name
  255). A longer name is answered by ``when_too_long`` instead, chosen by the caller so that
  nothing is deleted on the strength of a name no pattern read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from retentiond.policy.regex_safety import regex_problem
from retentiond.policy.text import excerpt

MAX_TAG_LENGTH = 128
MAX_REPOSITORY_LENGTH = 255


class SelectorSyntaxError(ValueError):
    """A pattern that does not compile, or is refused; the message says which and why."""


# ---------------------------------------------------------------- globs

_STAR = "*"  # any run of characters but '/'
_GLOBSTAR = "**"  # any run of characters
_GLOBSTAR_SLASH = "**/"  # nothing, or any run of characters ending with '/'
_ONE = "?"  # one character but '/'
_ENTRY = "(entry)"  # a matcher state, not a token: where '**/' starts; reads nothing
_OTHER = "(other)"  # any character that is not in the glob


def _tokens(glob: str) -> list[str]:
    """The glob as wildcard tokens and single literal characters."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append(_GLOBSTAR_SLASH)
            i += 3
        elif glob.startswith("**", i):
            out.append(_GLOBSTAR)
            i += 2
        else:
            out.append(glob[i])
            i += 1
    return out


class Glob:
    """A compiled glob: ``*`` and ``?`` within a path segment, ``**`` across segments,
    ``**/`` any number of leading segments (none included); every other character is itself.
    """

    __slots__ = ("_final", "_masks", "_other", "_skip_one", "_skip_three", "matches", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.matches: Callable[[str], bool]
        tokens = _tokens(pattern)
        wildcards = {t for t in tokens if t in (_STAR, _GLOBSTAR, _GLOBSTAR_SLASH, _ONE)}
        if not wildcards:
            self.matches = pattern.__eq__
        elif pattern == _GLOBSTAR:
            self.matches = _always
        else:
            star = wildcards.pop() if wildcards in ({_STAR}, {_GLOBSTAR}) else None
            segments = _split(tokens, star) if star else None
            if segments is not None:
                self.matches = segments
            else:
                self._compile_states(tokens)
                self.matches = self._states

    # -- the general case: a set of states (the bits of an int), one pass over the name

    def _compile_states(self, tokens: list[str]) -> None:
        """State ``i`` means "the first i tokens matched". ``**/`` is three: an entry that
        reads nothing and may skip the other two, a ``**``, and the ``/`` that ends it."""
        states: list[str] = []
        for token in tokens:
            is_leading = token == _GLOBSTAR_SLASH
            states.extend((_ENTRY, _GLOBSTAR, "/") if is_leading else (token,))
        literals = {t for t in states if t not in (_STAR, _GLOBSTAR, _ENTRY, _ONE)}
        self._masks = {char: _masks_for(states, char) for char in literals | {"/"}}
        self._other = _masks_for(states, _OTHER)
        passing = (_STAR, _GLOBSTAR, _ENTRY)
        self._skip_one = sum(1 << i for i, t in enumerate(states) if t in passing)
        self._skip_three = sum(1 << i for i, t in enumerate(states) if t == _ENTRY)
        self._final = 1 << len(states)

    def _closure(self, states: int) -> int:
        """Add the states reached without reading: past a star, or past a whole ``**/``."""
        one, three = self._skip_one, self._skip_three
        while True:
            more = states | (states & one) << 1 | (states & three) << 3
            if more == states:
                return states
            states = more

    def _states(self, name: str) -> bool:
        masks, other, closure = self._masks, self._other, self._closure
        states = closure(1)
        for char in name:
            advance, stay = masks.get(char, other)
            states = closure((states & advance) << 1 | states & stay)
            if not states:
                return False
        return bool(states & self._final)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Glob) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __reduce__(self) -> tuple[type[Glob], tuple[str]]:  # compiled again where unpickled
        return (Glob, (self.pattern,))


def _masks_for(states: list[str], char: str) -> tuple[int, int]:
    """For one character (or :data:`_OTHER`): (states it advances, states it keeps)."""
    advance = stay = 0
    for i, token in enumerate(states):
        if token == char or (token == _ONE and char != "/"):
            advance |= 1 << i
        elif token == _GLOBSTAR or (token == _STAR and char != "/"):
            stay |= 1 << i
    return advance, stay


def _split(tokens: list[str], star: str) -> Callable[[str], bool] | None:
    """A :func:`_segments` matcher for a glob whose only wildcard is ``star``, or None when
    finding its parts left to right would not be exact."""
    parts = [""]
    for token in tokens:
        if token == star:
            parts.append("")
        else:
            parts[-1] += token
    middle = parts[1:-1]
    # With '*' the name between the first and last literal parts must hold no '/': that is
    # exact only when no middle part holds a '/' (the first and last parts are anchored).
    if star == _STAR and any("/" in part for part in middle):
        return None
    return _segments(parts[0], tuple(p for p in middle if p), parts[-1], star)


def _segments(
    prefix: str, middle: tuple[str, ...], suffix: str, star: str
) -> Callable[[str], bool]:
    """A matcher for ``prefix STAR middle[0] STAR ... STAR suffix`` where every STAR is ``star``.

    The leftmost place of each middle part is always a right one, so each is found with one
    ``str.find`` from where the last ended: no backtracking.
    """
    shortest = len(prefix) + len(suffix)
    start, tail = len(prefix), len(suffix)
    no_slash = star == _STAR
    if no_slash and not middle and "/" not in prefix + suffix:  # 'v*', '*', '*-rc': the usual
        if not prefix and not suffix:
            return lambda name: "/" not in name
        return lambda name: (
            len(name) >= shortest
            and name.startswith(prefix)
            and name.endswith(suffix)
            and "/" not in name
        )

    def matches(name: str) -> bool:
        if len(name) < shortest or not name.startswith(prefix) or not name.endswith(suffix):
            return False
        end = len(name) - tail
        if no_slash and name.find("/", start, end) >= 0:
            return False
        at = start
        for part in middle:
            found = name.find(part, at, end)
            if found < 0:
                return False
            at = found + len(part)
        return True

    return matches


def _always(name: str) -> bool:
    return True


# ---------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class Regex:
    """A ``re:`` pattern that :func:`~retentiond.policy.regex_safety.regex_problem` accepts."""

    pattern: str
    compiled: re.Pattern[str]

    def matches(self, name: str) -> bool:
        return self.compiled.fullmatch(name) is not None


Matcher = Glob | Regex


def compile_pattern(pattern: str) -> Matcher:
    """Compile one pattern (without its ``!``); SelectorSyntaxError says what is wrong."""
    if pattern.startswith("re:"):
        source = pattern[3:]
        try:
            compiled = re.compile(source)
        except (re.error, RecursionError, OverflowError) as exc:
            raise SelectorSyntaxError(f"invalid regex {excerpt(source)}: {exc}") from exc
        problem = regex_problem(source)
        if problem is not None:
            raise SelectorSyntaxError(f"regex {excerpt(source)} refused: {problem}")
        return Regex(source, compiled)
    if not pattern:
        raise SelectorSyntaxError("empty pattern")
    return Glob(pattern)


@dataclass(frozen=True, slots=True)
class Selector:
    """Matches a name when an including pattern matches it and no ``!`` pattern does.

    A selector made only of exclusions includes everything else. A name longer than
    ``max_length`` is matched by globs only when no regex is involved, else the answer is
    ``when_too_long`` (a regex never runs on it).
    """

    patterns: tuple[str, ...]
    include: tuple[Matcher, ...]
    exclude: tuple[Matcher, ...]
    max_length: int = MAX_REPOSITORY_LENGTH
    when_too_long: bool = False
    _has_regex: bool = False

    @classmethod
    def parse(
        cls,
        patterns: list[str] | tuple[str, ...],
        *,
        max_length: int = MAX_REPOSITORY_LENGTH,
        when_too_long: bool = False,
    ) -> Selector:
        """Compile ``patterns``; SelectorSyntaxError for the first one that is wrong."""
        include: list[Matcher] = []
        exclude: list[Matcher] = []
        for pattern in patterns:
            if pattern.startswith("!"):
                exclude.append(compile_pattern(pattern[1:]))
            else:
                include.append(compile_pattern(pattern))
        if not include and exclude:
            include.append(Glob("**"))
        has_regex = any(isinstance(m, Regex) for m in (*include, *exclude))
        return cls(
            tuple(patterns), tuple(include), tuple(exclude), max_length, when_too_long, has_regex
        )

    def matches(self, name: str) -> bool:
        if self._has_regex and len(name) > self.max_length:
            return self.when_too_long
        include, exclude = self.include, self.exclude
        if len(include) == 1:  # the usual selector, once per tag: no generator
            if not include[0].matches(name):
                return False
        elif not any(p.matches(name) for p in include):
            return False
        return not exclude or not any(p.matches(name) for p in exclude)


ALL = Selector.parse(["**"])
