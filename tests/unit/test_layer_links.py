"""``layer_link_candidates``: the ``_layers`` links a GC may have left dangling, from the
inventory a run planned on and the blobs it reclaims."""

from __future__ import annotations

from datetime import UTC, datetime

from retentiond.core.blob_table import BlobTable
from retentiond.core.layer_links import layer_link_candidates
from retentiond.core.values import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest, Tag
from tests.builders import InventoryBuilder

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def image(n: int, config: int, *layers: int) -> Manifest:
    blobs = (d(config), *map(d, layers))
    return Manifest(d(n), MEDIA_OCI_MANIFEST, blobs=blobs, config=d(config))


def sizes(*ns: int) -> dict[str, int]:
    return {d(n): 10 * n for n in ns}


def inventory_of_two_repositories() -> InventoryBuilder:
    """app: v1 (tagged) and an untagged revision; web: v1 again, and an index with a child.
    Blob 9 is a layer of app's untagged image that app's v1 also has."""
    old = image(100, 1, 2, 9)
    new = image(101, 3, 4, 9)
    child = image(102, 5, 6)
    index = Manifest(d(103), MEDIA_OCI_INDEX, children=(d(102),))
    builder = InventoryBuilder().blobs(sizes(1, 2, 3, 4, 5, 6, 9))
    for manifest in (old, new, child, index):
        builder.manifest(manifest, size=1)
    builder.repository("app", [Tag("v1", new.digest, WHEN)], {new.digest: WHEN, old.digest: WHEN})
    builder.repository(
        "web",
        [Tag("v1", new.digest, WHEN), Tag("multi", index.digest, WHEN)],
        {new.digest: WHEN, index.digest: WHEN, child.digest: WHEN},
    )
    return builder


def test_candidates_are_the_reclaimable_blobs_of_each_repository_manifests() -> None:
    inventory = inventory_of_two_repositories().build()
    reclaimable = sizes(1, 2, 5, 6, 9)  # app's untagged image, web's child, a shared layer
    assert list(layer_link_candidates(inventory, reclaimable)) == [
        ("app", d(1)),
        ("app", d(2)),
        ("app", d(9)),
        ("web", d(5)),
        ("web", d(6)),
        ("web", d(9)),
    ]


def test_each_pair_is_given_once_and_manifests_reclaimed_are_candidates_too() -> None:
    inventory = inventory_of_two_repositories().build()
    reclaimable = {**sizes(9), d(100): 1, d(102): 1}
    assert list(layer_link_candidates(inventory, reclaimable)) == [
        ("app", d(9)),
        ("app", d(100)),
        ("web", d(9)),
        ("web", d(102)),
    ]


def test_a_selection_of_the_inventory_table_and_a_table_of_its_own_give_the_same() -> None:
    inventory = inventory_of_two_repositories().build()
    blobs = inventory.blobs
    flags = bytearray(blobs.id_count)
    for digest in (d(2), d(6)):
        flags[blobs.id_of(digest)] = 1
    selection = blobs.select(flags, 1)
    own = BlobTable.from_items(sizes(2, 6).items())
    expected = [("app", d(2)), ("web", d(6))]
    assert list(layer_link_candidates(inventory, selection)) == expected
    assert list(layer_link_candidates(inventory, own)) == expected


def test_nothing_reclaimable_or_digests_the_tree_does_not_hold_give_nothing() -> None:
    inventory = inventory_of_two_repositories().build()
    assert list(layer_link_candidates(inventory, {})) == []
    assert list(layer_link_candidates(inventory, sizes(77, 78))) == []


def test_revisions_without_a_blob_and_repositories_without_revisions_are_passed() -> None:
    builder = inventory_of_two_repositories()
    builder.repository("empty")
    builder.revision("ghost", d(500), WHEN)  # its manifest blob is gone
    inventory = builder.build()
    names = {name for name, _ in layer_link_candidates(inventory, sizes(1, 2, 3, 4, 5, 6, 9))}
    assert names == {"app", "web"}
