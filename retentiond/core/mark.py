"""Reachability of manifests within a repository, and the registry GC's global mark phase."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from retentiond.core.inventory import Inventory, Manifest


def reachable(
    roots: Iterable[str],
    manifests: Mapping[str, Manifest],
    linked: Collection[str] = (),
) -> set[str]:
    """Every manifest reached from ``roots`` through list/index children, recursively.

    Manifests in ``linked`` whose ``subject`` is reached (signatures, SBOMs pushed by digest)
    are reached too, with everything they reference.
    """
    seen: set[str] = set()
    stack = list(roots)
    attached: dict[str, list[str]] = {}
    for digest in linked:
        m = manifests.get(digest)
        if m is not None and m.subject is not None:
            attached.setdefault(m.subject, []).append(digest)
    while stack:
        digest = stack.pop()
        if digest in seen:
            continue
        seen.add(digest)
        m = manifests.get(digest)
        if m is not None:
            stack.extend(m.children)
        stack.extend(attached.get(digest, ()))
    return seen


def gc_mark(
    inventory: Inventory,
    unlinked: Mapping[str, Collection[str]],
    removed_repositories: Collection[str] = (),
) -> set[str]:
    """The blobs the registry 2.8 GC marks once the given revisions and repositories are gone.

    For every repository it lists (those with ``_layers``), for every revision link whose blob
    exists: the manifest blob and what it references (a list's children, not recursed into).
    """
    marked: set[str] = set()
    for repo in inventory.repositories:
        if not repo.listed_by_gc or repo.name in removed_repositories:
            continue
        gone = unlinked.get(repo.name, ())
        for digest in repo.revisions:
            if digest in gone or digest not in inventory.blobs:
                continue
            marked.add(digest)
            manifest = inventory.manifests.get(digest)
            if manifest is not None:
                marked.update(manifest.references)
    return marked


def unmarked(inventory: Inventory, marked: Collection[str]) -> dict[str, int]:
    """The blobs the sweep deletes: every blob with data that is not marked, with its size."""
    return {d: size for d, size in inventory.blobs.items() if d not in marked}
