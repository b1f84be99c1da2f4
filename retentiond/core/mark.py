"""Reachability of manifests within a repository, and the registry GC's global mark phase."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from itertools import compress

from retentiond.core.blob_table import NO_ID, BlobSelection, inverted
from retentiond.core.inventory import Inventory
from retentiond.core.manifest_table import ManifestTable


def attachments(linked: Iterable[str], manifests: ManifestTable) -> dict[str, list[str]]:
    """Subject digest -> the manifests in ``linked`` that name it as their ``subject``."""
    if not manifests.has_subjects:
        return {}
    subject_of = manifests.subject_of
    attached: dict[str, list[str]] = {}
    for digest in linked:
        subject = subject_of(digest)
        if subject is not None:
            attached.setdefault(subject, []).append(digest)
    return attached


def reachable(
    roots: Iterable[str], manifests: ManifestTable, attached: Mapping[str, list[str]]
) -> set[str]:
    """Every manifest reached from ``roots`` through list/index children, recursively.

    The manifests ``attached`` to a manifest reached (see :func:`attachments`: signatures,
    SBOMs pushed by digest) are reached too, with everything they reference.
    """
    children_of = manifests.children_of
    # most manifests lead nowhere (images, unsigned): take them in one step, walk the rest
    parents = manifests.parents
    seen: set[str] = set(roots)
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
    Returns one flag per blob id of ``inventory.blobs`` (1: marked).
    """
    table = inventory.manifests
    marks = bytearray(inventory.blobs.id_count)
    for repo in inventory.repositories:
        if repo.name in read_in_part:
            table.mark((i for i in repo.tag_ids if i != NO_ID), marks)
        if not repo.listed_by_gc or repo.name in removed_repositories:
            continue
        ids: Iterable[int] = repo.revision_ids
        gone = unlinked.get(repo.name)
        if gone is not None:
            ids = compress(ids, inverted(gone))
        table.mark((i for i in ids if i != NO_ID), marks)
    return marks


def unmarked(inventory: Inventory, marks: bytearray) -> BlobSelection:
    """The blobs the sweep deletes: every blob with data that is not marked, with its size."""
    return inventory.blobs.select(marks, 0)
