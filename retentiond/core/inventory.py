"""What the storage tree holds, as plain values.

The storage reader builds an :class:`Inventory`; the planner and the verifier read it. Digests are
strings of the form ``sha256:<64 hex>``. Times are timezone-aware UTC datetimes.

A registry of a million tags holds some 3.5 million blobs and 1.2 million manifests. As dicts of
digest strings and Tag objects that would take several GiB, so what the reader builds is compact:
:class:`BlobTable` (blob digest -> size, 40 bytes a blob) gives each blob an integer id;
:class:`ManifestTable` (manifest digest -> :class:`Manifest`, built on access) keeps a packed
record of blob ids per manifest; a :class:`Repository` keeps its tags and revision links as
:class:`RepositoryColumns` (blob ids, timestamps) and builds Tag values when asked. All of them
behave as the plain values and mappings they stand for; the planner's hot paths use blob ids.
Inventories written by hand (tests) may use plain dicts and tuples: they are converted.
"""

from __future__ import annotations

import enum
import struct
from array import array
from collections.abc import Collection, ItemsView, Iterable, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, compress
from typing import NamedTuple, Protocol

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: The Accept header that makes the registry answer every manifest as stored.
ALL_MANIFEST_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)


class ProblemKind(enum.Enum):
    """How much a problem in the tree matters."""

    #: We could not read or trust something; the repository it belongs to is left alone.
    UNREADABLE = "unreadable"
    #: The registry's garbage collector would stop with an error on this; no GC may run.
    GC_ABORT = "gc-abort"
    #: The registry's garbage collector would delete data that a tag still needs; no GC may run.
    GC_HAZARD = "gc-hazard"
    #: An image is incomplete (a referenced blob is missing); reported, decides nothing.
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the tree we cannot trust, with the path that shows it."""

    path: str
    message: str
    kind: ProblemKind
    repository: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.kind.value}]"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest blob: what it references.

    ``blobs`` are the config and layer blobs (what the GC marks for an image manifest);
    ``children`` are the manifests a list/index references (marked, not recursed into, by the
    GC of registry 2.8).
    """

    digest: str
    media_type: str
    blobs: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    subject: str | None = None
    config: str | None = None
    platform: str | None = None
    #: the sizes the descriptors of ``blobs`` state (-1: none stated); not kept in the table
    blob_sizes: tuple[int, ...] = field(default=(), compare=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)

    @property
    def references(self) -> tuple[str, ...]:
        """Every digest the registry's GC marks when it marks this manifest."""
        return self.children + self.blobs


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    digest: str
    pushed_at: datetime


#: in packed id arrays: a digest with no blob on disk
NO_ID = 0xFFFFFFFF
#: digests are spread over 2**16 shards by their first two bytes
_SHARDS = 1 << 16
#: bytes.translate table that turns 0 into 1 and 1 into 0 (flags by blob id)
_FLIP = bytes([1, 0]) + bytes(254)


def digest_bytes(digest: str) -> bytes | None:
    """The 32 raw bytes of a canonical ``sha256:<64 lowercase hex>`` digest, else None."""
    if len(digest) != 71 or not digest.startswith("sha256:"):
        return None
    hexpart = digest[7:]
    try:
        raw = bytes.fromhex(hexpart)
    except ValueError:
        return None
    # 32 bytes out of 64 characters: hex digits only; canonical means lowercase
    return raw if len(raw) == 32 and (hexpart.islower() or hexpart.isdigit()) else None


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


