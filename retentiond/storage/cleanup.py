"""Tidy what the registry's GC leaves behind, while the registry is still in maintenance.

GC deletes blob directories but leaves empty ``blobs/sha256/xx/`` directories, empty revision
directories, and (in 2.8) ``_layers`` links whose blob is gone. Removing a dangling ``_layers``
link is safe: the registry would answer 404 for that blob anyway, and a later push re-links it.

Every directory is opened from the root's descriptor one component at a time without following
a symbolic link, and removed relative to its parent's descriptor (``rmdir``, or ``rmtree`` by
descriptor for a ``_layers`` link): a link anywhere is left alone, never followed, never
deleted through, and listed in :attr:`Cleaned.skipped`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from retentiond.errors import StorageError
from retentiond.storage.removal import V2, opened_v2
from retentiond.storage.safe_fs import UnsafeEntry, lstat_below, open_dir


@dataclass(frozen=True, slots=True)
class Cleaned:
    blob_prefix_dirs: int = 0
    revision_dirs: int = 0
    layer_links: int = 0
    namespace_dirs: int = 0
    #: paths below ``docker/registry/v2`` left alone: a link or a special file on the way
    skipped: tuple[str, ...] = ()


class _Skips:
    def __init__(self) -> None:
        self.paths: list[str] = []

    @contextmanager
    def opened(self, path: str, v2_fd: int) -> Iterator[int | None]:
        """``path`` below v2 opened without following links; None when it is missing,
        unreadable or unsafe (then listed)."""
        try:
            fd = open_dir(path, v2_fd)
        except UnsafeEntry:
            self.paths.append(path)
            yield None
            return
        except OSError:
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)


def _subdirs(fd: int) -> list[str]:
    """Names of the real directories in ``fd`` (links and files left out)."""
    try:
        with os.scandir(fd) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _rmdir(name: str, dir_fd: int) -> bool:
    try:
        os.rmdir(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _clean_prefixes(v2_fd: int, skips: _Skips) -> int:
    with skips.opened("blobs/sha256", v2_fd) as fd:
        return 0 if fd is None else sum(_rmdir(entry, fd) for entry in _subdirs(fd))


def _clean_revisions(v2_fd: int, name: str, skips: _Skips) -> int:
    removed = 0
    with skips.opened(f"repositories/{name}/_manifests/revisions/sha256", v2_fd) as fd:
        if fd is None:
            return 0
        for entry in _subdirs(fd):
            try:
                lstat_below(f"{entry}/link", fd)
            except FileNotFoundError:
                removed += _rmdir(entry, fd)
            except (OSError, UnsafeEntry):
                continue
    return removed


def _clean_layers(v2_fd: int, name: str, blobs: Collection[str], skips: _Skips) -> int:
    removed = 0
    with skips.opened(f"repositories/{name}/_layers/sha256", v2_fd) as fd:
        if fd is None:
            return 0
        for entry in _subdirs(fd):
            if f"sha256:{entry}" not in blobs:
                shutil.rmtree(entry, ignore_errors=True, dir_fd=fd)
                removed += 1
    return removed


def namespace_dirs(v2_fd: int) -> list[tuple[str, bool]]:
    """Every directory below ``repositories/`` outside repositories' own ``_`` directories, as
    (path relative to ``repositories``, whether it is a repository), parents first. Links are
    neither followed nor listed."""
    out: list[tuple[str, bool]] = []
    stack = ["repositories"]
    while stack:
        path = stack.pop()
        try:
            fd = open_dir(path, v2_fd)
        except (OSError, UnsafeEntry):
            continue
        try:
            names = _subdirs(fd)
        finally:
            os.close(fd)
        rel = path.partition("/")[2]
        out.append((rel, "_layers" in names or "_manifests" in names))
        stack.extend(f"{path}/{n}" for n in sorted(names, reverse=True) if not n.startswith("_"))
    return out


def repository_names(root: Path) -> list[str]:
    """The repositories in the tree (a directory with ``_manifests`` or ``_layers``), found
    without following links."""
    try:
        with opened_v2(root) as v2_fd:
            return [rel for rel, is_repository in namespace_dirs(v2_fd) if rel and is_repository]
    except StorageError:
        return []


def _clean_namespaces(v2_fd: int) -> int:
    removed = 0
    for rel, _ in reversed(namespace_dirs(v2_fd)):  # children before their parents
        if not rel:
            continue
        parent, _, base = f"repositories/{rel}".rpartition("/")
        try:
            fd = open_dir(parent, v2_fd)
        except (OSError, UnsafeEntry):
            continue
        try:
            removed += _rmdir(base, fd)
        finally:
            os.close(fd)
    return removed


def clean_after_gc(root: Path, repositories: Collection[str], blobs: Collection[str]) -> Cleaned:
    """Remove empty blob prefix directories, empty revision directories, ``_layers`` links
    whose blob is not in ``blobs`` (the blobs present after GC), and empty namespace
    directories left by removed repositories."""
    skips = _Skips()
    with opened_v2(root) as v2_fd:
        prefixes = _clean_prefixes(v2_fd, skips)
        revisions = links = 0
        for name in repositories:
            revisions += _clean_revisions(v2_fd, name, skips)
            links += _clean_layers(v2_fd, name, blobs, skips)
        namespaces = _clean_namespaces(v2_fd)
    return Cleaned(
        prefixes, revisions, links, namespaces, tuple(f"{root}/{V2}/{p}" for p in skips.paths)
    )
