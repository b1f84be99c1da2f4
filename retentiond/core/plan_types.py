"""The plan: what a maintenance run would remove, and why. Built by :mod:`retentiond.core.plan`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from retentiond.core.inventory import Problem


class TagDeletion(NamedTuple):
    """A tag to delete (a tuple, as is :class:`ManifestUnlink`: a plan holds a million)."""

    repository: str
    tag: str
    digest: str
    pushed_at: datetime
    policy: str
    reason: str


class ManifestUnlink(NamedTuple):
    """A revision link to remove: ``<repository>/_manifests/revisions/sha256/<hex>``."""

    repository: str
    digest: str
    reason: str
    policy: str | None = None


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


@dataclass(frozen=True, slots=True)
class Plan:
    generated_at: datetime
    root: str
    repositories: int
    tags: int
    tags_deleted: tuple[TagDeletion, ...]
    manifests_unlinked: tuple[ManifestUnlink, ...]
    repositories_removed: tuple[str, ...]
    refused: tuple[Refusal, ...]
    #: every blob the registry's GC will delete after these removals: digest -> size of its data
    reclaimable: Mapping[str, int]
    per_repository: tuple[RepositorySummary, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: blobs with no revision link leading to them before any removal (already garbage)
    already_unreferenced: Mapping[str, int] = field(default_factory=dict)

    @property
    def bytes_reclaimed(self) -> int:
        return sum(self.reclaimable.values())

    @property
    def gc_blocked(self) -> bool:
        """True when the tree holds something that makes the registry's GC abort or destroy data."""
        from retentiond.core.inventory import ProblemKind

        return any(p.kind in (ProblemKind.GC_ABORT, ProblemKind.GC_HAZARD) for p in self.problems)