class BlobTable(Mapping[str, int]):
    """Every blob with data: digest -> size of its ``data`` file, in 40 bytes a blob (the
    reader may take a layer's size from the manifests that state it: see its module doc).

    A dict would cost ~200 bytes a blob (the digest string alone takes 120). Here the digests
    are 32 raw bytes each in one byte string, grouped by their first two bytes (65536 shards,
    with an offset table), and the sizes are one array. A lookup is a ``bytes.find`` within
    one shard: a few dozen entries at a million tags. A blob's id is its position,
    ``0 .. len - 1``; the rest of the inventory refers to blobs by id instead of digest
    strings, and the mark phase keeps its flags in byte arrays indexed by it. Keys that are
    not canonical sha256 digests (only ever given by hand) are kept in a small dict, after the
    others.
    """

    __slots__ = ("_base", "_extra", "_extra_digests", "_keys", "_sizes")

    def __init__(
        self,
        keys: bytes = b"",
        counts: Iterable[int] = (),
        sizes: array[int] | None = None,
        extra: Iterable[tuple[str, int]] = (),
    ) -> None:
        """``keys``: raw 32-byte digests, shard by shard (no duplicates); ``counts``: how many
        in each of the 65536 shards (none: all empty); ``sizes`` in the same order."""
        self._keys = keys
        self._base = array("Q", [0])
        self._base.extend(accumulate(counts))
        if len(self._base) == 1:
            self._base.extend(array("Q", [0]) * _SHARDS)
        if len(self._base) != _SHARDS + 1 or self._base[-1] * 32 != len(keys):
            raise ValueError("a BlobTable needs 65536 shard counts that add up to its keys")
        self._sizes: array[int] = sizes if sizes is not None else array("q")
        if len(self._sizes) != len(keys) >> 5:
            raise ValueError("a BlobTable needs one size per digest")
        self._extra: dict[str, int] = {}
        self._extra_digests: list[str] = []
        for digest, size in extra:
            if digest not in self._extra:
                self._extra[digest] = len(self._sizes)
                self._extra_digests.append(digest)
                self._sizes.append(size)

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, int]]) -> BlobTable:
        """From digests and sizes in any order (the last size of a digest given twice)."""
        known: dict[bytes, int] = {}
        extra: list[tuple[str, int]] = []
        for digest, size in items:
            raw = digest_bytes(digest)
            if raw is None:
                extra.append((digest, size))
            else:
                known[raw] = size
        ordered = sorted(known)  # by shard (the first two bytes), and within it
        counts = array("Q", [0]) * _SHARDS
        for raw in ordered:
            counts[(raw[0] << 8) | raw[1]] += 1
        sizes = array("q", map(known.__getitem__, ordered))
        return cls(b"".join(ordered), counts, sizes, extra)

    # -- ids --

    @property
    def id_count(self) -> int:
        """Ids run from 0 to ``id_count - 1`` (the same as ``len``)."""
        return len(self._sizes)

    def id_of(self, digest: str) -> int:
        """The blob's id, or -1 when no blob of that digest has data."""
        return self.ids_of((digest,))[0]

    def ids_of(self, digests: Iterable[str]) -> list[int]:
        """:meth:`id_of` for many digests at once (the reader's hot loop)."""
        keys, base, extra, fromhex = self._keys, self._base, self._extra, bytes.fromhex
        out: list[int] = []
        append = out.append
        for digest in digests:
            hexpart = digest[7:]
            try:
                raw = fromhex(hexpart)
            except ValueError:
                raw = b""
            # as digest_bytes, inlined: canonical is 64 lowercase hex digits, nothing else
            if len(raw) != 32 or raw.hex() != hexpart or not digest.startswith("sha256:"):
                append(extra.get(digest, -1))
                continue
            shard = (raw[0] << 8) | raw[1]
            start = base[shard] << 5
            at = keys.find(raw, start, base[shard + 1] << 5)
            while at > start and (at - start) & 31:  # found across two keys: look further
                at = keys.find(raw, at + 1, base[shard + 1] << 5)
            append(at >> 5 if at >= 0 else -1)
        return out

    def digests_of(self, blob_ids: Iterable[int]) -> list[str | None]:
        """:meth:`digest_of` for many ids at once; None for ``NO_ID``."""
        keys, sharded = self._keys, len(self._keys) >> 5
        out: list[str | None] = []
        for blob_id in blob_ids:
            if blob_id < sharded:
                out.append("sha256:" + keys[blob_id << 5 : (blob_id + 1) << 5].hex())
            else:
                out.append(None if blob_id == NO_ID else self.digest_of(blob_id))
        return out

    def digest_of(self, blob_id: int) -> str:
        sharded = len(self._keys) >> 5
        if blob_id >= sharded:
            return self._extra_digests[blob_id - sharded]
        return "sha256:" + self._keys[blob_id << 5 : (blob_id + 1) << 5].hex()

    def size_of(self, blob_id: int) -> int:
        return self._sizes[blob_id]

    @property
    def sizes(self) -> array[int]:
        """Sizes by id (do not change them)."""
        return self._sizes

    def select(self, flags: bytes | bytearray, value: int = 0) -> BlobSelection:
        """The blobs whose flag is ``value`` (``flags``: one 0 or 1 per id)."""
        member = bytearray(flags if value else flags.translate(_FLIP))
        return BlobSelection(self, member)

    # -- the mapping --

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self.id_of(digest) >= 0

    def __getitem__(self, digest: str) -> int:
        blob_id = self.id_of(digest) if isinstance(digest, str) else -1
        if blob_id < 0:
            raise KeyError(digest)
        return self._sizes[blob_id]

    def __iter__(self) -> Iterator[str]:
        keys = self._keys
        for at in range(0, len(keys), 32):
            yield "sha256:" + keys[at : at + 32].hex()
        yield from self._extra_digests

    def values(self) -> ValuesView[int]:
        return _Values(self, self._sizes)

    def items(self) -> ItemsView[str, int]:
        return _Items(self, self._sizes)


