"""Tidy what the registry's GC leaves behind.

GC deletes blob directories but leaves empty ``blobs/sha256/xx/`` directories, empty revision
directories, and (in 2.8) ``_layers`` links whose blob is gone. Removing a dangling ``_layers``
link is safe: the registry would answer 404 for that blob anyway, and a later push re-links it.

A run cleans only what it and its GC touched: :func:`clean_touched`, inside the maintenance
window, the prefix directories the GC emptied and the namespaces of the repositories the run
removed; :func:`drop_dangling_layer_links`, once the registry takes pushes again, the links of
the blobs the GC deleted (safe against a push of the same blob meanwhile).
:func:`clean_after_gc` walks the whole tree, for a run resumed after a crash, which does not
know what it touched.

Everything is listed and removed through the storage port (``rmdir``, or ``rmtree`` by
descriptor for a ``_layers`` link, on a filesystem), which follows no symbolic link on the way:
a link anywhere is left alone, never followed, never deleted through, and the directories that
could not be looked into for one are listed in :attr:`Cleaned.skipped`.
"""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.location import Location, location_of
from retentiond.storage.port import Kind, Storage
from retentiond.storage.removal import NO_LINKS, open_storage
from retentiond.storage.safe_fs import UnsafeEntry


@dataclass(frozen=True, slots=True)
class Cleaned:
    blob_prefix_dirs: int = 0
    revision_dirs: int = 0
    layer_links: int = 0
    namespace_dirs: int = 0
    #: paths below ``docker/registry/v2`` left alone: a link or a special file on the way
    skipped: tuple[str, ...] = ()


