"""Phase 3: the manifests every tag and revision names, each blob read and parsed once.

Reads a manifest blob's ``data`` (at most :data:`MAX_MANIFEST_BYTES`, the registry's own
limit) and, for ``created`` times, its config (at most :data:`MAX_CONFIG_BYTES`);
then the children of indexes and lists no link names, round after round. Each manifest is
packed into a :class:`~retentiond.core.inventory.ManifestTable` record. A manifest's size is
the size of what was read; a config's or layer's is the size its manifests' descriptors state
(the size every client checks when it pulls the blob): those are handed to
:class:`~.sizes.SizeFinder`.

Trusts no blob: each is read through the blob store's reader with no link followed, only when
it is a regular file, bounded, and parsed by :func:`~retentiond.core.manifests.
parse_manifest`. Whatever a blob holds (a link, a FIFO, bytes the parser chokes on) makes its
manifest unreadable, a problem of the repositories that name it, never an exception: GC_ABORT
when the registry's GC reads it (a revision link names it), UNSAFE when its ``data`` is a link
or a special file.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from hashlib import sha256
from typing import NamedTuple

from retentiond.core.blob_table import NO_ID, BlobTable
from retentiond.core.manifest_table import (
    ManifestTable,
    PackedManifest,
    pack_manifest,
    record_blob_ids,
    record_config_id,
)
from retentiond.core.manifests import ManifestError, parse_created, parse_manifest
from retentiond.core.repository import Repository
from retentiond.core.values import Manifest, Problem, ProblemKind
from retentiond.storage import layout
from retentiond.storage.port import StorageReader
from retentiond.storage.reading.pool import (
    PARALLEL_MIN_MANIFESTS,
    TASKS_PER_WORKER,
    Progress,
    WorkerPool,
    chunks,
    shared_blobs,
    shared_extra,
    wanted,
)
from retentiond.storage.reading.problems import UNSAFE, ProblemLog, unsafe_message
from retentiond.storage.reading.reuse import KeptFromRead, Reuse, Reused
from retentiond.storage.reading.sizes import SizeFinder
from retentiond.storage.reading.tree import Tree
from retentiond.storage.safe_fs import NotRegularFile, TooLarge, UnsafeEntry

#: the registry refuses manifests larger than this; a bigger "manifest" is not one
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: an image config is read for its ``created`` time up to this size
MAX_CONFIG_BYTES = 16 * 1024 * 1024

#: a manifest that is more than its record (see PackedManifest.plain), as a worker returns it:
#: the fields of its PackedManifest, its digest and the error that made it unreadable (or None)
_Parsed = tuple[bytes, str, tuple[str, ...], str | None, tuple[str, ...], str | None]

#: what a manifest blob may raise that makes it unreadable (the parser's own ManifestError is
#: a ValueError; the others are there so that no manifest can stop the read of the tree)
MANIFEST_ERRORS = (ValueError, RecursionError, OverflowError)


@dataclass
class ParsedChunk:
    """What a worker of phase 3 returns."""

    records: list[bytes]  # the usual manifest: its record is all there is to it
    manifests: list[_Parsed]
    created: dict[str, datetime]
    #: blob ids and sizes: of the manifests read (``read``), as descriptors state (``stated``;
    #: every size a descriptor states, once a chunk, whatever the parent knows already, so
    #: that a disagreement is seen however the manifests fall into chunks)
    read_ids: array[int] = field(default_factory=lambda: array("I"))
    read_sizes: array[int] = field(default_factory=lambda: array("q"))
    stated_ids: array[int] = field(default_factory=lambda: array("I"))
    stated_sizes: array[int] = field(default_factory=lambda: array("q"))
    #: a manifest blob whose size was not read could not be opened: its ``data`` may be missing
    inexact: bool = False
    #: manifest blobs whose ``data`` is a link or a special file (in a link's directory)
    unsafe: list[int] = field(default_factory=list)
    #: kept for a later read (:mod:`.reuse`): parsed manifests not to keep, and those that
    #: state no size
    skip: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    #: manifests taken from an earlier read instead of parsed
    reused: int = 0

    def state(self, blob_ids: Iterable[int], sizes: Iterable[int], taken: dict[int, int]) -> None:
        """Add the sizes not in ``taken`` (what this chunk stated already: base layers and
        configs recur in many manifests)."""
        for blob_id, size in zip(blob_ids, sizes, strict=True):
            if blob_id == NO_ID or size < 0:
                continue
            if taken.get(blob_id) != size:
                taken[blob_id] = size
                self.stated_ids.append(blob_id)
                self.stated_sizes.append(size)


class ManifestsRead(NamedTuple):
    """What phase 3 found."""

    table: ManifestTable
    #: config digest -> its ``created`` time (with ``read_created``)
    created: dict[str, datetime]
    #: the blobs that did not parse, and why
    failed: dict[int, str]
    #: for index children no link names: the index that named them
    parent_of: dict[int, int]
    #: the manifest blobs whose ``data`` is a link or a special file
    unsafe: set[int]
    #: how many manifests were taken from an earlier read (one item: a NamedTuple's field)
    reused: list[int]


def read_manifests(
    pool: WorkerPool,
    tree: Tree,
    repositories: list[Repository],
    order: array[int] | None,
    read_created: bool,
    workers: int | None,
    report: Progress,
    sizes: SizeFinder,
    kept: KeptFromRead | None = None,
) -> ManifestsRead:
    """Parse every manifest a tag or revision names, and their children, each blob once, in
    ``pool``'s workers; ``order``: the blob directories' :attr:`~retentiond.storage.port.
    Entry.order`, to read them in the order they are stored. ``kept``: note what a later read
    needs to take these manifests (:mod:`.reuse`); the pool's :attr:`~.pool.WorkerPool.shared`
    is a :class:`~.reuse.Reuse` when this read takes an earlier one's."""
    blobs = pool.table
    result = ManifestsRead(ManifestTable(blobs), {}, {}, {}, set(), [0])
    manifests = result.table
    wanted_ids: set[int] = set()
    for repo in repositories:
        for ids in (repo.revision_ids, repo.tag_ids):
            wanted_ids.update(ids)
    wanted_ids.discard(NO_ID)
    todo = sorted(wanted_ids)
    del wanted_ids  # tens of MB at a million tags, not to be held while the manifests are read
    while todo:
        if order is not None:  # in the order the blobs are stored, as far as we know it
            todo.sort(key=order.__getitem__)
        count = wanted(workers, len(todo), PARALLEL_MIN_MANIFESTS)
        tasks = chunks(todo, TASKS_PER_WORKER * count)
        table = pool.table_for(count, len(tasks))
        # (a worker has it through the fork: see the pool)
        reuse = pool.shared if table is not None and isinstance(pool.shared, Reuse) else None
        parse = partial(
            parse_manifests, tree, read_created, sizes.complete, table, reuse, kept is not None
        )
        parsed = 0
        parents: list[int] = []  # lists and indexes (a bare record has no children)
        for chunk in pool.run(parse, tasks, count):
            result.created.update(chunk.created)
            result.unsafe.update(chunk.unsafe)
            result.reused[0] += chunk.reused
            if kept is not None:
                kept.skip.update(chunk.skip)
                kept.silent.update(chunk.silent)
            sizes.add(chunk)
            manifests.add_records(chunk.records)
            for record, digest, children, subject, absent, error in chunk.manifests:
                packed = PackedManifest(record, children, subject, absent)
                manifests.add(digest, packed)
                if error is not None:
                    result.failed[packed.blob_id] = error
                if children:
                    parents.append(packed.blob_id)
            parsed += len(chunk.records) + len(chunk.manifests)
            report("manifests", parsed, len(todo))
        todo = _unread_children(manifests, parents, result.parent_of)
    return result