class BlobSelection(Mapping[str, int]):
    """Some blobs of a :class:`BlobTable`, as a digest -> size mapping.

    ``member`` holds a 1 at the id of each blob selected (and is kept)."""

    __slots__ = ("_ids", "_member", "_sizes", "_table")

    def __init__(self, table: BlobTable, member: bytearray) -> None:
        if len(member) != table.id_count:
            raise ValueError("a BlobSelection needs one flag per blob of its table")
        self._table = table
        self._member = member
        self._ids = array("I", compress(range(len(member)), member))
        self._sizes = array("q", compress(table.sizes, member))

    @property
    def ids(self) -> array[int]:
        return self._ids

    def has_id(self, blob_id: int) -> bool:
        return 0 <= blob_id < len(self._member) and self._member[blob_id] == 1

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self.has_id(self._table.id_of(digest))

    def __getitem__(self, digest: str) -> int:
        blob_id = self._table.id_of(digest) if isinstance(digest, str) else -1
        if not self.has_id(blob_id):
            raise KeyError(digest)
        return self._table.size_of(blob_id)

    def __iter__(self) -> Iterator[str]:
        return map(self._table.digest_of, self._ids)

    def values(self) -> ValuesView[int]:
        return _Values(self, self._sizes)

    def items(self) -> ItemsView[str, int]:
        return _Items(self, self._sizes)


class _Values(ValuesView[int]):
    """Values in key order straight from a size array (the default looks up every key)."""

    def __init__(self, mapping: Mapping[str, int], sizes: array[int]) -> None:
        super().__init__(mapping)
        self._sizes_array = sizes

    def __iter__(self) -> Iterator[int]:
        return iter(self._sizes_array)


class _Items(ItemsView[str, int]):
    def __init__(self, mapping: Mapping[str, int], sizes: array[int]) -> None:
        super().__init__(mapping)
        self._keys = mapping
        self._sizes_array = sizes

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self._keys, self._sizes_array, strict=True)


