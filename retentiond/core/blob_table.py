"""Every blob with data, digest -> size, compact: the ids the rest of the inventory refers to.

A registry of a million tags holds some 3.5 million blobs; as a dict of digest strings they
would take ~200 bytes a blob (the digest string alone takes 120). A :class:`BlobTable` takes 40:
the digests are 32 raw bytes each in one byte string, grouped by their first two bytes (65536
shards, with an offset table), and the sizes are one array. A blob's id is its position,
``0 .. len - 1``; the manifest table and the repositories refer to blobs by id, and the mark
phase keeps its flags in byte arrays indexed by it (one 0 or 1 per id).
"""

from __future__ import annotations

from array import array
from collections.abc import ItemsView, Iterable, Iterator, Mapping, Sequence, ValuesView
from io import BytesIO
from itertools import accumulate, compress
from typing import Protocol

#: in packed id arrays: a digest with no blob on disk
NO_ID = 0xFFFFFFFF
#: digests are spread over 2**16 shards by their first two bytes
_SHARDS = 1 << 16
#: bytes.translate table that turns 0 into 1 and 1 into 0
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


def inverted(flags: bytes | bytearray) -> bytes | bytearray:
    """``flags`` (each byte 0 or 1) with every 0 made 1 and every 1 made 0."""
    return flags.translate(_FLIP)


#: :func:`id_map` compares this many digests at once where the two tables agree
_RUN = 1024


def id_map(old_keys: bytes, new_keys: bytes) -> array[int]:
    """For each digest of ``old_keys`` (a table's :meth:`BlobTable.packed` digests), the id
    the same digest has in the table of ``new_keys``, or ``NO_ID``: a merge of the two sorted
    lists, a run of ``_RUN`` digests at a time where they agree (a tree read twice differs in
    the few blobs pushed, or collected, between the two reads)."""
    out = array("I", [NO_ID]) * (len(old_keys) >> 5)
    i = j = 0
    run = _RUN << 5
    merge_until = 0  # after a run that differs: one digest at a time over the next run
    end_old, end_new = len(old_keys), len(new_keys)
    while i < end_old:
        if i >= merge_until:
            size = min(run, end_old - i)
            if old_keys[i : i + size] == new_keys[j : j + size]:
                out[i >> 5 : (i + size) >> 5] = array("I", range(j >> 5, (j + size) >> 5))
                i, j = i + size, j + size
                continue
            merge_until = i + run
        key = old_keys[i : i + 32]
        while j < end_new and new_keys[j : j + 32] < key:
            j += 32
        if new_keys[j : j + 32] == key:
            out[i >> 5] = j >> 5
            j += 32
        i += 32
    return out


class IdLookup(Protocol):
    """What finds blob ids: a :class:`BlobTable`, or a cache in front of one."""

    def ids_of(self, digests: Iterable[str]) -> list[int]: ...


