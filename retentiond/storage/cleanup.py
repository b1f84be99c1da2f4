"""Tidy what the registry's GC leaves behind, while the registry is still in maintenance.

GC deletes blob directories but leaves empty ``blobs/sha256/xx/`` directories, empty revision
directories, and (in 2.8) ``_layers`` links whose blob is gone. Removing a dangling ``_layers``
link is safe: the registry would answer 404 for that blob anyway, and a later push re-links it.

Everything is listed and removed through the storage port (``rmdir``, or ``rmtree`` by
descriptor for a ``_layers`` link, on a filesystem), which follows no symbolic link on the way:
a link anywhere is left alone, never followed, never deleted through, and the directories that
could not be looked into for one are listed in :attr:`Cleaned.skipped`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.filesystem import FilesystemStorage
from retentiond.storage.port import Kind
from retentiond.storage.removal import open_storage
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

    def __init__(self, storage: FilesystemStorage) -> None:
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


def _rmdir(storage: FilesystemStorage, path: str) -> bool:
    try:
        storage.remove_dir(path)
        return True
    except (OSError, UnsafeEntry):
        return False


def _clean_prefixes(storage: FilesystemStorage, skips: _Skips) -> int:
    store = layout.BLOB_STORE
    return sum(_rmdir(storage, f"{store}/{entry}") for entry in skips.subdirs(store))


def _clean_revisions(storage: FilesystemStorage, name: str, skips: _Skips) -> int:
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


def _clean_layers(
    storage: FilesystemStorage, name: str, blobs: Collection[str], skips: _Skips
) -> int:
    removed = 0
    links = layout.layer_links_dir(name)
    for entry in skips.subdirs(links):
        if layout.digest_of(entry) not in blobs:
            storage.remove_tree(f"{links}/{entry}", ignore_errors=True)
            removed += 1
    return removed


def namespace_dirs(storage: FilesystemStorage) -> list[tuple[str, bool]]:
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


def repository_names(root: Path) -> list[str]:
    """The repositories in the tree (a directory with ``_manifests`` or ``_layers``), found
    without following links."""
    try:
        with open_storage(root) as storage:
            return [rel for rel, is_repository in namespace_dirs(storage) if rel and is_repository]
    except StorageError:
        return []


def _clean_namespaces(storage: FilesystemStorage) -> int:
    removed = 0
    for rel, _ in reversed(namespace_dirs(storage)):  # children before their parents
        if rel:
            removed += _rmdir(storage, layout.repository(rel))
    return removed


def clean_after_gc(root: Path, repositories: Collection[str], blobs: Collection[str]) -> Cleaned:
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
