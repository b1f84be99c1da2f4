"""Cleaning after the GC: what a run tidies inside the window, and what waits until after.

Inside the read-only window (:func:`clean_in_window`), only what the GC touched, known from its
output (:class:`~retentiond.core.gc_output.GcDeletions`): the blob store directories it deleted
in, the namespace directories of the repositories the run removed, and the redis entries of the
deleted blobs (a stale entry would let a re-push "succeed" without uploading). When the GC's
output was not understood, or in a run resumed after a crash (no inventory in memory), the whole
tree is walked instead, as before issue 14.

Once the run is verified and recorded (:func:`tidy_after_run`): the quarantine the GC made
garbage, and the ``_layers`` links of the deleted blobs, removed so that a push meanwhile keeps
its link (:func:`~retentiond.storage.cleanup.drop_dangling_layer_links`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from retentiond.cache import RedisCache
from retentiond.config import CacheKind
from retentiond.core.blob_table import BlobTable
from retentiond.core.layer_links import layer_link_candidates
from retentiond.errors import StorageError
from retentiond.held_runs import forget_quarantine
from retentiond.storage import layout
from retentiond.storage.cleanup import (
    Cleaned,
    clean_after_gc,
    clean_touched,
    drop_dangling_layer_links,
    repository_names,
)
from retentiond.storage.location import Location
from retentiond.storage.port import Kind
from retentiond.storage.reader import data_sizes, read_blob_sizes
from retentiond.storage.removal import open_storage
from retentiond.storage.safe_fs import UnsafeEntry

if TYPE_CHECKING:
    from retentiond.run_phases import MaintenanceRun

_HEX64 = re.compile(r"[0-9a-f]{64}")


def clean_in_window(run: MaintenanceRun) -> None:
    """After the GC, before the registry is read-write: tidy what the GC touched; with no GC
    (held for ``undo``), only the namespace directories of removed repositories."""
    entry = run.entry
    if entry.gc_ran and (not entry.gc_understood or run.inventory is None):
        _clean_walking(run)
    else:
        cleaned = clean_touched(
            run.root,
            prefixes=entry.gc_prefixes or [],
            removed_repositories=entry.repositories_removed or [],
        )
        entry.cleaned = _counts(cleaned)
        if entry.gc_ran:
            forget_cached(run, gone_blobs(run))
    if not entry.gc_ran:
        entry.bytes_reclaimed = entry.pre_gc_bytes or 0
        entry.blobs_deleted = entry.pre_gc_blobs or 0


def gone_blobs(run: MaintenanceRun) -> BlobTable:
    """The reclaimable blobs the GC deleted: all of them when it deleted as many as expected
    (the usual case), else those without data now."""
    table = run.reclaimable_blobs()
    entry = run.entry
    if (entry.blobs_deleted or 0) - (entry.pre_gc_blobs or 0) == len(table):
        return table
    present = data_sizes(run.root, iter(table))
    return BlobTable.from_sorted((d, n) for d, n in table.items() if d not in present)


def _clean_walking(run: MaintenanceRun) -> None:
    """Clean by walking the whole tree: every blob's data stat'ed, every repository's
    revisions and ``_layers`` listed."""
    entry = run.entry
    blobs_after = read_blob_sizes(run.root)
    reclaimable = run.reclaimable_blobs()
    gone = [d for d in reclaimable if d not in blobs_after]
    entry.bytes_reclaimed = sum(reclaimable[d] for d in gone) + (entry.pre_gc_bytes or 0)
    entry.blobs_deleted = len(gone) + (entry.pre_gc_blobs or 0)
    lost = (entry.blob_count_before or 0) - len(blobs_after) - len(gone)
    if lost > 0:
        run.errors.append(f"{lost} blobs vanished that the plan did not expect to be reclaimed")
    repos = repository_names(run.root)
    forget_cached(run, set(gone), repos)
    cleaned = clean_after_gc(run.root, repos, blobs_after)
    if cleaned.skipped:
        run.log.warning("cleaning left links alone", paths=list(cleaned.skipped[:20]))
    entry.cleaned = _counts(cleaned)


def _counts(cleaned: Cleaned) -> dict[str, int]:
    return {
        "blob_prefix_dirs": cleaned.blob_prefix_dirs,
        "revision_dirs": cleaned.revision_dirs,
        "layer_links": cleaned.layer_links,
        "namespace_dirs": cleaned.namespace_dirs,
    }


def forget_cached(
    run: MaintenanceRun, gone: Collection[str], repositories: list[str] | None = None
) -> None:
    """With ``cache: redis``, delete the entries of the blobs in ``gone``, and everything
    cached for a repository the run removed whole or whose links to surviving blobs a 3.x GC
    deleted (its blobs other repositories keep too, or a re-push under its name would skip
    uploads it then cannot serve)."""
    registry = run.services.config.registry
    if registry.cache is not CacheKind.REDIS or not registry.redis_url:
        return
    cache = RedisCache(registry.redis_url)
    sent = cache.forget(
        gone, repositories if repositories is not None else repository_names(run.root)
    )
    sent += cache.forget_repositories(
        sorted(
            {*(run.entry.repositories_removed or []), *(run.entry.gc_unlinked_repositories or [])}
        )
    )
    run.log.info("redis cache cleaned", blobs=len(gone), commands=sent)


def tidy_after_run(run: MaintenanceRun) -> None:
    """Once the run is recorded (verified, in the history): delete the quarantine the GC made
    garbage and the ``_layers`` links of the blobs the GC deleted, as a registry's own GC
    leaves them. Nothing clients see depends on it, so it runs after the verification (which
    it would slow down, sharing the CPUs and the disk) and outside the run's time. What goes
    wrong is logged as a warning: the run is over. After a crash, the next start does it
    again (the journal's phase ``recorded``), looking at every ``_layers`` link then."""
    started = time.monotonic()
    links: int | None = None
    purged = started
    try:
        forget_quarantine(run.services.config, run.run_id)
        purged = time.monotonic()
        if run.inventory is not None and run.entry.gc_understood:
            links = drop_dangling_layer_links(
                run.root, layer_link_candidates(run.inventory, gone_blobs(run))
            )
        elif run.inventory is None:  # resumed after a crash: every link is a candidate
            links = drop_dangling_layer_links(run.root, _every_layer_link(run.root))
    except StorageError as exc:  # the run is done; what is left is reported, not fatal
        run.log.warning(
            "tidying after the run failed: what is left of its quarantine, or dangling "
            "_layers links, stay until removed by hand",
            error=str(exc),
        )
    run.log.info(
        "tidied after the run",
        quarantine_seconds=round(purged - started, 3),
        layer_links=links,
        layer_link_seconds=round(time.monotonic() - purged, 3),
    )


def _every_layer_link(root: Location) -> Iterator[tuple[str, str]]:
    """(repository, digest) of every ``_layers`` link in the tree (links and files on the way
    are passed, not followed)."""
    with open_storage(root) as storage:
        for name in repository_names(root):
            try:
                entries = storage.list(layout.layer_links_dir(name))
            except (OSError, UnsafeEntry):
                continue
            for entry in entries:
                if entry.kind is Kind.DIR and _HEX64.fullmatch(entry.name):
                    yield name, layout.digest_of(entry.name)
