"""Which ``_layers`` links a GC may have left dangling: the ones to clean after a run.

The registry links a blob into a repository's ``_layers`` when it is uploaded to or mounted
into that repository: the configs and layers of the images pushed there (a manifest is linked
under ``_manifests/revisions`` instead, and a list's or an index's children have revision
links of their own in the repository). The 2.8 GC deletes blobs but never those links, so
after a run the links left dangling are among the blobs of the repository's manifests that the
GC reclaimed. A link to a blob no manifest of the repository names (an upload never
referenced) is not a candidate: it is left as it is, as a registry left to itself leaves it.

:func:`layer_link_candidates` lists them from the inventory the run planned on, without
building a set of them all: at a million tags there are millions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice

from retentiond.core.blob_table import NO_ID, BlobTable
from retentiond.core.inventory import Inventory

#: how many digests are looked up at once (a list of ids this long at a time)
_LOOKUP_BATCH = 65536


def layer_link_candidates(
    inventory: Inventory, reclaimable: Mapping[str, int]
) -> Iterator[tuple[str, str]]:
    """``(repository, digest)`` for every blob of ``reclaimable`` that a manifest of the
    repository references (its config, its layers; the manifests of all its revision links,
    tagged or not), each pair once, repository by repository in the inventory's order and
    within one in the blob table's order (the blob store's).

    The manifests' own blobs and an index's children are given too: the registry does not
    link them under ``_layers``, but a client may upload any blob, and a candidate without a
    link costs one look at the tree."""
    blobs = inventory.blobs
    wanted = _flags(blobs, reclaimable)
    marks = bytearray(blobs.id_count)
    manifests = inventory.manifests
    for repo in inventory.repositories:
        revisions = [i for i in repo.revision_ids if i != NO_ID]
        if not revisions:
            continue
        manifests.mark(revisions, marks)
        found = _marked(marks)
        digests = blobs.digests_of(i for i in found if wanted[i])
        for digest in digests:
            assert digest is not None, "marked ids are ids of the table"
            yield repo.name, digest
        for blob_id in found:
            marks[blob_id] = 0


def _flags(blobs: BlobTable, digests: Mapping[str, int]) -> bytearray:
    """A 1 at the id of each blob of ``digests`` that the table has, a 0 elsewhere."""
    flags = bytearray(blobs.id_count)
    keys = iter(digests)
    while batch := list(islice(keys, _LOOKUP_BATCH)):
        for blob_id in blobs.ids_of(batch):
            if blob_id >= 0:
                flags[blob_id] = 1
    return flags


def _marked(marks: bytearray) -> list[int]:
    """The ids flagged in ``marks``, in order (the scan skips runs of zeros in C)."""
    found: list[int] = []
    at = marks.find(1)
    while at >= 0:
        found.append(at)
        at = marks.find(1, at + 1)
    return found
