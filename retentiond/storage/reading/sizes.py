"""Phase 4: the sizes of the blobs no manifest gave one, from a stat of their ``data``; and
the sizes of a run's reclaimable blobs (:func:`prefix_data_sizes`).

A plan does not stat layer and config ``data``: a stat reads the blob directory's and the
file's inodes, more than the inode cache holds beside the rest on a large tree. Their sizes
come from the descriptors of the manifests that name them (phase 3, through
:class:`SizeFinder`); only the blobs no readable manifest names, or whose manifests state two
different sizes, are stat'ed here. When one of them has no regular ``data`` the registry's GC
does not count it as a blob, and the whole tree is read again with every ``data`` stat'ed.

Trusts no ``data``: it is stat'ed through the blob store's reader
(:meth:`~retentiond.storage.port.StorageReader.stat_each`), not followed; anything but a regular
file counts as no ``data``. The prefix and blob directories on the way were directories by their
type in phase 1's listing (:func:`prefix_data_sizes` lists the prefix itself first).
"""

from __future__ import annotations

from array import array
from functools import partial
from itertools import compress
from typing import TYPE_CHECKING

from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind, StorageReader
from retentiond.storage.reading.blob_store import UNKNOWN_SIZE
from retentiond.storage.reading.pool import (
    PARALLEL_MIN_MANIFESTS,
    TASKS_PER_WORKER,
    WorkerPool,
    chunks,
    wanted,
)
from retentiond.storage.reading.tree import Tree
from retentiond.storage.safe_fs import UnsafeEntry

if TYPE_CHECKING:
    from retentiond.storage.reading.manifests import ParsedChunk


class SizeFinder:
    """Fills in the sizes phase 1 did not read: a manifest's from what was read of it, any
    other blob's from what the descriptors that name it state (when they agree).

    ``sizes``: the blob table's sizes, by blob id, written in place."""

    def __init__(self, sizes: array[int], complete: bool) -> None:
        self.sizes = sizes
        self.complete = complete  # phase 1 stat'ed every blob: nothing to find
        self.stated = bytearray(0 if complete else len(sizes))  # 1: size from a descriptor
        self.disputed: set[int] = set()  # descriptors disagree: stat it
        self.inexact = False
        #: with ``keep``: 1 where a descriptor states a size that is not the one settled on
        #: (another descriptor's, or the size read of a manifest blob): see :mod:`.reuse`
        self.mixed: bytearray | None = None

    def keep(self) -> None:
        """Note the blobs whose stated sizes disagree (:attr:`mixed`)."""
        self.mixed = bytearray(len(self.sizes))

    def add(self, chunk: ParsedChunk) -> None:
        """The sizes a worker of phase 3 read or found stated."""
        sizes, stated, mixed = self.sizes, self.stated, self.mixed
        for blob_id, size in zip(chunk.read_ids, chunk.read_sizes, strict=True):
            if mixed is not None and stated[blob_id] and sizes[blob_id] != size:
                mixed[blob_id] = 1
            sizes[blob_id] = size
            stated[blob_id] = 0
        for blob_id, size in zip(chunk.stated_ids, chunk.stated_sizes, strict=True):
            if sizes[blob_id] == UNKNOWN_SIZE:
                sizes[blob_id] = size
                stated[blob_id] = 1
            elif sizes[blob_id] != size:
                if stated[blob_id]:
                    self.disputed.add(blob_id)
                if mixed is not None:
                    mixed[blob_id] = 1
        self.inexact = self.inexact or chunk.inexact

    def unsized(self) -> list[int]:
        """Blobs whose size is unknown or disputed."""
        disputed = {i for i in self.disputed if self.stated[i]}
        unknown = compress(range(len(self.sizes)), map(UNKNOWN_SIZE.__eq__, self.sizes))
        return sorted(disputed.union(unknown))


def stat_unsized(
    pool: WorkerPool,
    tree: Tree,
    sizes: SizeFinder,
    order: array[int] | None,
    workers: int | None,
    disk: bool,
) -> bool:
    """Stat the data of the blobs no manifest gave a size; False when one has no regular
    ``data`` (then the GC does not count it as a blob, and phase 1 must read as it does).
    ``disk``: the tree may not be cached (see :func:`~.pool.wanted`)."""
    todo = sizes.unsized()
    if order is not None:
        todo.sort(key=order.__getitem__)
    tasks = [(blob_id, pool.table.digest_of(blob_id)) for blob_id in todo]
    count = wanted(workers, len(todo), PARALLEL_MIN_MANIFESTS, disk=disk)
    for part in pool.run(
        partial(_data_sizes, tree), chunks(tasks, TASKS_PER_WORKER * count), count
    ):
        for blob_id, size in part:
            if size == UNKNOWN_SIZE:
                return False
            sizes.sizes[blob_id] = size
    return True


def _data_sizes(tree: Tree, blobs: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """A worker's task: the size of each blob's regular ``data`` file, UNKNOWN_SIZE when it
    has none."""
    store = tree.store
    assert store is not None, "the blobs are in the blob store"
    paths = [layout.blob_data_in_store(layout.hex_of(digest)) for _, digest in blobs]
    try:
        entries = store.stat_each(paths)
    except (OSError, UnsafeEntry):  # one at a time: the others still have a size
        entries = [_data_entry(store, path) for path in paths]
    return [(blob_id, _size(entry)) for (blob_id, _), entry in zip(blobs, entries, strict=True)]


def _data_entry(store: StorageReader, path: str) -> Entry | None:
    """A ``data`` file's entry (None: there is none, or it cannot be stat'ed)."""
    try:
        return store.stat_each([path])[0]
    except (OSError, UnsafeEntry):
        return None


def _size(entry: Entry | None) -> int:
    """The size of a regular ``data`` file; UNKNOWN_SIZE for anything else."""
    if entry is None or entry.kind is not Kind.FILE or entry.size is None:
        return UNKNOWN_SIZE
    return entry.size


def prefix_data_sizes(
    store: StorageReader, prefix: str, hexes: list[str]
) -> tuple[bytes, array[int]]:
    """For the blobs ``hexes`` (their hex digests) of the blob store's directory ``prefix``: a
    1 for each that has a regular ``data`` file and a 0 for each that has none, and the sizes
    of those that have one, in order. The prefix is listed first (never followed if it is a
    link): only the blob directories found in it as directories are stat'ed."""
    dirs = _blob_dirs(store, prefix)
    paths = [f"{prefix}/{h}/{layout.DATA}" for h in hexes if h in dirs]
    try:
        entries = store.stat_each(paths)
    except (OSError, UnsafeEntry):  # one at a time: the others still have a size
        entries = [_data_entry(store, path) for path in paths]
    sized = iter(map(_size, entries))
    found = bytearray(len(hexes))
    sizes = array("q")
    for at, hexpart in enumerate(hexes):
        if hexpart in dirs and (size := next(sized)) != UNKNOWN_SIZE:
            found[at] = 1
            sizes.append(size)
    return bytes(found), sizes


def _blob_dirs(store: StorageReader, prefix: str) -> set[str]:
    """The names of the directories in the blob store's directory ``prefix`` (none when it is
    missing, unreadable or not a directory)."""
    try:
        names = store.names(prefix)
        if names.only_dirs:
            return set(names.names)
        return {e.name for e in store.list(prefix) if e.kind is Kind.DIR}
    except (OSError, UnsafeEntry):
        return set()