def _unread_children(
    manifests: ManifestTable, parents: list[int], parent_of: dict[int, int]
) -> list[int]:
    """The children of ``parents`` not read yet (each noted in ``parent_of``): the next round."""
    more: dict[int, None] = {}
    for parent in sorted(parents):
        for child in manifests.children_ids(parent):
            if child != NO_ID and not manifests.has_record(child) and child not in more:
                parent_of.setdefault(child, parent)
                more[child] = None
    return list(more)


def parse_manifests(
    tree: Tree,
    read_created: bool,
    sized: bool,
    blobs: BlobTable | None,
    given: Reuse | None,
    keep: bool,
    blob_ids: list[int],
) -> ParsedChunk:
    """A worker's task: read and pack the manifest of each blob; and the ``created`` times of
    their configs.

    ``sized``: the table knows every blob's size; else the sizes found are returned. A blob
    that cannot be read, trusted or parsed is an error of its manifest (a problem of the
    repositories that link it), never an exception. ``given``: an earlier read's manifests,
    taken where they may be instead of parsing (in a worker: None, and the pool's); ``keep``:
    note what a later read needs to take these (see :mod:`.reuse`)."""
    table = shared_blobs(blobs)
    reuse = shared_extra(blobs, given)
    keys = table.packed()[0] if keep else b""
    chunk = ParsedChunk([], [], {})
    configs: set[str] = set()
    taken: dict[int, int] = {}
    store = tree.store
    assert store is not None, "manifests are blobs of the blob store"
    for blob_id in blob_ids:
        digest = table.digest_of(blob_id)
        manifest: Manifest | None = None
        error: str | None = None
        try:
            data = read_blob(store, digest, MAX_MANIFEST_BYTES)
            if not sized:
                chunk.read_ids.append(blob_id)
                chunk.read_sizes.append(len(data))
            if reuse is not None and (reused := reuse.take(blob_id, data)) is not None:
                config = _add_reused(chunk, reused, digest, sized, taken)
                if read_created and config is not None and config != NO_ID:
                    configs.add(table.digest_of(config))
                continue
            manifest = parse_manifest(digest, data)
            if keep and sha256(data).digest() != keys[blob_id << 5 : (blob_id + 1) << 5]:
                chunk.skip.append(blob_id)
        except FileNotFoundError:
            error = "manifest blob vanished while reading"
            chunk.inexact = chunk.inexact or not sized
        except UnsafeEntry as exc:
            # a link or a special file: refused, and its size taken as 0 (no GC may run while
            # it is there; reading the tree again as the GC counts would change nothing)
            error = unsafe_message(exc)
            chunk.unsafe.append(blob_id)
            if not sized:
                chunk.read_ids.append(blob_id)
                chunk.read_sizes.append(0)
        except OSError as exc:
            error = f"cannot read: {exc.strerror}"
            chunk.inexact = chunk.inexact or not sized
        except MANIFEST_ERRORS as exc:
            error = str(exc) if isinstance(exc, ManifestError) else f"cannot parse: {exc!r:.200}"
        packed = pack_manifest(manifest, blob_id, table)
        if keep and manifest is not None:
            _note_statements(chunk, blob_id, manifest.blob_sizes)
        if not sized and manifest is not None and manifest.blob_sizes:
            chunk.state(packed.blob_ids, manifest.blob_sizes, taken)
        if packed.plain and error is None:
            chunk.records.append(packed.record)
        else:
            chunk.manifests.append(
                (packed.record, digest, packed.children, packed.subject, packed.absent, error)
            )
        if read_created and manifest is not None and manifest.config:
            configs.add(manifest.config)
    chunk.created = _created_times(store, configs)
    return chunk


