"""Read a registry's storage tree into an :class:`~retentiond.core.inventory.Inventory`.

The entry points (:func:`read_inventory`, :func:`read_blob_sizes`, :func:`data_sizes`,
:func:`check_storage`) and the order of the four read phases; each phase is a module of
:mod:`retentiond.storage.reading`, whose docstring says what the reader reads, what it trusts,
and what a hostile entry means.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import chain, groupby, islice
from pathlib import Path

from retentiond.core.inventory import BlobTable, Inventory, Problem, Repository
from retentiond.storage.location import as_location, describe
from retentiond.storage.reading.blob_store import (
    BlobPart,
    blob_order,
    blob_prefixes,
    blob_table,
    walk_blobs,
)
from retentiond.storage.reading.catalog import RepoDir, find_repositories
from retentiond.storage.reading.manifests import read_manifests, unreadable_manifests
from retentiond.storage.reading.pool import (
    NETWORK_THREADS,
    PARALLEL_MIN_MANIFESTS,
    PARALLEL_MIN_REPOSITORIES,
    TASKS_PER_WORKER,
    Progress,
    WorkerPool,
    chunks,
    run_in_fresh_pool,
    wanted,
    workers_for,
)
from retentiond.storage.reading.problems import ProblemLog, problem_order
from retentiond.storage.reading.repositories import RepoLinks, make_repository, read_repositories
from retentiond.storage.reading.reuse import KeptFromRead, ParsedBefore, Reuse, keep_parsed
from retentiond.storage.reading.sizes import SizeFinder, prefix_data_sizes, stat_unsized
from retentiond.storage.reading.tree import Tree, open_tree
from retentiond.storage.s3_settings import S3Settings

__all__ = [
    "ParsedBefore",
    "Progress",
    "check_storage",
    "data_sizes",
    "read_blob_sizes",
    "read_inventory",
    "read_inventory_keeping",
]


def read_inventory(
    root: Path | str | S3Settings,
    *,
    read_created: bool = False,
    read_layers: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    stat_blobs: bool = False,
    parsed_before: ParsedBefore | None = None,
) -> Inventory:
    """Read the tree under ``root`` (the registry's ``rootdirectory``).

    ``workers``: processes to read with; for a large tree by default two per CPU (at most
    16), and at least :data:`~.reading.pool.DISK_READERS` for the phases that wait on the
    disk unless ``parsed_before`` is given (a read right after another: cached); none for a
    small one. ``progress`` is called as repositories and manifests are read.
    ``stat_blobs``: stat every blob's ``data`` (its size as on disk, and only directories with
    data are blobs: the GC's count even when a blob directory lost its data); by default the
    sizes of layers and configs are the ones their manifests state
    (:mod:`retentiond.storage.reading.sizes`). ``parsed_before``: the manifests an earlier read
    of this tree parsed (:func:`read_inventory_keeping`), taken where they are the same
    instead of parsed again (:mod:`retentiond.storage.reading.reuse`; it says how many in its
    ``reused``); the inventory is the one a read without them gives.
    """
    inventory, _ = _read(
        root, read_created, read_layers, workers, progress, stat_blobs, parsed_before, False
    )
    return inventory


def read_inventory_keeping(
    root: Path | str | S3Settings, *, read_created: bool = False, workers: int | None = None
) -> tuple[Inventory, ParsedBefore | None]:
    """:func:`read_inventory`, and what a later read of the tree may take instead of parsing
    the manifests again (None when the read had to stat every blob)."""
    return _read(root, read_created, False, workers, None, False, None, True)


def _read(
    root: Path | str | S3Settings,
    read_created: bool,
    read_layers: bool,
    workers: int | None,
    progress: Progress | None,
    stat_blobs: bool,
    before: ParsedBefore | None,
    keep: bool,
) -> tuple[Inventory, ParsedBefore | None]:
    where = as_location(root)
    tree = open_tree(where)  # held open while workers are forked: they inherit it
    workers = network_workers(tree, workers)
    try:
        args = (describe(where), tree, read_created, read_layers, workers, progress or _no_progress)
        # a read that takes an earlier read's manifests comes right after it (the frozen read
        # after the preview): the tree's metadata is cached, and processes beyond two per CPU
        # only cost (a cached 250k tree: 7.0-7.4 s with 4, 7.8-8.3 s with 16)
        disk = before is None
        read = (
            None
            if stat_blobs
            else _read_tree(*args, sized=False, before=before, keep=keep, disk=disk)
        )
        if read is None:  # a blob directory without usable data: read as the GC counts
            read = _read_tree(*args, sized=True, before=None, keep=False, disk=True)
            assert read is not None, "a sized read always completes"
    finally:
        tree.close()
    return read


def check_storage(root: Path | str | S3Settings) -> None:
    """The StorageError :func:`read_inventory` would raise for the top of the tree (missing,
    a symbolic link below ``root``, unreadable; a bucket that cannot be reached), or nothing:
    for a readiness check."""
    open_tree(as_location(root)).close()


def read_blob_sizes(root: Path | str | S3Settings) -> dict[str, int]:
    """Every blob with data and its size (what the GC's sweep enumerates)."""
    tree = open_tree(as_location(root))
    try:
        part = walk_blobs(tree, True, blob_prefixes(ProblemLog(), tree))
    finally:
        tree.close()
    return dict(blob_table([part]).items())


def data_sizes(
    root: Path | str | S3Settings, blobs: Iterable[str], workers: int | None = None
) -> BlobTable:
    """The blobs of ``blobs`` (digests in a blob table's order: ascending, as a BlobTable or
    a BlobSelection iterates) that have a regular ``data`` file, with its size: the bytes a
    GC frees when it deletes them, without a stat of every blob of the tree.

    The blob store is read one prefix directory at a time (listed, never followed if it is a
    link; then the ``data`` of each blob found in it as a directory stat'ed, not followed),
    so memory holds one prefix's digests and the table built. ``workers``: processes to stat
    with; by default :data:`~.reading.pool.DISK_READERS` or two per CPU for many blobs (a
    cold cache waits on the disk), in-process for few. ``ValueError`` when ``blobs`` is not
    in order."""
    given = iter(blobs)
    head = list(islice(given, PARALLEL_MIN_MANIFESTS))  # few: no worker is worth its fork
    tree = open_tree(as_location(root))
    workers = network_workers(tree, workers)
    count = workers_for(workers, len(head), PARALLEL_MIN_MANIFESTS, threaded(tree), disk=True)
    try:
        if tree.store is None:
            return BlobTable()
        return BlobTable.from_sorted(_sized(tree, chain(head, given), count))
    finally:
        tree.close()


def _sized(tree: Tree, blobs: Iterable[str], count: int) -> Iterator[tuple[str, int]]:
    """``(digest, size)`` of each blob with data, in the order of ``blobs``: a task for each
    prefix directory, ``count`` workers given a few tasks each at a time."""
    groups = ((p, [d[7:] for d in g]) for p, g in groupby(blobs, key=lambda d: d[7:9]))
    stat_prefix = partial(_stat_prefix, tree)
    with WorkerPool(BlobTable(), count, threaded(tree)) as pool:
        while window := list(enumerate(islice(groups, TASKS_PER_WORKER * count))):
            results = dict(pool.run(stat_prefix, window, count))
            for at, (_, hexes) in window:
                found, sizes = results[at]
                sized = iter(sizes)
                for hexpart, there in zip(hexes, found, strict=True):
                    if there:
                        yield f"sha256:{hexpart}", next(sized)


def _stat_prefix(
    tree: Tree, task: tuple[int, tuple[str, list[str]]]
) -> tuple[int, tuple[bytes, array[int]]]:
    """A worker's task: :func:`prefix_data_sizes` of one prefix, with the task's place."""
    at, (prefix, hexes) = task
    assert tree.store is not None, "the blob store exists"
    return at, prefix_data_sizes(tree.store, prefix, hexes)


def threaded(tree: Tree) -> bool:
    """Whether the tree is read by threads of this process: a tree in an object store (its
    readers wait on the network; see :mod:`.reading.pool`)."""
    return tree.network


def network_workers(tree: Tree, workers: int | None) -> int | None:
    """How many readers a tree in an object store gets unless told: requests in flight."""
    if not tree.network or workers is not None:
        return workers
    return NETWORK_THREADS


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _read_tree(
    root: str,
    tree: Tree,
    read_created: bool,
    read_layers: bool,
    workers: int | None,
    report: Progress,
    *,
    sized: bool,
    before: ParsedBefore | None,
    keep: bool,
    disk: bool,
) -> tuple[Inventory, ParsedBefore | None] | None:
    """The four phases; ``sized``: stat every blob's data in phase 1 (None: without, a blob
    directory turned out to have no usable data). ``before``: an earlier read's manifests to
    take; ``keep``: this read's to keep (not with ``sized``: a sized read notes no stated
    sizes); ``disk``: the tree may not be cached (the phases that wait on the disk get
    :data:`~.reading.pool.DISK_READERS`)."""
    assert not (keep and (sized or before is not None)), "a read keeps what it parsed alone"
    reading = ProblemLog()
    prefixes = blob_prefixes(reading, tree)
    repo_dirs = find_repositories(reading, tree)
    # 1: the blob store, in a pool of its own (the table it builds is what the next share)
    count = workers_for(
        workers, len(repo_dirs), PARALLEL_MIN_REPOSITORIES, threaded(tree), disk=disk
    )
    blobs, order, problems = _read_blob_store(tree, prefixes, sized, count, report)
    problems += reading.problems
    # the pool is as large as a phase of any size may want; each phase asks for its own count
    size = workers_for(workers, 1 << 62, 0, threaded(tree), disk=disk)
    reuse = Reuse(before, blobs) if before is not None else None
    with WorkerPool(blobs, size, threaded(tree), shared=reuse) as pool:
        # 2: link files, as blob ids
        repos, repo_problems = _read_repositories(
            pool, tree, repo_dirs, read_layers, workers, report, disk
        )
        problems += repo_problems
        # 3: manifests
        sizes = SizeFinder(blobs.sizes_to_fill(), sized)
        kept = None
        if keep:
            sizes.keep()
            assert sizes.mixed is not None
            kept = KeptFromRead(set(), set(), sizes.mixed)
        manifests = read_manifests(
            pool, tree, repos, order, read_created, workers, report, sizes, kept
        )
        if before is not None:  # taken: its records are not held through the plan
            before.release()
        pool.shared = reuse = None
        # 4: the sizes no manifest gave
        if not sized and (
            sizes.inexact or not stat_unsized(pool, tree, sizes, order, workers, disk)
        ):
            return None
    if before is not None:
        before.reused += manifests.reused[0]
    problems += unreadable_manifests(tree.v2, repos, blobs, manifests)
    inventory = Inventory(
        root=root,
        repositories=tuple(repos),
        manifests=manifests.table,
        blobs=blobs,
        problems=tuple(sorted(problems, key=problem_order)),
        created=manifests.created,
    )
    return inventory, keep_parsed(manifests.table, blobs, kept) if kept is not None else None


def _read_blob_store(
    tree: Tree, prefixes: list[str], sized: bool, count: int, report: Progress
) -> tuple[BlobTable, array[int] | None, list[Problem]]:
    """Phase 1: the blob table, the order of the blob directories in the store by blob id
    (None when unknown) and the problems met, sorted by path."""
    parts: list[BlobPart] = []
    report("blob directories", 0, len(prefixes))
    walk = partial(walk_blobs, tree, sized)
    for part in run_in_fresh_pool(walk, chunks(prefixes, 8 * count), count, threaded(tree)):
        parts.append(part)
        report("blob directories", sum(p.prefix_count for p in parts), len(prefixes))
    blobs = blob_table(parts)
    problems = sorted((p for part in parts for p in part.problems), key=lambda p: p.path)
    return blobs, blob_order(parts, blobs), problems


def _read_repositories(
    pool: WorkerPool,
    tree: Tree,
    repo_dirs: list[RepoDir],
    read_layers: bool,
    workers: int | None,
    report: Progress,
    disk: bool,
) -> tuple[list[Repository], list[Problem]]:
    """Phase 2: the repositories, in the order of ``repo_dirs``, and their problems (those of
    tags and revisions whose blob is missing last)."""
    count = wanted(workers, len(repo_dirs), PARALLEL_MIN_REPOSITORIES, disk=disk)
    tasks = chunks(list(enumerate(repo_dirs)), TASKS_PER_WORKER * count)
    report("repositories", 0, len(repo_dirs))
    read = partial(read_repositories, tree, read_layers, pool.table_for(count, len(tasks)))
    links: list[RepoLinks | None] = [None] * len(repo_dirs)
    done = 0
    for result in pool.run(read, tasks, count):
        for one in result:
            links[one.index] = one
        done += len(result)
        report("repositories", done, len(repo_dirs))
    repositories: list[Repository] = []
    problems: list[Problem] = []
    missing: list[Problem] = []
    for repo_dir, repo_links in zip(repo_dirs, links, strict=True):
        assert repo_links is not None
        problems += repo_links.problems
        missing += repo_links.missing_problems
        repositories.append(make_repository(repo_dir, repo_links, pool.table))
    return repositories, problems + missing