class BlobTable(Mapping[str, int]):
    """Every blob with data: digest -> size of its ``data`` file (see the module doc).

    A lookup is a ``bytes.find`` within one shard: a few dozen entries at a million tags.
    Every key is a canonical sha256 digest; looking up anything else finds nothing.
    """

    __slots__ = ("_base", "_keys", "_sizes")

    def __init__(
        self, keys: bytes = b"", counts: Iterable[int] = (), sizes: array[int] | None = None
    ) -> None:
        """``keys``: raw 32-byte digests, shard by shard, sorted within each (no duplicates);
        ``counts``: how many in each of the 65536 shards (none: all empty); ``sizes`` in the
        same order (the table keeps the array)."""
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

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, int]]) -> BlobTable:
        """From digests and sizes in any order (the last size of a digest given twice)."""
        known: dict[bytes, int] = {}
        for digest, size in items:
            raw = digest_bytes(digest)
            if raw is None:
                raise ValueError(
                    f"blob digest {digest!r} is not canonical: a BlobTable keeps sha256: and "
                    "64 lowercase hex digits"
                )
            known[raw] = size
        ordered = sorted(known)  # by shard (the first two bytes), and within it
        counts = array("Q", [0]) * _SHARDS
        for raw in ordered:
            counts[(raw[0] << 8) | raw[1]] += 1
        sizes = array("q", map(known.__getitem__, ordered))
        return cls(b"".join(ordered), counts, sizes)

    @classmethod
    def from_sorted(cls, items: Iterable[tuple[str, int]]) -> BlobTable:
        """From digests and sizes already in table order (ascending raw bytes, no duplicate:
        the order a table or a selection iterates in), without a dict of them all: the way to
        build a table of millions of blobs. ``ValueError`` names the first item out of order."""
        keys = BytesIO()  # its value is then taken without a copy (a bytearray's is copied)
        sizes = array("q")
        last = b""
        for digest, size in items:
            raw = digest_bytes(digest)
            if raw is None:
                raise ValueError(
                    f"blob digest {digest!r} is not canonical: a BlobTable keeps sha256: and "
                    "64 lowercase hex digits"
                )
            if raw <= last:
                raise ValueError(f"blob digest {digest} is out of order or given twice")
            last = raw
            keys.write(raw)
            sizes.append(size)
        return cls.from_packed(keys.getvalue(), sizes)

    @classmethod
    def from_packed(cls, keys: bytes, sizes: array[int]) -> BlobTable:
        """From :meth:`packed`'s two parts: raw 32-byte digests in ascending order and their
        sizes. ``ValueError`` when they do not make a table (lengths, order)."""
        if len(keys) & 31 or len(keys) >> 5 != len(sizes):
            raise ValueError("a packed BlobTable needs 32 bytes of digest per size")
        counts = array("Q", [0]) * _SHARDS
        previous = b""
        for at in range(0, len(keys), 32):
            raw = keys[at : at + 32]
            if raw <= previous:
                raise ValueError(f"packed digest {at >> 5} is out of order or given twice")
            previous = raw
            counts[(raw[0] << 8) | raw[1]] += 1
        return cls(keys, counts, sizes)

    def packed(self) -> tuple[bytes, array[int]]:
        """The raw digests (32 bytes each, ascending) and the sizes in the same order: what
        :meth:`from_packed` takes back (a table written to a file and read again)."""
        return self._keys, self._sizes

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
        keys, base, fromhex = self._keys, self._base, bytes.fromhex
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
                append(-1)
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
        keys, count = self._keys, len(self._sizes)
        out: list[str | None] = []
        for blob_id in blob_ids:
            if blob_id < count:
                out.append("sha256:" + keys[blob_id << 5 : (blob_id + 1) << 5].hex())
            else:
                out.append(None if blob_id == NO_ID else self.digest_of(blob_id))
        return out

    def digest_of(self, blob_id: int) -> str:
        if not 0 <= blob_id < len(self._sizes):
            raise IndexError(f"no blob has id {blob_id} (the table has {len(self._sizes)})")
        return "sha256:" + self._keys[blob_id << 5 : (blob_id + 1) << 5].hex()

    def size_of(self, blob_id: int) -> int:
        return self._sizes[blob_id]

    # -- sizes --

    @property
    def sizes(self) -> Sequence[int]:
        """Sizes by id (read only: see :meth:`sizes_to_fill`)."""
        return self._sizes

    def sizes_to_fill(self) -> array[int]:
        """Sizes by id, to write: for the storage reader alone, which needs blob ids before it
        knows every blob's size, so builds the table first and fills the sizes in here before
        it hands the inventory out (see :mod:`retentiond.storage.reading.sizes`)."""
        return self._sizes

    def select(self, flags: bytes | bytearray, value: int = 0) -> BlobSelection:
        """The blobs whose flag is ``value`` (``flags``: one 0 or 1 per id)."""
        member = bytearray(flags if value else inverted(flags))
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

    def __init__(self, mapping: Mapping[str, int], sizes: Sequence[int]) -> None:
        super().__init__(mapping)
        self._sizes_array = sizes

    def __iter__(self) -> Iterator[int]:
        return iter(self._sizes_array)


class _Items(ItemsView[str, int]):
    def __init__(self, mapping: Mapping[str, int], sizes: Sequence[int]) -> None:
        super().__init__(mapping)
        self._keys = mapping
        self._sizes_array = sizes

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self._keys, self._sizes_array, strict=True)
