"""The plan: what a maintenance run would remove, and why. Built by :mod:`retentiond.core.plan`."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import NamedTuple, TypeVar, overload

from retentiond.core.protection import ProtectionSource
from retentiond.core.values import Problem, ProblemKind


class TagDeletion(NamedTuple):
    """A tag to delete (a tuple, as is :class:`ManifestUnlink`: a plan holds a million)."""

    repository: str
    tag: str
    digest: str
    pushed_at: datetime
    policy: str
    reason: str
    #: when the tag was last pulled (see :mod:`retentiond.core.pulls`); None without tracking
    pulled_at: datetime | None = None


class ManifestUnlink(NamedTuple):
    """A revision link to remove: ``<repository>/_manifests/revisions/sha256/<hex>``."""

    repository: str
    digest: str
    reason: str
    policy: str | None = None


class ProtectedKeep(NamedTuple):
    """A tag (``tag`` set) or manifest (``tag`` None) a policy would have removed, kept
    because ``protect:`` says it is in use: ``reason`` says by what, ``policy`` and
    ``would_delete`` what would have removed it."""

    repository: str
    tag: str | None
    digest: str
    policy: str | None
    would_delete: str
    reason: str


T = TypeVar("T")


class PlanEntries(Sequence[T]):
    """A plan's tag deletions or manifest unlinks, built a repository at a time when read.

    A plan of a million tag deletions and as many unlinks takes some 450 MB as tuples with their
    strings and datetimes; the planner keeps, per repository, the positions of its entries in
    the inventory's compact columns (about 8 bytes an entry), and ``build`` makes the tuples
    again on each read. Behaves as the tuple it stands for: ``len``, indexing, slicing,
    iteration in order, ``==`` with a tuple or another PlanEntries. Reading it through costs
    what making the tuples costs, so code that needs the entries more than once keeps what it
    needs of them (a set of names, say), not the sequence's iteration in a loop.
    """

    __slots__ = ("_ends", "_parts")

    def __init__(self, parts: Iterable[tuple[int, Callable[[], Sequence[T]]]] = ()) -> None:
        #: (how many entries, the function that makes them), one per repository with entries
        self._parts = [(count, build) for count, build in parts if count]
        self._ends = list(accumulate(count for count, _ in self._parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[T]:
        for count, build in self._parts:
            entries = build()
            assert len(entries) == count, "a part builds as many entries as it counted"
            yield from entries

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError("plan entry index out of range")
        part = bisect_right(self._ends, position)
        start = self._ends[part - 1] if part else 0
        return self._parts[part][1]()[position - start]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlanEntries | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return repr(tuple(self))


@dataclass(frozen=True, slots=True)
class Refusal:
    repository: str
    reason: str


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    tags: int
    tags_deleted: int
    manifests_unlinked: int
    bytes_reclaimed: int  # bytes freed by blobs that only this repository's removals release
    removed: bool
    refused: bool
    #: the tags (in name order) whose manifest is schema1: distribution v3 cannot serve them
    schema1_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    generated_at: datetime
    root: str
    repositories: int
    tags: int
    #: a tuple, or (from make_plan) PlanEntries that build the tuples as they are read
    tags_deleted: Sequence[TagDeletion]
    manifests_unlinked: Sequence[ManifestUnlink]
    repositories_removed: tuple[str, ...]
    refused: tuple[Refusal, ...]
    #: every blob the registry's GC will delete after these removals: digest -> size of its data
    reclaimable: Mapping[str, int]
    per_repository: tuple[RepositorySummary, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: blobs with no revision link leading to them before any removal (already garbage)
    already_unreferenced: Mapping[str, int] = field(default_factory=dict)
    #: in-use protection (``protect:``): what it kept against the policies, how many tags it
    #: protects in all, and why a source could not be read (then no maintenance deletes)
    protected: tuple[ProtectedKeep, ...] = ()
    protected_tags: int = 0
    protection_sources: tuple[ProtectionSource, ...] = ()

    @property
    def protection_problems(self) -> tuple[str, ...]:
        """Why protection sources could not be read (then no maintenance deletes anything)."""
        return tuple(f"{s.kind} {s.source}: {s.error}" for s in self.protection_sources if s.error)

    @property
    def bytes_reclaimed(self) -> int:
        return sum(self.reclaimable.values())

    @property
    def gc_blocked(self) -> bool:
        """True when the tree holds something that makes the registry's GC abort or destroy data."""
        return any(p.kind in (ProblemKind.GC_ABORT, ProblemKind.GC_HAZARD) for p in self.problems)
