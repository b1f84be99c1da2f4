"""The compact inventory values behave exactly as the plain ones they stand for."""

from __future__ import annotations

from array import array
from datetime import UTC, datetime, timedelta

import pytest

from retentiond.core.inventory import (
    MANIFEST_MEDIA_TYPES,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    NO_ID,
    BlobTable,
    Inventory,
    Manifest,
    ManifestTable,
    Repository,
    RepositoryColumns,
    Tag,
    digest_bytes,
    pack_manifest,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def spread(n: int) -> str:
    """Digests spread over many shards (``d`` puts small numbers in shard 0)."""
    return "sha256:" + (f"{n * 7919:04x}" * 16)


BLOBS = {d(1): 10, d(2): 20, spread(3): 30, spread(4): 4000, spread(70000): 7, d(0): 0}


def test_digest_bytes_takes_only_canonical_digests() -> None:
    assert digest_bytes(d(5)) == bytes(31) + b"\x05"
    assert digest_bytes(d(10).upper().replace("SHA256", "sha256")) is None
    assert digest_bytes("sha256:" + "a" * 63) is None
    assert digest_bytes("sha256:" + "a " * 32) is None
    assert digest_bytes("sha512:" + "a" * 64) is None


def test_blob_table_is_the_mapping_it_was_built_from() -> None:
    table = BlobTable.from_items(BLOBS.items())
    assert dict(table) == BLOBS and table == BLOBS
    assert len(table) == len(BLOBS) == table.id_count
    assert dict(table.items()) == BLOBS
    assert sorted(table.values()) == sorted(BLOBS.values())
    assert list(table.values()) == [table[k] for k in table]
    assert spread(4) in table and table[spread(4)] == 4000
    assert d(9) not in table and table.get(d(9)) is None
    with pytest.raises(KeyError):
        table[d(9)]
    for digest in BLOBS:
        blob_id = table.id_of(digest)
        assert table.digest_of(blob_id) == digest and table.size_of(blob_id) == BLOBS[digest]
    assert table.ids_of([d(1), d(9), "nonsense", spread(3)]) == [
        table.id_of(d(1)), -1, -1, table.id_of(spread(3))
    ]
    assert table.digests_of([table.id_of(d(2)), NO_ID]) == [d(2), None]


def test_blob_table_keeps_odd_keys_given_by_hand() -> None:
    odd = {"sha256:ABC": 1, d(1).upper(): 2, d(3): 3}
    table = BlobTable.from_items(odd.items())
    assert dict(table) == odd
    assert d(1) not in table  # upper case is another (invalid) key, not this digest
    assert table.digest_of(table.id_of("sha256:ABC")) == "sha256:ABC"


def test_blob_table_finds_only_aligned_digests() -> None:
    # a digest that appears across the boundary of two others is not one of them
    a, b = "sha256:" + "ab" * 32, "sha256:" + "ab" * 16 + "cd" * 16
    inner = "sha256:" + "ab" * 24 + "cd" * 8
    table = BlobTable.from_items([(a, 1), (b, 2)])
    assert inner not in table and a in table and b in table


def test_blob_table_select() -> None:
    table = BlobTable.from_items(BLOBS.items())
    flags = bytearray(table.id_count)
    flags[table.id_of(d(1))] = 1
    flags[table.id_of(spread(4))] = 1
    unmarked = table.select(flags, 0)
    assert unmarked == {k: v for k, v in BLOBS.items() if k not in (d(1), spread(4))}
    assert sum(unmarked.values()) == sum(BLOBS.values()) - 4010
    assert d(1) not in unmarked and d(2) in unmarked
    assert set(table.select(flags, 1)) == {d(1), spread(4)}
    assert table.select(bytearray(table.id_count), 1) == {}


def image(n: int, config: int, *layers: int) -> Manifest:
    return Manifest(
        d(n), MEDIA_DOCKER_MANIFEST, blobs=(d(config), *map(d, layers)), config=d(config)
    )


def test_manifest_table_gives_back_the_manifests() -> None:
    blobs = BlobTable.from_items((d(n), n) for n in range(1, 20))
    manifests = [
        image(1, 2, 3, 4),
        image(5, 99, 3, 98),  # config and a layer without a blob
        Manifest(d(6), MEDIA_OCI_INDEX, children=(d(1), d(97), d(5))),
        Manifest(d(7), MEDIA_DOCKER_MANIFEST, blobs=(d(8),), subject=d(1)),
        Manifest(d(96), MEDIA_OCI_INDEX, children=(d(1),)),  # a manifest with no blob
        Manifest(d(9), "application/vnd.example+json", blobs=(d(3),)),
    ]
    table = ManifestTable.from_manifests(manifests, blobs)
    assert len(table) == len(manifests)
    assert dict(table) == {m.digest: m for m in manifests}
    assert table.children_of(d(6)) == (d(1), d(97), d(5)) and table.children_of(d(1)) == ()
    assert table.subject_of(d(7)) == d(1) and table.has_subjects
    assert table.config_of(d(5)) == d(99) and table.config_of(d(6)) is None
    assert d(2) not in table
    marks = bytearray(blobs.id_count)
    table.mark([blobs.id_of(d(6))], marks)
    assert set(blobs.select(marks, 1)) == {d(6), d(1), d(5)}  # children marked, not recursed
    assert list(table.children_ids(blobs.id_of(d(6)))) == [
        blobs.id_of(d(1)), NO_ID, blobs.id_of(d(5))
    ]


def test_unparsable_manifest_is_marked_but_not_a_key() -> None:
    blobs = BlobTable.from_items([(d(1), 1)])
    table = ManifestTable(blobs)
    table.add(d(1), pack_manifest(None, 0, blobs, list(MANIFEST_MEDIA_TYPES)))
    assert d(1) not in table and len(table) == 0 and table.has_record(0)
    marks = bytearray(1)
    table.mark([0], marks)
    assert marks == bytearray([1])


def test_repository_columns_materialize_like_plain_values() -> None:
    blobs = BlobTable.from_items((d(n), n) for n in range(1, 6))
    ids = {n: blobs.id_of(d(n)) for n in range(1, 6)}
    columns = RepositoryColumns(
        blobs=blobs,
        tag_names="\0".join(["a", "b", "c", "gone"]),
        tag_ids=array("I", [ids[1], ids[1], ids[4], NO_ID]),
        tag_times=array("d", [T0.timestamp(), T0.timestamp() + 1, T0.timestamp() + 2, 5.0]),
        revision_ids=array("I", [ids[1], NO_ID, ids[2]]),
        revision_times=array("d", [T0.timestamp() - 10, 1.0, 2.0]),
        missing=(d(50), d(60)),  # revisions' first, then tags'
    )
    repo = Repository("team/app", columns=columns, last_activity=T0)
    tags, revisions = repo.materialize()
    assert tags == (
        Tag("a", d(1), T0),
        Tag("b", d(1), T0 + timedelta(seconds=1)),
        Tag("c", d(4), T0 + timedelta(seconds=2)),
        Tag("gone", d(60), datetime.fromtimestamp(5.0, UTC)),
    )
    assert tags[0].digest is tags[1].digest  # one string per digest
    assert list(revisions) == [d(1), d(50), d(2)]
    assert revisions[d(1)] == T0 - timedelta(seconds=10)
    assert repo.revision_digests() == [d(1), d(50), d(2)]
    assert repo.tags_at([3, 0]) == [tags[3], tags[0]]
    assert repo.tag_count == 4 and repo.revision_count == 3
    assert list(repo.revision_ids(blobs)) == [ids[1], NO_ID, ids[2]]
    assert repo.tags == tags and repo.revisions == revisions  # built once, then kept
    assert repo.tags is repo.tags
    assert repo.revision_digests() == [d(1), d(50), d(2)]  # from the values kept
    assert repo.tags_at([2, 1]) == [tags[2], tags[1]]


def test_empty_repository_columns() -> None:
    blobs = BlobTable()
    columns = RepositoryColumns(blobs, "", array("I"), array("d"), array("I"), array("d"))
    assert Repository("empty", columns=columns).materialize() == ((), {})


def test_inventory_by_hand_gets_compact_tables() -> None:
    repo = Repository("app", (Tag("v1", d(1), T0),), {d(1): T0})
    inventory = Inventory("/r", (repo,), {d(1): image(1, 2, 3)}, {d(1): 1, d(2): 2, d(3): 3})
    assert isinstance(inventory.blobs, BlobTable)
    assert isinstance(inventory.manifests, ManifestTable)
    assert inventory.manifests[d(1)] == image(1, 2, 3)
    assert inventory.storage_bytes == 6
    assert list(repo.revision_ids(inventory.blob_table)) == [inventory.blob_table.id_of(d(1))]
