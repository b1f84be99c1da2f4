"""Tidy what the registry's GC leaves behind, while the registry is still in maintenance.

GC deletes blob directories but leaves empty ``blobs/sha256/xx/`` directories, empty revision
directories, and (in 2.8) ``_layers`` links whose blob is gone. Removing a dangling ``_layers``
link is safe: the registry would answer 404 for that blob anyway, and a later push re-links it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from retentiond.storage.reader import storage_v2


@dataclass(frozen=True, slots=True)
class Cleaned:
    blob_prefix_dirs: int = 0
    revision_dirs: int = 0
    layer_links: int = 0
    namespace_dirs: int = 0


def _rmdir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def _scan(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def clean_after_gc(root: Path, repositories: Collection[str], blobs: Collection[str]) -> Cleaned:
    """Remove empty blob prefix directories, empty revision directories, ``_layers`` links
    whose blob is not in ``blobs`` (the blobs present after GC), and empty namespace
    directories left by removed repositories."""
    v2 = storage_v2(root)
    prefixes = sum(
        _rmdir_if_empty(e.path)
        for e in _scan(f"{v2}/blobs/sha256")
        if e.is_dir(follow_symlinks=False)
    )
    revisions = links = 0
    for name in repositories:
        base = f"{v2}/repositories/{name}"
        for e in _scan(f"{base}/_manifests/revisions/sha256"):
            if e.is_dir(follow_symlinks=False) and not os.path.lexists(f"{e.path}/link"):
                revisions += _rmdir_if_empty(e.path)
        for e in _scan(f"{base}/_layers/sha256"):
            if (
                e.is_dir(follow_symlinks=False)
                and not e.is_symlink()
                and f"sha256:{e.name}" not in blobs
            ):
                shutil.rmtree(e.path, ignore_errors=True)
                links += 1
    namespaces = 0
    stack = [(f"{v2}/repositories", False)]
    order: list[str] = []
    while stack:  # depth-first, then remove empty directories bottom-up
        path, _ = stack.pop()
        order.append(path)
        for e in _scan(path):
            if e.is_dir(follow_symlinks=False) and not e.name.startswith("_"):
                stack.append((e.path, True))
    for path in reversed(order[1:]):
        namespaces += _rmdir_if_empty(path)
    return Cleaned(prefixes, revisions, links, namespaces)