@dataclass(frozen=True, eq=False, slots=True)
class RepositoryColumns:
    """A repository's tags and revision links, compact (as the reader keeps them).

    Digests are blob ids of ``blobs``; a digest with no blob has ``NO_ID`` and its string is
    in ``missing`` (revisions' first, then tags', in order). Times are POSIX timestamps. About
    40 bytes a tag, where Tag objects with their strings and datetimes take ~300.
    """

    blobs: BlobTable
    #: tag names, sorted, joined by NUL (no file name holds one)
    tag_names: str
    tag_ids: array[int]
    tag_times: array[float]
    revision_ids: array[int]
    revision_times: array[float]
    missing: tuple[str, ...] = ()

    def revision_digests(self) -> list[str]:
        """The digest of each revision, in order."""
        missing = iter(self.missing)
        return [
            d if d is not None else next(missing) for d in self.blobs.digests_of(self.revision_ids)
        ]

    def tags_at(self, positions: Sequence[int]) -> list[Tag]:
        """The tags at ``positions`` (indexes in tag order), without building the others."""
        if self.missing:
            tags, _ = self.materialize()
            return [tags[p] for p in positions]
        names, ids, times = self.tag_names.split("\0"), self.tag_ids, self.tag_times
        digests = self.blobs.digests_of([ids[p] for p in positions])
        out: list[Tag] = []
        for position, digest in zip(positions, digests, strict=True):
            assert digest is not None, "a tag without a blob has its digest in missing"
            out.append(Tag(names[position], digest, _utc(times[position])))
        return out

    def materialize(self) -> tuple[tuple[Tag, ...], Mapping[str, datetime]]:
        revision_digests = self.revision_digests()
        missing = iter(self.missing[self.revision_ids.count(NO_ID) :])  # the tags' ones
        revisions = _Timestamps(dict(zip(revision_digests, self.revision_times, strict=True)))
        # a tag's digest is the same string as its revision's
        known = dict(zip(self.revision_ids, revision_digests, strict=True))
        known.pop(NO_ID, None)
        tag_digests: list[str] = []
        for blob_id in self.tag_ids:
            text = known.get(blob_id)
            if text is None:
                text = next(missing) if blob_id == NO_ID else self.blobs.digest_of(blob_id)
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

    Written by hand with ``tags`` and ``revisions``; read from a tree, it keeps them as
    :class:`RepositoryColumns` and builds ``tags`` and ``revisions`` on first access (then
    keeps them). Code that walks every repository once, like the planner, calls
    :meth:`materialize` instead, which keeps nothing.
    """

    __slots__ = (
        "_columns",
        "_revisions",
        "_tags",
        "has_nested",
        "last_activity",
        "layers",
        "listed_by_gc",
        "name",
    )

    def __init__(
        self,
        name: str,
        tags: tuple[Tag, ...] = (),
        revisions: Mapping[str, datetime] | None = None,
        listed_by_gc: bool = True,
        last_activity: datetime | None = None,
        layers: frozenset[str] | None = None,
        has_nested: bool = False,
        *,
        columns: RepositoryColumns | None = None,
    ) -> None:
        self.name = name
        self._tags: tuple[Tag, ...] | None = tuple(tags) if columns is None else None
        self._revisions: Mapping[str, datetime] | None = (
            (revisions if revisions is not None else {}) if columns is None else None
        )
        self._columns = columns
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
        assert self._columns is not None
        return self._columns.materialize()

    @property
    def tags(self) -> tuple[Tag, ...]:
        if self._tags is None:
            self._tags, self._revisions = self.materialize()
        return self._tags

    @property
    def revisions(self) -> Mapping[str, datetime]:
        if self._revisions is None:
            self._tags, self._revisions = self.materialize()
        return self._revisions

    @property
    def columns(self) -> RepositoryColumns | None:
        """The compact form the reader built, or None for a repository written by hand."""
        return self._columns

    @property
    def tag_count(self) -> int:
        if self._tags is not None:
            return len(self._tags)
        assert self._columns is not None
        return len(self._columns.tag_ids)

    @property
    def revision_count(self) -> int:
        if self._revisions is not None:
            return len(self._revisions)
        assert self._columns is not None
        return len(self._columns.revision_ids)

    def tags_at(self, positions: Sequence[int]) -> list[Tag]:
        """``[tags[p] for p in positions]``, built now from the columns if need be."""
        if self._tags is not None:
            return [self._tags[p] for p in positions]
        assert self._columns is not None
        return self._columns.tags_at(positions)

    def revision_digests(self) -> list[str]:
        """The digests of ``revisions``, in order."""
        if self._revisions is not None:
            return list(self._revisions)
        assert self._columns is not None
        return self._columns.revision_digests()

    def tag_ids(self, blobs: BlobTable) -> Sequence[int]:
        """The blob id of each tag's manifest (``NO_ID`` when it has no blob), in ``tags``
        order; ``blobs`` must be the inventory's blob table."""
        if self._columns is not None and self._columns.blobs is blobs:
            return self._columns.tag_ids
        return [NO_ID if i < 0 else i for i in blobs.ids_of(t.digest for t in self.tags)]

    def revision_ids(self, blobs: BlobTable) -> Sequence[int]:
        """The blob id of each revision (``NO_ID`` when it has no blob), in ``revisions``
        order; ``blobs`` must be the inventory's blob table."""
        if self._columns is not None and self._columns.blobs is blobs:
            return self._columns.revision_ids
        return [NO_ID if i < 0 else i for i in blobs.ids_of(self.revisions)]


