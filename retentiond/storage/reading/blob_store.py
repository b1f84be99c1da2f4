"""Phase 1: the blob store's 256 prefix directories, into the rows of a compact
:class:`~retentiond.core.inventory.BlobTable`.

A blob is a directory named by its digest under ``blobs/sha256/<first two hex>``. A plan reads
the names alone (a prefix directory's :meth:`~retentiond.storage.port.StorageReader.names`: no
object per blob, and on a disk no inode read per blob); a layer's or config's
size comes later, from the manifests that state it (phase 3), or from a stat of its ``data``
(phase 4). With ``stat_data`` (``apply``, and the read again when a blob directory turned out to
have no usable ``data``) every ``data`` is stat'ed, and only directories with one are blobs: the
registry's GC's count.

Trusts nothing below ``blobs/sha256``: prefix directories are read through the blob store's
reader with no link followed; a blob directory is one by its type in the prefix directory's
listing (never a link's target); ``data`` is stat'ed through the prefix directory's reader
(:meth:`~retentiond.storage.port.StorageReader.stat_each`), not followed. A symbolic link or a
special file anywhere here is an UNSAFE problem of no repository (the GC's sweep would walk
into a linked prefix and delete what it finds there); a blob directory whose name is not a
digest is a GC_ABORT problem; a prefix or blob directory that cannot be read fails the run
(StorageError): without the whole blob store, what a GC reclaims cannot be known. A blob
directory swapped for a link between the listing and the stat could show the size of a file
elsewhere, never its content.

Workers each walk some prefixes and return a :class:`BlobPart` (bytes and arrays, cheap to
send back); the parent joins them in shard order into the table, with each blob's
:attr:`~retentiond.storage.port.Entry.order` (where the store keeps it: phase 3 reads manifests
in that order) when the store gives one.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TypeVar

from retentiond.core.inventory import BlobTable, Problem, ProblemKind
from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind, Names, StorageReader
from retentiond.storage.reading.problems import NOT_FOLLOWED, UNSAFE, ProblemLog, cannot_read
from retentiond.storage.reading.tree import Tree
from retentiond.storage.safe_fs import SymlinkFound, UnsafeEntry

L = TypeVar("L")

#: a blob size not read yet
UNKNOWN_SIZE = -1
_HEX2 = re.compile(r"[0-9a-f]{2}")
_ORDER = attrgetter("order")


@dataclass
class BlobPart:
    """Blobs found under some prefix directories, in shard order (see BlobTable)."""

    first_prefix: str
    prefix_count: int
    keys: bytes  # raw 32-byte digests
    counts: dict[int, int]  # shard -> how many of ``keys``
    sizes: bytes  # array("q")
    #: array("Q"): each blob's Entry.order, to read manifests in the order they are stored
    #: (fewer than ``keys`` when the store gives no order)
    order: bytes
    #: blobs in a prefix directory that is not their own (the registry never does that)
    misplaced: list[tuple[bytes, int]]
    problems: list[Problem]


@dataclass
class _Found:
    """What :func:`walk_blobs` gathers, prefix after prefix (a BlobPart's fields as lists)."""

    keys: list[bytes] = field(default_factory=list)
    sizes: array[int] = field(default_factory=lambda: array("q"))
    order: array[int] = field(default_factory=lambda: array("Q"))
    counts: dict[int, int] = field(default_factory=dict)
    misplaced: list[tuple[bytes, int]] = field(default_factory=list)


def blob_prefixes(reading: ProblemLog, tree: Tree) -> list[str]:
    """The directories under ``blobs/sha256`` (symbolic links are problems, not followed)."""
    if tree.store is None:
        return []
    store = f"{tree.v2}/{layout.BLOB_STORE}"
    try:
        entries = tree.store.list("")
    except OSError as exc:
        raise StorageError(cannot_read(store, exc)) from exc
    prefixes = []
    for prefix in entries:
        if prefix.kind is Kind.DIR:
            prefixes.append(prefix.name)
        elif prefix.is_link:
            _blob_store_link(reading, f"{store}/{prefix.name}")
    return sorted(prefixes)


def walk_blobs(tree: Tree, stat_data: bool, prefixes: list[str]) -> BlobPart:
    """Every blob directory under ``prefixes``. With ``stat_data``, only those with a ``data``
    file, as the registry's GC enumerates them, with its size; without, every directory named
    by a digest, its size unknown (its name is read from the prefix directory's names)."""
    reading = ProblemLog()
    found = _Found()
    for prefix in prefixes:
        prefix_dir = _open_prefix(reading, tree, prefix)
        if prefix_dir is None:
            continue
        try:
            path = f"{tree.v2}/{layout.blob_prefix_dir(prefix)}"
            _read_prefix(found, reading, path, prefix, prefix_dir, stat_data)
        finally:
            prefix_dir.close()
    return BlobPart(
        prefixes[0] if prefixes else "",
        len(prefixes),
        b"".join(found.keys),
        found.counts,
        found.sizes.tobytes(),
        found.order.tobytes(),
        found.misplaced,
        reading.problems,
    )


def _read_prefix(
    found: _Found,
    reading: ProblemLog,
    path: str,
    prefix: str,
    prefix_dir: StorageReader,
    stat_data: bool,
) -> None:
    """The blobs of the prefix directory ``prefix`` (``path``, read through ``prefix_dir``):
    from its names alone when it is as the registry writes one and no size is wanted, else
    entry by entry."""
    own = int(prefix, 16) if _HEX2.fullmatch(prefix) else -1  # the first byte it holds
    plain = None
    if not stat_data and own >= 0:
        plain = _plain_prefix(prefix, _listed(path, prefix_dir.names))
    if plain is None:
        entries = _listed(path, prefix_dir.list)
        _walk_prefix(found, reading, path, prefix_dir, own, entries, stat_data)
        return
    raw_keys, seconds, order = plain
    found.keys.append(raw_keys)
    found.sizes.extend(array("q", [UNKNOWN_SIZE]) * (len(raw_keys) // 32))
    if order is not None:
        found.order.extend(order)
    for second, count in sorted(seconds.items()):
        found.counts[(own << 8) | second] = count


def _listed(path: str, listing: Callable[[str], L]) -> L:
    """A prefix directory's listing (``names`` or ``list``); StorageError when it fails."""
    try:
        return listing("")
    except OSError as exc:
        raise StorageError(cannot_read(path, exc)) from exc


def _blob_store_link(reading: ProblemLog, path: str) -> None:
    """A symbolic link in the blob store: the registry's GC would walk into it, and delete
    what it finds there that nothing marks (files outside the root)."""
    reading.problem(path, f"symbolic link in the blob store, {NOT_FOLLOWED}", UNSAFE)


def _open_prefix(reading: ProblemLog, tree: Tree, prefix: str) -> StorageReader | None:
    """A reader of a prefix directory of the blob store, opened without following a link
    (None: it is gone, or was swapped for a link since it was listed)."""
    path = f"{tree.v2}/{layout.blob_prefix_dir(prefix)}"
    assert tree.store is not None, "prefixes come from the blob store"
    try:
        return tree.store.below(prefix)
    except FileNotFoundError:
        return None
    except SymlinkFound:
        _blob_store_link(reading, path)
        return None
    except UnsafeEntry as exc:
        reading.problem(path, str(exc), UNSAFE)
        return None
    except OSError as exc:
        raise StorageError(
            cannot_read(path, exc) + " (without the whole blob store, what a GC reclaims "
            "cannot be known)"
        ) from exc


def _plain_prefix(
    prefix: str, listed: Names
) -> tuple[bytes, Counter[int], array[int] | None] | None:
    """The digests of a prefix directory as the registry writes one (nothing but directories
    named by lowercase sha256 hex digests that start with the prefix), sorted, with how many
    there are of each second byte and their order; a few C calls for the whole directory.
    None when anything in it is unusual: then each entry is looked at in turn."""
    names = listed.names
    if not listed.only_dirs:
        return None
    if not names:
        return b"", Counter(), listed.order
    joined = "".join(names)
    if set(map(len, names)) != {64} or names[0][:2] != prefix or names[-1][:2] != prefix:
        return None  # sorted: when the first and the last start with the prefix, all do
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if raw.hex() != joined:  # upper case, or whitespace (which fromhex skips)
        return None
    return raw, Counter(raw[1::32]), listed.order


def _walk_prefix(
    found: _Found,
    reading: ProblemLog,
    path: str,
    prefix_dir: StorageReader,
    own: int,
    entries: list[Entry],
    stat_data: bool,
) -> None:
    """The blobs of one prefix directory (``path``, read through ``prefix_dir``), entry by
    entry: a sized read, or a directory that is not as the registry writes one. ``own``: the
    first byte of the digests the prefix holds (-1: its name is not two hex digits)."""
    if stat_data and None not in map(_ORDER, entries):
        # in the order they are stored: on a cold cache, the inode table is read front to back
        entries.sort(key=_ORDER)
    dirs: list[tuple[Entry, bytes, bool]] = []
    fromhex = bytes.fromhex
    for entry in entries:
        name = entry.name
        if entry.kind is not Kind.DIR:
            if entry.is_link:
                _blob_store_link(reading, f"{path}/{name}")
            continue
        try:
            raw = fromhex(name)
        except ValueError:
            raw = b""
        valid = len(raw) == 32 and len(name) == 64 and (name.islower() or name.isdigit())
        dirs.append((entry, raw, valid))
    data = _data_entries(path, prefix_dir, [e.name for e, _, v in dirs if stat_data or not v])
    buckets: dict[int, tuple[list[bytes], array[int], array[int]]] = {}
    for entry, raw, valid in dirs:
        size = UNKNOWN_SIZE
        if stat_data or not valid:
            stated = _data_size(reading, f"{path}/{entry.name}", next(data), valid)
            if stated is None:
                continue
            size = stated
        if not valid:
            reading.problem(
                f"{path}/{entry.name}",
                "blob directory name is not a sha256 digest; the registry's GC aborts on it",
                ProblemKind.GC_ABORT,
            )
            continue
        if raw[0] != own:
            found.misplaced.append((raw, size))
            continue
        bucket = buckets.get(raw[1])
        if bucket is None:
            bucket = buckets[raw[1]] = ([], array("q"), array("Q"))
        bucket[0].append(raw)
        bucket[1].append(size)
        if entry.order is not None:
            bucket[2].append(entry.order)
    for second in sorted(buckets):
        bucket_keys, bucket_sizes, bucket_order = buckets[second]
        found.keys += bucket_keys
        found.sizes += bucket_sizes
        found.order += bucket_order
        found.counts[(own << 8) | second] = len(bucket_keys)


def _data_entries(path: str, prefix_dir: StorageReader, names: list[str]) -> Iterator[Entry | None]:
    """The ``data`` of each of the blob directories ``names`` (None: it has none), stat'ed
    through the prefix directory's reader, not followed; a StorageError when one cannot be."""
    try:
        return iter(prefix_dir.stat_each([f"{name}/{layout.DATA}" for name in names]))
    except OSError as exc:
        raise StorageError(cannot_read(f"{path}/{exc.filename}", exc)) from exc


def _data_size(reading: ProblemLog, blob_path: str, data: Entry | None, valid: bool) -> int | None:
    """The size of a blob directory's ``data``; None when the GC would not count it: no
    ``data`` (an empty blob directory, which the GC ignores too), or ``data`` a link or a
    special file (a problem)."""
    if data is None:
        return None
    if valid and data.kind is not Kind.FILE:
        reading.problem(
            f"{blob_path}/{layout.DATA}",
            f"blob data is {data.detail}, not a regular file; "
            + (
                NOT_FOLLOWED
                if data.is_link
                else "the registry's GC would block or fail on it: remove it"
            ),
            UNSAFE,
        )
        return None
    return UNKNOWN_SIZE if data.size is None else data.size


def blob_order(parts: list[BlobPart], blobs: BlobTable) -> array[int] | None:
    """Each blob directory's :attr:`~retentiond.storage.port.Entry.order`, by blob id (None
    when the store gives none, or the table was rebuilt)."""
    order = array("Q")
    for part in sorted(parts, key=lambda p: p.first_prefix):
        order.frombytes(part.order)
    return order if len(order) == blobs.id_count else None


def blob_table(parts: list[BlobPart]) -> BlobTable:
    """The table of the blobs the parts found (in shard order but when a blob sits in a
    prefix directory not its own, which the registry never writes: then the slow way)."""
    parts = sorted(parts, key=lambda p: p.first_prefix)  # prefixes are shards' first bytes
    if any(part.misplaced for part in parts):
        items: list[tuple[str, int]] = []
        for part in parts:
            sizes = array("q")
            sizes.frombytes(part.sizes)
            raws = [part.keys[i : i + 32] for i in range(0, len(part.keys), 32)]
            items += [
                (layout.digest_of(raw.hex()), size) for raw, size in zip(raws, sizes, strict=True)
            ]
            items += [(layout.digest_of(raw.hex()), size) for raw, size in part.misplaced]
        return BlobTable.from_items(items)
    counts = array("Q", [0]) * (1 << 16)
    sizes = array("q")
    for part in parts:
        for shard, count in part.counts.items():
            counts[shard] = count
        sizes.frombytes(part.sizes)
    return BlobTable(b"".join(part.keys for part in parts), counts, sizes)