def _add_reused(
    chunk: ParsedChunk, reused: Reused, digest: str, sized: bool, taken: dict[int, int]
) -> int | None:
    """Add a manifest taken from an earlier read to ``chunk`` as its parse would be; its
    config's blob id (None: it has none), whose ``created`` time is read as a parsed one's."""
    chunk.reused += 1
    record, children, subject, stated = reused
    if not sized and stated is not None:
        chunk.state(record_blob_ids(record), stated, taken)
    if children or subject is not None:
        chunk.manifests.append((record, digest, children, subject, (), None))
    else:
        chunk.records.append(record)
    return record_config_id(record)


def _note_statements(chunk: ParsedChunk, blob_id: int, sizes: tuple[int, ...]) -> None:
    """Keep a parsed manifest's sizes in mind for a later read: one that states none is
    ``silent``; one that states some and not others is not kept."""
    stating = sum(1 for size in sizes if size >= 0)
    if not stating:
        chunk.silent.append(blob_id)
    elif stating != len(sizes):
        chunk.skip.append(blob_id)


def read_blob(store: StorageReader, digest: str, limit: int) -> bytes:
    """A blob's ``data``, at most ``limit`` bytes (ManifestError beyond), read through the blob
    store's reader ``store`` with no symbolic link followed (an
    :class:`~retentiond.storage.safe_fs.UnsafeEntry` when one is on the way, or when ``data``
    is not a regular file); FileNotFoundError when it is missing."""
    try:
        return store.read(layout.blob_data_in_store(layout.hex_of(digest)), limit).data
    except TooLarge as exc:
        raise ManifestError(f"more than {limit} bytes, larger than any manifest") from exc
    except NotRegularFile as exc:
        if not exc.what:  # refused as it was opened (a socket, a device)
            raise
        raise NotRegularFile(f"data is {exc.what}, not a regular file", exc.where) from exc


