"""Reachability of manifests within a repository, and the registry GC's global mark phase."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from itertools import compress

from retentiond.core.inventory import NO_ID, BlobSelection, Inventory, Manifest, ManifestTable


def _accessors(
    manifests: Mapping[str, Manifest],
) -> tuple[Callable[[str], tuple[str, ...]], Callable[[str], str | None]]:
    """Children and subject of a digest, without building Manifest values when possible."""
    if isinstance(manifests, ManifestTable):
        return manifests.children_of, manifests.subject_of

    def children(digest: str) -> tuple[str, ...]:
        m = manifests.get(digest)
        return m.children if m is not None else ()

    def subject(digest: str) -> str | None:
        m = manifests.get(digest)
        return m.subject if m is not None else None

    return children, subject


def attachments(linked: Iterable[str], manifests: Mapping[str, Manifest]) -> dict[str, list[str]]:
    """Subject digest -> the manifests in ``linked`` that name it as their ``subject``."""
    if isinstance(manifests, ManifestTable) and not manifests.has_subjects:
        return {}
    _, subject_of = _accessors(manifests)
    attached: dict[str, list[str]] = {}
    for digest in linked:
        subject = subject_of(digest)
        if subject is not None:
            attached.setdefault(subject, []).append(digest)
    return attached


def reachable(
    roots: Iterable[str],
    manifests: Mapping[str, Manifest],
    linked: Collection[str] = (),
    *,
    attached: Mapping[str, list[str]] | None = None,
) -> set[str]:
    """Every manifest reached from ``roots`` through list/index children, recursively.

    Manifests in ``linked`` whose ``subject`` is reached (signatures, SBOMs pushed by digest)
    are reached too, with everything they reference. ``attached`` (see :func:`attachments`)
    may be given instead of ``linked`` when it is already known.
    """
    children_of, _ = _accessors(manifests)
    if attached is None:
        attached = attachments(linked, manifests)
    seen: set[str] = set()
    stack = list(roots)
    if isinstance(manifests, ManifestTable):
        # most manifests lead nowhere (images, unsigned): take them in one step, walk the rest
        parents = manifests.parents
        seen.update(stack)
        stack = [d for d in seen if d in parents or d in attached]
        seen.difference_update(stack)
    while stack:
        digest = stack.pop()
        if digest in seen:
            continue
        seen.add(digest)
        stack.extend(children_of(digest))
        if attached:
            stack.extend(attached.get(digest, ()))
    return seen


def gc_mark(
    inventory: Inventory,
    unlinked: Mapping[str, bytes | bytearray],
    removed_repositories: Collection[str] = (),
    read_in_part: Collection[str] = (),
) -> bytearray:
    """What the registry 2.8 GC marks once the given revisions and repositories are gone.

    For every repository it lists (those with ``_layers``), for every revision link whose blob
    exists: the manifest blob and what it references (a list's children, not recursed into).
    ``unlinked`` flags, per repository, the revisions removed (1, in ``revisions`` order).
    ``read_in_part``: repositories retentiond could not read whole (a link, an unreadable
    directory): the GC may see revisions there that retentiond did not, so what their tags
    name is marked too; no reclaimable byte is then promised on the strength of something
    that could not be read.
    Returns one flag per blob id of ``inventory.blob_table`` (1: marked).
    """
    blobs, table = inventory.blob_table, inventory.manifest_table
    marks = bytearray(blobs.id_count)
    for repo in inventory.repositories:
        if repo.name in read_in_part:
            table.mark((i for i in repo.tag_ids(blobs) if i != NO_ID), marks)
        if not repo.listed_by_gc or repo.name in removed_repositories:
            continue
        ids: Iterable[int] = repo.revision_ids(blobs)
        gone = unlinked.get(repo.name)
        if gone is not None:
            ids = compress(ids, gone.translate(_FLIP))
        table.mark((i for i in ids if i != NO_ID), marks)
    return marks


#: bytes.translate table that turns 0 into 1 and 1 into 0
_FLIP = bytes([1, 0]) + bytes(254)


def unmarked(inventory: Inventory, marks: bytearray) -> BlobSelection:
    """The blobs the sweep deletes: every blob with data that is not marked, with its size."""
    return inventory.blob_table.select(marks, 0)