#: the media types of the manifests the registry stores (record codes are indexes into it)
MANIFEST_MEDIA_TYPES = (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_SCHEMA1,
)
#: record header: own blob id, media type code, flags, number of children
_HEADER = struct.Struct("=IBBH")
#: the most children a record counts (16 bits); the parser refuses larger indexes
MAX_CHILDREN = 0xFFFF
#: the most media types a ManifestTable tells apart (8 bits)
_MAX_MEDIA_TYPES = 0x100
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
        """Nothing but the record: no children, subject or absent blobs."""
        return not self.children and self.subject is None and not self.absent


def record_references(record: bytes) -> memoryview:
    """The blob ids a packed record references: its children's, then its blobs'."""
    return memoryview(record)[_HEADER.size :].cast("I")


class IdLookup(Protocol):
    """What finds blob ids: a :class:`BlobTable`, or a cache in front of one."""

    def ids_of(self, digests: Iterable[str]) -> list[int]: ...


def pack_manifest(
    manifest: Manifest | None, blob_id: int, blobs: IdLookup, media_types: list[str]
) -> PackedManifest:
    """Pack ``manifest`` (None: its blob exists but does not parse), whose blob has id
    ``blob_id`` (NO_ID: none), for a ManifestTable over the table ``blobs`` looks up."""
    if manifest is None:
        return PackedManifest(_HEADER.pack(blob_id, 0, 0, 0))
    if len(manifest.children) > MAX_CHILDREN:
        raise ValueError(
            f"manifest {manifest.digest} has {len(manifest.children)} children; a record holds "
            f"at most {MAX_CHILDREN}"
        )
    try:
        code = media_types.index(manifest.media_type)
    except ValueError:
        if len(media_types) >= _MAX_MEDIA_TYPES:
            raise ValueError(
                f"manifest {manifest.digest}: more than {_MAX_MEDIA_TYPES} media types in one "
                "table"
            ) from None
        media_types.append(manifest.media_type)
        code = len(media_types) - 1
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