def _created_times(store: StorageReader, configs: set[str]) -> dict[str, datetime]:
    """The ``created`` time of each config that has one (a config that cannot be read or
    parsed has none: the policies that need it keep its images)."""
    created: dict[str, datetime] = {}
    for config in sorted(configs):
        try:
            when = parse_created(read_blob(store, config, MAX_CONFIG_BYTES))
        except (OSError, UnsafeEntry, *MANIFEST_ERRORS):
            continue
        if when is not None:
            created[config] = when
    return created


def unreadable_manifests(
    v2: str, repositories: Iterable[Repository], blobs: BlobTable, read: ManifestsRead
) -> list[Problem]:
    """A problem per repository that links (or tags) a manifest that does not parse: GC_ABORT
    when the registry's GC reads it (a revision link names it), or when its ``data`` is a
    link or a special file (UNSAFE, whoever names it)."""
    failed, parent_of = read.failed, read.parent_of
    if not failed:
        return []
    reading = ProblemLog()
    owners: dict[int, list[tuple[str, bool]]] = {}
    for repo in repositories:
        revision_ids, tag_ids = repo.revision_ids, repo.tag_ids
        for blob_id in revision_ids:
            if blob_id in failed:
                owners.setdefault(blob_id, []).append((repo.name, repo.listed_by_gc))
        for blob_id in tag_ids:
            if blob_id in failed:
                owners.setdefault(blob_id, []).append((repo.name, False))

    def owners_of(blob_id: int) -> list[tuple[str, bool]]:
        seen = set()
        while blob_id not in owners and blob_id in parent_of and blob_id not in seen:
            seen.add(blob_id)
            blob_id = parent_of[blob_id]
        return owners.get(blob_id, [])

    for blob_id, message in sorted(failed.items()):
        digest = blobs.digest_of(blob_id)
        path = f"{v2}/{layout.blob_data(layout.hex_of(digest))}"
        for repo_name, gc_reads_it in owners_of(blob_id):
            kind = ProblemKind.GC_ABORT if gc_reads_it else ProblemKind.UNREADABLE
            suffix = "; the registry's GC aborts on it" if gc_reads_it else ""
            if blob_id in read.unsafe:
                kind, suffix = UNSAFE, ""
            reading.problem(
                path, f"manifest {digest} is unreadable: {message}{suffix}", kind, repo_name
            )
    return list(dict.fromkeys(reading.problems))  # a repository may both tag and link it
