"""Manifests an earlier read parsed, taken by a later read of the same tree instead of parsing
them again.

A maintenance run reads the tree twice: the preview, while the registry still takes pushes,
and the frozen read inside the read-only window, seconds or minutes later. Parsing and packing
the manifests is most of a read (at 50,000 tags, 70% of it), and it was all done once already:
a manifest blob is named by the sha256 of its bytes. The preview keeps what it parsed
(:class:`ParsedBefore`: each manifest's packed record, its blob table's digests and sizes); the
frozen read (:class:`Reuse`) still lists the blob store, reads every link and every manifest
blob's ``data`` the way a fresh read does (a ``data`` swapped for a link since the preview is
refused as it would be), and takes the earlier record instead of parsing only when:

- the bytes it reads now hash to the manifest's digest, and the bytes the preview parsed did
  too (so they are the same bytes);
- every blob the manifest names has a blob now, as it had then (its ids are put through the
  map from the earlier table's ids to the new one's when the two differ: pushes during the
  preview, a GC of held runs);
- every size it states is the size the earlier read settled on for that blob (no descriptor
  disagreed with another or with the blob's own data), or it states none.

The frozen read's inventory is then the one a fresh read gives (``tests/unit/
test_reader_reuse.py`` compares them on trees changed in every way between the two reads).
Anything else is parsed as by any read.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from hashlib import sha256
from typing import NamedTuple

from retentiond.core.blob_table import NO_ID, BlobTable, id_map
from retentiond.core.manifest_table import ManifestTable, record_blob_ids, remap_record


@dataclass
class ParsedBefore:
    """What an earlier read parsed, for a later read to take (see the module doc): packed
    records over the earlier blob table, whose digests and sizes are kept with them."""

    #: the earlier blob table's raw digests (:meth:`BlobTable.packed`); emptied by the read
    #: that takes them (:class:`Reuse`), once it has mapped them to its own ids
    keys: bytes
    #: the earlier table's sizes, by its ids
    sizes: array[int]
    #: the earlier blob ids of the manifests kept, ascending; their records one after another
    #: in ``records``, each ending at its ``ends``
    ids: array[int]
    records: bytes
    ends: array[int]
    #: the earlier ids of the manifests kept that state no size
    silent: frozenset[int]
    #: children and subject of the manifests kept that have either, by earlier id
    extras: dict[int, tuple[tuple[str, ...], str | None]]
    #: how many the read that took it used instead of parsing
    reused: int = field(default=0, compare=False)
    #: a read took it (and let go of its records)
    released: bool = field(default=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def release(self) -> None:
        """Let go of the records once a read has taken them (only ``reused`` stays)."""
        self.keys, self.records, self.silent, self.extras = b"", b"", frozenset(), {}
        self.sizes, self.ids, self.ends = array("q"), array("I"), array("Q")
        self.released = True


class KeptFromRead(NamedTuple):
    """What a read that keeps its manifests noted beside them (from its workers)."""

    #: parsed manifests not to keep: their bytes do not hash to their digest, or they state
    #: sizes for some of their blobs only
    skip: set[int]
    #: parsed manifests that state no size
    silent: set[int]
    #: blobs some descriptor states a size for that is not the size the read settled on
    mixed: bytearray


def keep_parsed(table: ManifestTable, blobs: BlobTable, kept: KeptFromRead) -> ParsedBefore:
    """The manifests of a finished read (``table`` over ``blobs``, its sizes final) that a
    later read may take (see the module doc)."""
    ids = array("I")
    ends = array("Q")
    parts: list[bytes] = []
    extras: dict[int, tuple[tuple[str, ...], str | None]] = {}
    skip, mixed = kept.skip, kept.mixed
    any_mixed = 1 in mixed
    at = 0
    for blob_id, record, children, subject in table.complete_records():
        if blob_id in skip or (any_mixed and any(mixed[i] for i in record_blob_ids(record))):
            continue
        ids.append(blob_id)
        parts.append(record)
        at += len(record)
        ends.append(at)
        if children or subject is not None:
            extras[blob_id] = (children, subject)
    keys, sizes = blobs.packed()  # the table's own (never written once the read is done)
    silent = frozenset(i for i in kept.silent if i not in skip)
    return ParsedBefore(keys, sizes, ids, b"".join(parts), ends, silent, extras)


class Reused(NamedTuple):
    """An earlier record as the later read takes it."""

    record: bytes  # over the later read's blob table
    children: tuple[str, ...]
    subject: str | None
    #: the sizes its descriptors state, in the order of its blob ids (None: it states none)
    stated: array[int] | None


class Reuse:
    """A :class:`ParsedBefore` over a later read's blob table ``blobs`` (see the module doc).

    Built in the reader's parent once the blob table exists; its workers have it through the
    fork, as they have the table."""

    def __init__(self, before: ParsedBefore, blobs: BlobTable) -> None:
        if before.released:
            raise ValueError("these manifests were taken by a read already")
        keys = blobs.packed()[0]
        self._before, self._keys = before, keys
        self._new_ids = None if before.keys == keys else id_map(before.keys, keys)
        before.keys = b""  # mapped: not held through the read
        at = array("I", [NO_ID]) * blobs.id_count  # new id -> index of its record
        new_ids = self._new_ids
        for index, old in enumerate(before.ids):
            new = old if new_ids is None else new_ids[old]
            if new != NO_ID:
                at[new] = index
        self._at = at

    def take(self, blob_id: int, data: bytes) -> Reused | None:
        """The earlier record of the manifest of blob ``blob_id`` whose ``data`` was just
        read, when it may be taken; None: parse it."""
        index = self._at[blob_id]
        if index == NO_ID:
            return None
        if sha256(data).digest() != self._keys[blob_id << 5 : (blob_id + 1) << 5]:
            return None
        before = self._before
        record = before.records[before.ends[index - 1] if index else 0 : before.ends[index]]
        old_id = before.ids[index]
        stated = None
        if old_id not in before.silent:
            stated = array("q", map(before.sizes.__getitem__, record_blob_ids(record)))
        if self._new_ids is not None:
            remapped = remap_record(record, self._new_ids)
            if remapped is None:
                return None
            record = remapped
        children, subject = before.extras.get(old_id, ((), None))
        return Reused(record, children, subject, stated)