class ManifestTable(Mapping[str, Manifest]):
    """Every manifest blob that tags and revision links name: digest -> :class:`Manifest`.

    Each manifest is a packed record of ~60 bytes, at its blob id: the blob id, media type,
    and the blob ids of what the registry's GC marks with it (children, config, layers).
    Index children and subjects are also kept as strings, for reachability. A
    :class:`Manifest` is built on access. A manifest whose blob exists but does not parse has
    a record (the GC still marks its blob) but is not a key of the mapping.
    """

    __slots__ = (
        "_absent",
        "_blobs",
        "_children",
        "_loose",
        "_parsed",
        "_records",
        "_subjects",
        "_types",
    )

    def __init__(self, blobs: BlobTable, media_types: Iterable[str] = MANIFEST_MEDIA_TYPES) -> None:
        self._blobs = blobs
        self._types = list(media_types)
        self._records: list[bytes | None] = [None] * blobs.id_count
        self._loose: dict[str, bytes] = {}  # manifests without a blob (only given by hand)
        self._children: dict[str, tuple[str, ...]] = {}
        self._subjects: dict[str, str] = {}
        self._absent: dict[str, tuple[str, ...]] = {}
        self._parsed = 0

    @classmethod
    def from_manifests(cls, manifests: Iterable[Manifest], blobs: BlobTable) -> ManifestTable:
        table = cls(blobs)
        for manifest in manifests:
            blob_id = blobs.id_of(manifest.digest)
            packed = pack_manifest(
                manifest, NO_ID if blob_id < 0 else blob_id, blobs, table._types
            )
            table.add(manifest.digest, packed)
        return table

    def add(self, digest: str, packed: PackedManifest) -> None:
        blob_id = _HEADER.unpack_from(packed.record)[0]
        if blob_id == NO_ID:
            if digest in self._loose:
                return
            self._loose[digest] = packed.record
        else:
            if self._records[blob_id] is not None:
                return
            self._records[blob_id] = packed.record
        if packed.record[5] & _PARSED:
            self._parsed += 1
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
                if record[5] & _PARSED:
                    self._parsed += 1

    def _record(self, digest: str) -> bytes | None:
        blob_id = self._blobs.id_of(digest)
        if blob_id >= 0:
            return self._records[blob_id]
        return self._loose.get(digest)

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
        if record is None or not record[5] & _HAS_CONFIG:
            return None
        n_children = _HEADER.unpack_from(record)[3]
        ids = record_references(record)
        if ids[n_children] != NO_ID:
            return self._blobs.digest_of(ids[n_children])
        return self._absent[digest][sum(1 for i in ids[:n_children] if i == NO_ID)]

    def has_record(self, blob_id: int) -> bool:
        """True when the manifest of blob ``blob_id`` was read (parsed or not)."""
        return self._records[blob_id] is not None

    def children_ids(self, blob_id: int) -> Sequence[int]:
        """The blob ids of an index's children (``NO_ID`` for those without a blob)."""
        record = self._records[blob_id]
        if record is None:
            return ()
        n_children = _HEADER.unpack_from(record)[3]
        return record_references(record)[:n_children]

    def mark(self, blob_ids: Iterable[int], marks: bytearray) -> None:
        """Mark what the registry's GC marks for revision links to the manifests of
        ``blob_ids``: each manifest blob and every blob it references (children, config,
        layers; not recursively)."""
        records = self._records
        for blob_id in blob_ids:
            marks[blob_id] = 1
            record = records[blob_id]
            if record is not None:
                for ref in record_references(record):
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
                for ref in record_references(record):
                    if ref != NO_ID and unclaimed[ref]:
                        unclaimed[ref] = 0
                        total += sizes[ref]
        return total

    # -- the mapping --

    def __len__(self) -> int:
        return self._parsed

    def __contains__(self, digest: object) -> bool:
        record = self._record(digest) if isinstance(digest, str) else None
        return record is not None and bool(record[5] & _PARSED)

    def __getitem__(self, digest: str) -> Manifest:
        record = self._record(digest) if isinstance(digest, str) else None
        if record is None or not record[5] & _PARSED:
            raise KeyError(digest)
        _, code, flags, n_children = _HEADER.unpack_from(record)
        absent = iter(self._absent.get(digest, ()))
        refs = [
            next(absent) if i == NO_ID else self._blobs.digest_of(i)
            for i in record_references(record)
        ]
        blobs = tuple(refs[n_children:])
        return Manifest(
            digest=digest,
            media_type=self._types[code],
            blobs=blobs,
            children=tuple(refs[:n_children]),
            subject=self._subjects.get(digest),
            config=blobs[0] if flags & _HAS_CONFIG else None,
        )

    def __iter__(self) -> Iterator[str]:
        for blob_id, record in enumerate(self._records):
            if record is not None and record[5] & _PARSED:
                yield self._blobs.digest_of(blob_id)
        for digest, record in self._loose.items():
            if record[5] & _PARSED:
                yield digest


@dataclass(frozen=True, slots=True)
class Inventory:
    """The whole tree: repositories, parsed manifests (global), blob sizes, problems.

    ``blobs`` and ``manifests`` are a :class:`BlobTable` and a :class:`ManifestTable`; plain
    mappings given by hand are turned into them.
    """

    root: str
    repositories: tuple[Repository, ...]
    manifests: Mapping[str, Manifest]
    blobs: Mapping[str, int]
    problems: tuple[Problem, ...] = ()
    #: image config ``created`` times, by config digest (read only when a policy orders by it)
    created: Mapping[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        blobs = self.blobs
        if not isinstance(blobs, BlobTable):
            blobs = BlobTable.from_items(blobs.items())
            object.__setattr__(self, "blobs", blobs)
        if not isinstance(self.manifests, ManifestTable):
            table = ManifestTable.from_manifests(self.manifests.values(), blobs)
            object.__setattr__(self, "manifests", table)

    @property
    def blob_table(self) -> BlobTable:
        assert isinstance(self.blobs, BlobTable)
        return self.blobs

    @property
    def manifest_table(self) -> ManifestTable:
        assert isinstance(self.manifests, ManifestTable)
        return self.manifests

    def repository(self, name: str) -> Repository | None:
        for repo in self.repositories:
            if repo.name == name:
                return repo
        return None

    @property
    def storage_bytes(self) -> int:
        return sum(self.blobs.values())
