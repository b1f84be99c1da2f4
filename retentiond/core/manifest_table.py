"""Every manifest blob that links name, as packed records by blob id: what the GC marks.

A registry of a million tags holds some 1.2 million manifests; as :class:`Manifest` values
with their digest strings they would take GiBs. A :class:`ManifestTable` keeps each as a
record of ~60 bytes at its blob id (see :class:`~retentiond.core.blob_table.BlobTable`), and
the few strings reachability needs (index children, subjects) beside; a :class:`Manifest` is
built on access. The storage reader's workers pack records (:func:`pack_manifest`) and the
parent adds them; nothing outside this module reads a record's bytes.

A record: a header (struct ``=IBBH``: the manifest's own blob id, its media type's code, an
index into :data:`MANIFEST_MEDIA_TYPES`, flags, the number of children), then one unsigned
32-bit blob id per reference, the children's first, then the blobs' (the config first when
there is one, then the layers). A reference without a blob has ``NO_ID``; its digest is kept
in the manifest's ``absent`` strings, in order. A manifest whose blob exists but does not parse
has a header and no reference: the GC still marks its blob.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import NamedTuple

from retentiond.core.blob_table import NO_ID, BlobTable, IdLookup
from retentiond.core.values import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_SCHEMA1,
    Manifest,
)

#: the media types of the manifests the registry stores (a record's code is an index into it)
MANIFEST_MEDIA_TYPES = (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_SCHEMA1,
)
_CODES = {media_type: code for code, media_type in enumerate(MANIFEST_MEDIA_TYPES)}
#: the code of a schema1 manifest (distribution v3 cannot serve one)
_SCHEMA1 = _CODES[MEDIA_SCHEMA1]
#: where the media type's code is in a record
_CODE = 4
#: record header: own blob id, media type code, flags, number of children
_HEADER = struct.Struct("=IBBH")
#: where the flags are in a record
_FLAGS = 5
#: the most children a record counts (16 bits); the parser refuses larger indexes
MAX_CHILDREN = 0xFFFF
#: flags: the manifest parsed; it has a config (the first of its blobs)
_PARSED = 1
_HAS_CONFIG = 2


class PackedManifest(NamedTuple):
    """A manifest as :class:`ManifestTable` keeps it (see :func:`pack_manifest`); a tuple:
    the reader makes one per manifest blob."""

    record: bytes
    children: tuple[str, ...] = ()
    subject: str | None = None
    #: the referenced digests that have no blob, in order (their ids are NO_ID)
    absent: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        """Nothing but the record: no children, subject or absent blobs (the reader sends
        such a manifest as its record alone: see :meth:`ManifestTable.add_records`)."""
        return not self.children and self.subject is None and not self.absent

    @property
    def blob_id(self) -> int:
        """The id of the manifest's own blob."""
        blob_id: int = _HEADER.unpack_from(self.record)[0]
        return blob_id

    @property
    def blob_ids(self) -> memoryview:
        """The ids of the blobs it references (config, layers; not its children), in the
        order of ``Manifest.blobs``; ``NO_ID`` for those without a blob."""
        n_children = _HEADER.unpack_from(self.record)[3]
        return _references(self.record)[n_children:]


def _references(record: bytes) -> memoryview:
    """The blob ids a packed record references: its children's, then its blobs'."""
    return memoryview(record)[_HEADER.size :].cast("I")


def pack_manifest(manifest: Manifest | None, blob_id: int, blobs: IdLookup) -> PackedManifest:
    """Pack ``manifest`` (None: its blob exists but does not parse), whose blob has id
    ``blob_id``, for a ManifestTable over the table ``blobs`` looks up."""
    if manifest is None:
        return PackedManifest(_HEADER.pack(blob_id, 0, 0, 0))
    if len(manifest.children) > MAX_CHILDREN:
        raise ValueError(
            f"manifest {manifest.digest} has {len(manifest.children)} children; a record holds "
            f"at most {MAX_CHILDREN}"
        )
    code = _CODES.get(manifest.media_type)
    if code is None:
        raise ValueError(
            f"manifest {manifest.digest} has media type {manifest.media_type!r}; a record "
            f"holds one of {', '.join(MANIFEST_MEDIA_TYPES)}"
        )
    flags = _PARSED | (_HAS_CONFIG if manifest.config else 0)
    references = manifest.references
    found = blobs.ids_of(references)
    absent: tuple[str, ...] = ()
    if -1 in found:
        absent = tuple(digest for digest, ref in zip(references, found, strict=True) if ref < 0)
        found = [NO_ID if ref < 0 else ref for ref in found]
    ids = array("I", found)
    header = _HEADER.pack(blob_id, code, flags, len(manifest.children))
    return PackedManifest(header + ids.tobytes(), manifest.children, manifest.subject, absent)