class _Skips:
    """The directories that could not be looked into because of a link or a special file."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.paths: list[str] = []

    def subdirs(self, path: str) -> list[str]:
        """Names of the real directories in ``path`` (links and files left out); none when it
        is missing, unreadable or unsafe (then listed here)."""
        try:
            entries = self.storage.list(path)
        except UnsafeEntry:
            self.paths.append(path)
            return []
        except OSError:
            return []
        return [e.name for e in entries if e.kind is Kind.DIR]


def _rmdir(storage: Storage, path: str) -> bool:
    try:
        storage.remove_dir(path)
        return True
    except (OSError, UnsafeEntry):
        return False


def _clean_prefixes(storage: Storage, skips: _Skips) -> int:
    store = layout.BLOB_STORE
    return sum(_rmdir(storage, f"{store}/{entry}") for entry in skips.subdirs(store))


def _clean_revisions(storage: Storage, name: str, skips: _Skips) -> int:
    removed = 0
    revisions = layout.revisions_dir(name)
    for entry in skips.subdirs(revisions):
        try:
            storage.stat(f"{revisions}/{entry}/{layout.LINK}")
        except FileNotFoundError:
            removed += _rmdir(storage, f"{revisions}/{entry}")
        except (OSError, UnsafeEntry):
            continue
    return removed


def _clean_layers(storage: Storage, name: str, blobs: Collection[str], skips: _Skips) -> int:
    removed = 0
    links = layout.layer_links_dir(name)
    for entry in skips.subdirs(links):
        if layout.digest_of(entry) not in blobs:
            storage.remove_tree(f"{links}/{entry}", ignore_errors=True)
            removed += 1
    return removed


def namespace_dirs(storage: Storage) -> list[tuple[str, bool]]:
    """Every directory below ``repositories/`` outside repositories' own ``_`` directories, as
    (path relative to ``repositories``, whether it is a repository), parents first. Links are
    neither followed nor listed."""
    out: list[tuple[str, bool]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        path = layout.repository(rel) if rel else layout.REPOSITORIES
        try:
            names = [e.name for e in storage.list(path) if e.kind is Kind.DIR]
        except (OSError, UnsafeEntry):
            continue
        out.append((rel, layout.LAYERS in names or layout.MANIFESTS in names))
        stack.extend(
            f"{rel}/{n}" if rel else n for n in sorted(names, reverse=True) if not n.startswith("_")
        )
    return out


def repository_names(root: Location) -> list[str]:
    """The repositories in the tree (a directory with ``_manifests`` or ``_layers``), found
    without following links."""
    try:
        with open_storage(root) as storage:
            return [rel for rel, is_repository in namespace_dirs(storage) if rel and is_repository]
    except StorageError:
        return []


def _clean_namespaces(storage: Storage) -> int:
    removed = 0
    for rel, _ in reversed(namespace_dirs(storage)):  # children before their parents
        if rel:
            removed += _rmdir(storage, layout.repository(rel))
    return removed


def clean_after_gc(
    root: Location, repositories: Collection[str], blobs: Collection[str]
) -> Cleaned:
    """Remove empty blob prefix directories, empty revision directories, ``_layers`` links
    whose blob is not in ``blobs`` (the blobs present after GC), and empty namespace
    directories left by removed repositories."""
    with open_storage(root) as storage:
        skips = _Skips(storage)
        prefixes = _clean_prefixes(storage, skips)
        revisions = links = 0
        for name in repositories:
            revisions += _clean_revisions(storage, name, skips)
            links += _clean_layers(storage, name, blobs, skips)
        namespaces = _clean_namespaces(storage)
        skipped = tuple(storage.location(p) for p in skips.paths)
    return Cleaned(prefixes, revisions, links, namespaces, skipped)


# -- what a run touched --------------------------------------------------------------------------

_PREFIX = re.compile(r"[0-9a-f]{2}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def clean_touched(
    root: Location, *, prefixes: Iterable[str], removed_repositories: Iterable[str]
) -> Cleaned:
    """Remove the blob store's prefix directories of ``prefixes`` (two hex digits: those of
    the blobs the GC deleted) that are empty now, and the directories of
    ``removed_repositories`` and their parents below ``repositories/`` that are empty now
    (a repository removed as its parts leaves its directory; a namespace whose last
    repository went leaves its own), each walked up until one is not empty. Costs one
    ``rmdir`` a prefix and a few per repository, whatever the size of the tree."""
    wanted = sorted(set(prefixes))
    bad = [p for p in wanted if _PREFIX.fullmatch(p) is None]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a blob store prefix (two lowercase hex digits)")
    with open_storage(root) as storage:
        skipped: list[str] = []
        removed = sum(
            _rmdir_empty(storage, layout.blob_prefix_dir(p), skipped) is True for p in wanted
        )
        namespaces = 0
        for name in sorted(set(removed_repositories), reverse=True):  # nested ones first
            namespaces += _clean_up_from(storage, name, skipped)
        where = tuple(storage.location(p) for p in skipped)
    return Cleaned(blob_prefix_dirs=removed, namespace_dirs=namespaces, skipped=where)


def _rmdir_empty(storage: Storage, path: str, skipped: list[str]) -> bool | None:
    """``rmdir`` of ``path``: True when removed, False when it is not empty (or cannot be
    removed), None when it is not there. A link or a file on the way or in its place is left
    alone and listed in ``skipped``."""
    try:
        storage.remove_dir(path)
    except FileNotFoundError:
        return None
    except UnsafeEntry as exc:
        skipped.append(exc.where or path)
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            skipped.append(path)
        return False
    return True


def _clean_up_from(storage: Storage, name: str, skipped: list[str]) -> int:
    """Remove the directory of repository ``name`` and then each parent, while empty (one
    already gone is passed); never ``repositories/`` itself."""
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith("_") for part in parts):
        raise ValueError(f"{name!r} is not a repository name")
    removed = 0
    while parts:
        done = _rmdir_empty(storage, layout.repository("/".join(parts)), skipped)
        if done is False:
            break
        removed += done is True
        parts.pop()
    return removed


#: threads dropping links at once, each with the storage opened for itself: a move and a stat
#: mostly wait on the filesystem (or the store), not on the CPU
LINK_DROPPERS = 4
#: candidates a thread takes at a time
_LINK_BATCH = 512


def drop_dangling_layer_links(root: Location, candidates: Iterable[tuple[str, str]]) -> int:
    """Remove the ``_layers`` link of each ``(repository, digest)`` candidate whose blob is
    gone; returns how many were removed. For a registry that takes pushes again: a push of
    the same blob meanwhile never loses its link.

    The blob's ``data`` is looked at first: when it is there (or cannot be looked at), the
    link stays. Else the link's directory is moved aside (one rename, into the quarantine's
    ``layer-links``) and the blob looked at again: when it is there now (pushed again in
    between, whose link the registry wrote after the blob), the directory is moved back as
    it was, unless the registry wrote a new one meanwhile; else it is deleted with the others
    at the end. A candidate without a link, or with a link or a file in the way, is passed.
    Killed in the middle, the links it moved aside are deleted by the next call that drops
    one (they were dangling when moved).

    :data:`LINK_DROPPERS` threads take the candidates a batch at a time; the first failure
    stops them all (what was moved aside is deleted all the same).
    """
    aside = _Aside(root)
    batches = _Batches(candidates)

    def drop() -> None:
        with open_storage(root) as storage:
            while batch := batches.next():
                for repository, digest in batch:
                    _drop_one(storage, aside, repository, digest)

    try:
        with ThreadPoolExecutor(LINK_DROPPERS, thread_name_prefix="layer-links") as pool:
            futures = [pool.submit(drop) for _ in range(LINK_DROPPERS)]
            for future in futures:
                try:
                    future.result()
                except BaseException:
                    batches.stop()
                    raise
    finally:
        aside.clear()
    return aside.dropped


def _drop_one(storage: Storage, aside: _Aside, repository: str, digest: str) -> None:
    if _DIGEST.fullmatch(digest) is None:
        raise ValueError(f"{digest!r} is not a sha256 digest")
    data = layout.blob_data(layout.hex_of(digest))
    if not _gone(storage, data):
        return
    link_dir = layout.layer_link_dir(repository, digest)
    if not _is_real_dir(storage, link_dir):
        return
    held = aside.take(storage, link_dir)
    if held is not None and not _gone(storage, data):
        aside.put_back(storage, held, link_dir)


class _Batches:
    """The candidates, a batch at a time, to several threads; none after :meth:`stop`."""

    def __init__(self, candidates: Iterable[tuple[str, str]]) -> None:
        self._candidates = iter(candidates)
        self._lock = threading.Lock()
        self._stopped = False

    def next(self) -> list[tuple[str, str]]:
        with self._lock:
            return [] if self._stopped else list(islice(self._candidates, _LINK_BATCH))

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def _gone(storage: Storage, path: str) -> bool:
    """Whether nothing is at ``path`` (anything there, or a path that cannot be looked at,
    counts as there)."""
    try:
        storage.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, UnsafeEntry):
        return False
    return False


def _is_real_dir(storage: Storage, path: str) -> bool:
    try:
        return storage.stat(path).kind is Kind.DIR
    except (OSError, UnsafeEntry):
        return False


class _Aside:
    """The quarantine's ``layer-links``: the links being dropped, held there until the end.
    Made on first use (what an earlier call killed in the middle left there is deleted
    first); deleted with what it holds by :meth:`clear`. Shared by the threads dropping links,
    each moving with its own storage."""

    def __init__(self, root: Location) -> None:
        self.root = root
        self.where = location_of(root, layout.in_quarantine(layout.LAYER_LINKS_HELD))
        self.made = False
        self.count = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def _make(self, storage: Storage) -> None:
        self._clear(storage)
        try:
            storage.quarantine_dir("", create=True)
            storage.quarantine_dir(layout.LAYER_LINKS_HELD, create=True)
        except UnsafeEntry as exc:
            raise StorageError(f"{self.where}: {exc}; {NO_LINKS}") from exc
        except OSError as exc:
            raise StorageError(
                f"cannot create {self.where}: {exc.strerror}; retentiond needs write access "
                "to the registry's storage root"
            ) from exc
        self.made = True

    def take(self, storage: Storage, link_dir: str) -> str | None:
        """Move ``link_dir`` aside; its name there, or None when it is gone since."""
        with self._lock:
            if not self.made:
                self._make(storage)
            held = layout.held_layer_link(self.count)
            self.count += 1
        try:
            storage.hold(link_dir, held)
        except FileNotFoundError:
            return None
        except (OSError, UnsafeEntry) as exc:
            raise StorageError(
                f"cannot move {storage.location(link_dir)} to {self.where}: {exc}"
            ) from exc
        with self._lock:
            self.dropped += 1
        return held

    def put_back(self, storage: Storage, held: str, link_dir: str) -> None:
        """Move a link back (its blob is there again): it was not dropped. When the registry
        wrote the link again meanwhile, the one held is dropped; when the repository is gone,
        so is its link."""
        try:
            storage.restore(held, link_dir)
        except FileExistsError:
            with self._lock:
                self.dropped -= 1
            return
        except FileNotFoundError:
            return
        except (OSError, UnsafeEntry) as exc:
            raise StorageError(
                f"cannot move {self.where}/{held.rpartition('/')[2]} back to "
                f"{storage.location(link_dir)}: {exc}; move it back by hand"
            ) from exc
        with self._lock:
            self.dropped -= 1

    def clear(self) -> None:
        if self.made:
            with open_storage(self.root) as storage:
                self._clear(storage)

    def _clear(self, storage: Storage) -> None:
        try:
            storage.remove_held(layout.LAYER_LINKS_HELD)
        except FileNotFoundError:
            pass
        except (OSError, UnsafeEntry) as exc:
            raise StorageError(f"cannot remove {self.where}: {exc}; remove it by hand") from exc
