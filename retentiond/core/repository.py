"""One repository's tags and revision links, compact: blob ids and timestamps in columns.

A registry of a million tags would take ~300 bytes a tag as :class:`Tag` values with their
strings and datetimes; :class:`RepositoryColumns` take about 40: the tag names joined in one
string, the digests as blob ids of the inventory's
:class:`~retentiond.core.blob_table.BlobTable`, the times as POSIX timestamps in arrays. A
:class:`Repository` builds Tag values and datetimes from them when asked.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from retentiond.core.blob_table import NO_ID, BlobTable
from retentiond.core.values import Tag


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


class LinkColumns(NamedTuple):
    """:class:`RepositoryColumns` but the blob table: what :func:`pack_links` makes (the
    reader's workers send them back; the parent has the table)."""

    tag_names: str
    tag_ids: array[int]
    tag_times: array[float]
    revision_ids: array[int]
    revision_times: array[float]
    absent: tuple[str, ...]

    @classmethod
    def empty(cls) -> LinkColumns:
        """No tag, no revision (a repository that could not be read)."""
        return cls("", array("I"), array("d"), array("I"), array("d"), ())


def pack_links(
    tags: Sequence[tuple[str, str, float]], revisions: Mapping[str, float], blobs: BlobTable
) -> LinkColumns:
    """The columns of a repository's tags (``(name, digest, POSIX time)``, in name order) and
    revision links (digest -> POSIX time, in any order), over ``blobs``.

    A digest with no blob gets ``NO_ID``, and its string goes to ``absent``."""
    revision_ids = blobs.ids_of(revisions)
    known = dict(zip(revisions, revision_ids, strict=True))  # tags name revisions, mostly
    tag_ids = [known[t[1]] if t[1] in known else blobs.id_of(t[1]) for t in tags]
    absent = [d for d, i in zip(revisions, revision_ids, strict=True) if i < 0]
    absent += [t[1] for t, i in zip(tags, tag_ids, strict=True) if i < 0]
    return LinkColumns(
        "\0".join(t[0] for t in tags),
        array("I", (NO_ID if i < 0 else i for i in tag_ids)),
        array("d", (t[2] for t in tags)),
        array("I", (NO_ID if i < 0 else i for i in revision_ids)),
        array("d", revisions.values()),
        tuple(absent),
    )


@dataclass(frozen=True, eq=False, slots=True)
class RepositoryColumns:
    """A repository's tags and revision links, compact (see :func:`pack_links`).

    Digests are blob ids of ``blobs``; a digest with no blob has ``NO_ID`` and its string is
    in ``absent`` (revisions' first, then tags', in order). Times are POSIX timestamps.
    """

    blobs: BlobTable
    #: tag names, sorted, joined by NUL (no file name holds one)
    tag_names: str
    tag_ids: array[int]
    tag_times: array[float]
    revision_ids: array[int]
    revision_times: array[float]
    absent: tuple[str, ...] = ()

    def revision_digests(self) -> list[str]:
        """The digest of each revision, in order."""
        absent = iter(self.absent)
        return [
            d if d is not None else next(absent) for d in self.blobs.digests_of(self.revision_ids)
        ]

    def tags_at(self, positions: Sequence[int]) -> list[Tag]:
        """The tags at ``positions`` (indexes in tag order), without building the others."""
        if self.absent:
            tags, _ = self.materialize()
            return [tags[p] for p in positions]
        names, ids, times = self.tag_names.split("\0"), self.tag_ids, self.tag_times
        digests = self.blobs.digests_of([ids[p] for p in positions])
        out: list[Tag] = []
        for position, digest in zip(positions, digests, strict=True):
            assert digest is not None, "a tag without a blob has its digest in absent"
            out.append(Tag(names[position], digest, _utc(times[position])))
        return out

    def materialize(self) -> tuple[tuple[Tag, ...], Mapping[str, datetime]]:
        """``(tags, revisions)`` as plain values."""
        revision_digests = self.revision_digests()
        absent = iter(self.absent[self.revision_ids.count(NO_ID) :])  # the tags' ones
        revisions = _Timestamps(dict(zip(revision_digests, self.revision_times, strict=True)))
        # a tag's digest is the same string as its revision's
        known = dict(zip(self.revision_ids, revision_digests, strict=True))
        known.pop(NO_ID, None)
        tag_digests: list[str] = []
        for blob_id in self.tag_ids:
            text = known.get(blob_id)
            if text is None:
                text = next(absent) if blob_id == NO_ID else self.blobs.digest_of(blob_id)
            tag_digests.append(text)
        names = self.tag_names.split("\0") if self.tag_ids else []
        tags = tuple(map(Tag, names, tag_digests, map(_utc, self.tag_times)))
        return tags, revisions


class _Timestamps(Mapping[str, datetime]):
    """Digest -> time, kept as POSIX timestamps; a datetime is made when one is asked for."""

    __slots__ = ("_times",)

    def __init__(self, times: dict[str, float]) -> None:
        self._times = times

    def __getitem__(self, digest: str) -> datetime:
        return _utc(self._times[digest])

    def __contains__(self, digest: object) -> bool:
        return digest in self._times

    def __iter__(self) -> Iterator[str]:
        return iter(self._times)

    def __len__(self) -> int:
        return len(self._times)

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == other if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class Repository:
    """One repository directory under ``repositories/``.

    ``revisions`` maps each manifest digest with a readable revision link to that link's mtime
    (the last push of that manifest into this repository). ``listed_by_gc`` is the registry
    2.8 catalog rule: the repository has a ``_layers`` directory. ``last_activity`` is the newest
    sign of a push in progress or done (revision links, ``_layers``, ``_uploads``).

    ``tags`` and ``revisions`` are built from ``columns`` on first access, then kept. Code that
    walks every repository once, like the planner, calls :meth:`materialize` instead, which
    keeps nothing, or uses the blob ids (:attr:`tag_ids`, :attr:`revision_ids`).
    """

    __slots__ = (
        "_revisions",
        "_tags",
        "columns",
        "has_nested",
        "last_activity",
        "layers",
        "listed_by_gc",
        "name",
    )

    def __init__(
        self,
        name: str,
        columns: RepositoryColumns,
        listed_by_gc: bool = True,
        last_activity: datetime | None = None,
        layers: frozenset[str] | None = None,
        has_nested: bool = False,
    ) -> None:
        self.name = name
        self.columns = columns
        self._tags: tuple[Tag, ...] | None = None
        self._revisions: Mapping[str, datetime] | None = None
        self.listed_by_gc = listed_by_gc
        self.last_activity = last_activity
        #: blobs linked under ``_layers`` (read only for ``verify``; None when not read)
        self.layers = layers
        #: the repository directory has other repositories nested in it
        self.has_nested = has_nested

    def __repr__(self) -> str:
        return f"Repository({self.name!r}, {self.tag_count} tags)"

    def materialize(self) -> tuple[tuple[Tag, ...], Mapping[str, datetime]]:
        """``(tags, revisions)``, built now from the columns (and not kept) if need be."""
        if self._tags is not None and self._revisions is not None:
            return self._tags, self._revisions
        return self.columns.materialize()

    @property
    def tags(self) -> tuple[Tag, ...]:
        """In name order."""
        if self._tags is None:
            self._tags, self._revisions = self.materialize()
        return self._tags

    @property
    def revisions(self) -> Mapping[str, datetime]:
        if self._revisions is None:
            self._tags, self._revisions = self.materialize()
        return self._revisions

    @property
    def tag_count(self) -> int:
        return len(self.columns.tag_ids)

    @property
    def revision_count(self) -> int:
        return len(self.columns.revision_ids)

    def tags_at(self, positions: Sequence[int]) -> list[Tag]:
        """``[tags[p] for p in positions]``, built now from the columns if need be."""
        if self._tags is not None:
            return [self._tags[p] for p in positions]
        return self.columns.tags_at(positions)

    def revision_digests(self) -> list[str]:
        """The digests of ``revisions``, in order."""
        if self._revisions is not None:
            return list(self._revisions)
        return self.columns.revision_digests()

    @property
    def tag_ids(self) -> array[int]:
        """The blob id of each tag's manifest (``NO_ID`` when it has no blob), in ``tags``
        order."""
        return self.columns.tag_ids

    @property
    def revision_ids(self) -> array[int]:
        """The blob id of each revision (``NO_ID`` when it has no blob), in ``revisions``
        order."""
        return self.columns.revision_ids