def record_blob_ids(record: bytes) -> memoryview:
    """:attr:`PackedManifest.blob_ids` of a bare record."""
    return _references(record)[_HEADER.unpack_from(record)[3] :]


def record_config_id(record: bytes) -> int | None:
    """The blob id of a record's config (``NO_ID``: it has no blob), None when it has none."""
    if not record[_FLAGS] & _HAS_CONFIG:
        return None
    config: int = _references(record)[_HEADER.unpack_from(record)[3]]
    return config


def remap_record(record: bytes, new_ids: Sequence[int]) -> bytes | None:
    """``record`` over another blob table: its own id and every reference put through
    ``new_ids`` (an id of this record's table -> the id of the same digest in the other, or
    ``NO_ID``). None when a blob it names has no id there, or had none here (its digest is
    kept beside the record, not in it)."""
    own, code, flags, n_children = _HEADER.unpack_from(record)
    new_own = new_ids[own]
    refs = _references(record).tolist()
    if new_own == NO_ID or NO_ID in refs:
        return None
    mapped = array("I", map(new_ids.__getitem__, refs))
    if NO_ID in mapped:
        return None
    return _HEADER.pack(new_own, code, flags, n_children) + mapped.tobytes()


class ManifestTable(Mapping[str, Manifest]):
    """Every manifest blob that tags and revision links name: digest -> :class:`Manifest`.

    A manifest whose blob exists but does not parse has a record (the GC still marks its
    blob) but is not a key of the mapping. The planner's hot paths use blob ids
    (:meth:`mark`, :meth:`claim`) or the strings kept beside the records
    (:meth:`children_of`, :meth:`subject_of`), never a Manifest.
    """

    __slots__ = ("_absent", "_blobs", "_children", "_parsed", "_records", "_schema1", "_subjects")

    def __init__(self, blobs: BlobTable) -> None:
        self._blobs = blobs
        self._records: list[bytes | None] = [None] * blobs.id_count
        self._children: dict[str, tuple[str, ...]] = {}
        self._subjects: dict[str, str] = {}
        self._absent: dict[str, tuple[str, ...]] = {}
        self._parsed = 0
        self._schema1: set[int] = set()

    @property
    def blobs(self) -> BlobTable:
        """The table whose ids the records hold."""
        return self._blobs

    def add(self, digest: str, packed: PackedManifest) -> None:
        """Add the manifest of ``digest`` (its first record is kept: a blob is one manifest)."""
        blob_id = packed.blob_id
        if blob_id == NO_ID:
            raise ValueError(f"manifest {digest} has no blob: a ManifestTable keeps records by id")
        if self._records[blob_id] is not None:
            return
        self._records[blob_id] = packed.record
        if packed.record[_FLAGS] & _PARSED:
            self._parsed += 1
            if packed.record[_CODE] == _SCHEMA1:
                self._schema1.add(blob_id)
        if packed.children:
            self._children[digest] = packed.children
        if packed.subject is not None:
            self._subjects[digest] = packed.subject
        if packed.absent:
            self._absent[digest] = packed.absent

    def add_records(self, records: Iterable[bytes]) -> None:
        """:meth:`add` for records with a blob and nothing else (``PackedManifest.plain``)."""
        table, header = self._records, _HEADER
        for record in records:
            blob_id = header.unpack_from(record)[0]
            if table[blob_id] is None:
                table[blob_id] = record
                if record[_FLAGS] & _PARSED:
                    self._parsed += 1
                    if record[_CODE] == _SCHEMA1:
                        self._schema1.add(blob_id)

    def _record(self, digest: str) -> bytes | None:
        blob_id = self._blobs.id_of(digest)
        return self._records[blob_id] if blob_id >= 0 else None

    # -- what the planner needs, without building Manifest values --

    def children_of(self, digest: str) -> tuple[str, ...]:
        return self._children.get(digest, ())

    @property
    def parents(self) -> Collection[str]:
        """The manifests that have children (lists and indexes)."""
        return self._children.keys()

    def subject_of(self, digest: str) -> str | None:
        return self._subjects.get(digest)

    @property
    def has_subjects(self) -> bool:
        """True when a manifest names a ``subject`` (signatures, SBOMs)."""
        return bool(self._subjects)

    def config_of(self, digest: str) -> str | None:
        record = self._record(digest)
        if record is None or not record[_FLAGS] & _HAS_CONFIG:
            return None
        n_children = _HEADER.unpack_from(record)[3]
        ids = _references(record)
        if ids[n_children] != NO_ID:
            return self._blobs.digest_of(ids[n_children])
        return self._absent[digest][sum(1 for i in ids[:n_children] if i == NO_ID)]

    @property
    def schema1_ids(self) -> AbstractSet[int]:
        """The blob ids of the schema1 manifests (``application/vnd.docker.distribution.
        manifest.v1+prettyjws``), which distribution v3 cannot serve."""
        return self._schema1

    def has_record(self, blob_id: int) -> bool:
        """True when the manifest of blob ``blob_id`` was read (parsed or not)."""
        return self._records[blob_id] is not None

    def children_ids(self, blob_id: int) -> Sequence[int]:
        """The blob ids of an index's children (``NO_ID`` for those without a blob)."""
        record = self._records[blob_id]
        if record is None:
            return ()
        n_children = _HEADER.unpack_from(record)[3]
        return _references(record)[:n_children]

    def mark(self, blob_ids: Iterable[int], marks: bytearray) -> None:
        """Mark what the registry's GC marks for revision links to the manifests of
        ``blob_ids``: each manifest blob and every blob it references (children, config,
        layers; not recursively)."""
        records = self._records
        for blob_id in blob_ids:
            marks[blob_id] = 1
            record = records[blob_id]
            if record is not None:
                for ref in _references(record):
                    if ref != NO_ID:
                        marks[ref] = 1

    def claim(self, blob_ids: Iterable[int], unclaimed: bytearray) -> int:
        """The bytes of the blobs flagged in ``unclaimed`` among the manifests of ``blob_ids``
        and what they reference; their flags are cleared (a blob is claimed once)."""
        records, sizes = self._records, self._blobs.sizes
        total = 0
        for blob_id in blob_ids:
            if unclaimed[blob_id]:
                unclaimed[blob_id] = 0
                total += sizes[blob_id]
            record = records[blob_id]
            if record is not None:
                for ref in _references(record):
                    if ref != NO_ID and unclaimed[ref]:
                        unclaimed[ref] = 0
                        total += sizes[ref]
        return total

    def complete_records(self) -> Iterator[tuple[int, bytes, tuple[str, ...], str | None]]:
        """``(blob id, record, children, subject)`` of each manifest that parsed and whose
        references all have blobs, in id order: a record that means the same over another
        table once its ids are put through :func:`remap_record`."""
        by_id = {self._blobs.id_of(d): s for d, s in self._subjects.items()}
        digest_of = self._blobs.digest_of
        for blob_id, record in enumerate(self._records):
            if record is None or not record[_FLAGS] & _PARSED:
                continue
            if NO_ID in _references(record).tolist():
                continue
            n_children = _HEADER.unpack_from(record)[3]
            children = self._children[digest_of(blob_id)] if n_children else ()
            yield blob_id, record, children, by_id.get(blob_id)

    # -- the mapping --

    def __len__(self) -> int:
        return self._parsed

    def __contains__(self, digest: object) -> bool:
        record = self._record(digest) if isinstance(digest, str) else None
        return record is not None and bool(record[_FLAGS] & _PARSED)

    def __getitem__(self, digest: str) -> Manifest:
        record = self._record(digest) if isinstance(digest, str) else None
        if record is None or not record[_FLAGS] & _PARSED:
            raise KeyError(digest)
        _, code, flags, n_children = _HEADER.unpack_from(record)
        absent = iter(self._absent.get(digest, ()))
        refs = [
            next(absent) if i == NO_ID else self._blobs.digest_of(i) for i in _references(record)
        ]
        blobs = tuple(refs[n_children:])
        return Manifest(
            digest=digest,
            media_type=MANIFEST_MEDIA_TYPES[code],
            blobs=blobs,
            children=tuple(refs[:n_children]),
            subject=self._subjects.get(digest),
            config=blobs[0] if flags & _HAS_CONFIG else None,
        )

    def __iter__(self) -> Iterator[str]:
        digest_of = self._blobs.digest_of
        for blob_id, record in enumerate(self._records):
            if record is not None and record[_FLAGS] & _PARSED:
                yield digest_of(blob_id)
