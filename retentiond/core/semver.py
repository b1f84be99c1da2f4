"""Semantic versions in tag names (``1.2.3``, ``v1.2.3-rc.1``, ``1.2.3+b``), in semver 2.0 order."""

from __future__ import annotations

import re
from functools import total_ordering

_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)


@total_ordering
class Version:
    __slots__ = ("core", "pre")

    def __init__(self, core: tuple[int, int, int], pre: tuple[str, ...]) -> None:
        self.core = core
        self.pre = pre

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]:
        # a release sorts above its pre-releases; numeric identifiers below alphanumeric ones
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return self.core, (0 if self.pre else 1), ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def parse_version(tag: str) -> Version | None:
    m = _SEMVER.fullmatch(tag)
    if m is None:
        return None
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return Version((int(m.group(1)), int(m.group(2)), int(m.group(3))), pre)
