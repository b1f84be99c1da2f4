"""The compact inventory tables behave exactly as the plain values they stand for."""

from __future__ import annotations

from array import array
from datetime import UTC, datetime, timedelta

import pytest

from retentiond.core.blob_table import NO_ID, BlobTable, digest_bytes, inverted
from retentiond.core.inventory import Inventory
from retentiond.core.manifest_table import ManifestTable, pack_manifest
from retentiond.core.repository import Repository, RepositoryColumns, pack_links
from retentiond.core.values import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_SCHEMA1,
    Manifest,
    Problem,
    ProblemKind,
    Tag,
)
from tests.builders import InventoryBuilder

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def spread(n: int) -> str:
    """Digests spread over many shards (``d`` puts small numbers in shard 0)."""
    return "sha256:" + (f"{n * 7919 % 0x10000:04x}" * 16)


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
        table.id_of(d(1)),
        -1,
        -1,
        table.id_of(spread(3)),
    ]
    assert table.digests_of([table.id_of(d(2)), NO_ID]) == [d(2), None]


@pytest.mark.parametrize("odd", ["sha256:ABC", "sha256:" + "AB" * 32, "SHA256:" + "ab" * 32, "x"])
def test_blob_table_refuses_keys_that_are_not_canonical_digests(odd: str) -> None:
    with pytest.raises(ValueError, match="is not canonical"):
        BlobTable.from_items([(d(3), 3), (odd, 1)])
    table = BlobTable.from_items([(d(1), 1)])
    assert odd not in table and table.ids_of([odd]) == [-1]
    with pytest.raises(IndexError, match="no blob has id 1"):
        table.digest_of(1)


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
    assert inverted(bytes([0, 1, 1])) == bytes([1, 0, 0])


def test_blob_table_sizes_are_filled_in_place() -> None:
    table = BlobTable.from_items([(d(1), -1), (d(2), 20)])
    selected_before = table.select(bytearray(2), 0)
    table.sizes_to_fill()[table.id_of(d(1))] = 10
    assert table == {d(1): 10, d(2): 20} and list(table.sizes) == [10, 20]
    assert selected_before[d(1)] == 10  # looked up in the table


def image(n: int, config: int, *layers: int) -> Manifest:
    return Manifest(
        d(n), MEDIA_DOCKER_MANIFEST, blobs=(d(config), *map(d, layers)), config=d(config)
    )


def table_of(manifests: list[Manifest], blobs: BlobTable) -> ManifestTable:
    table = ManifestTable(blobs)
    for manifest in manifests:
        table.add(manifest.digest, pack_manifest(manifest, blobs.id_of(manifest.digest), blobs))
    return table


def test_manifest_table_gives_back_the_manifests() -> None:
    blobs = BlobTable.from_items((d(n), n) for n in range(1, 20))
    manifests = [
        image(1, 2, 3, 4),
        image(5, 99, 3, 98),  # config and a layer without a blob
        Manifest(d(6), MEDIA_OCI_INDEX, children=(d(1), d(97), d(5))),
        Manifest(d(7), MEDIA_DOCKER_MANIFEST, blobs=(d(8),), subject=d(1)),
        Manifest(d(9), MEDIA_SCHEMA1, blobs=(d(3),)),
    ]
    table = table_of(manifests, blobs)
    assert table.blobs is blobs
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
        blobs.id_of(d(1)),
        NO_ID,
        blobs.id_of(d(5)),
    ]


def test_packed_manifest_says_its_blob_ids() -> None:
    blobs = BlobTable.from_items((d(n), n) for n in range(1, 5))
    packed = pack_manifest(image(2, 3, 99, 4), blobs.id_of(d(2)), blobs)
    assert packed.blob_id == blobs.id_of(d(2))
    assert list(packed.blob_ids) == [blobs.id_of(d(3)), NO_ID, blobs.id_of(d(4))]
    assert packed.absent == (d(99),) and packed.plain is False
    index = Manifest(d(1), MEDIA_OCI_INDEX, children=(d(2),))
    assert list(pack_manifest(index, blobs.id_of(d(1)), blobs).blob_ids) == []


def test_manifest_table_refuses_what_no_record_holds() -> None:
    blobs = BlobTable.from_items([(d(1), 1)])
    with pytest.raises(ValueError, match=r"media type 'application/x-other'; a record holds"):
        pack_manifest(Manifest(d(1), "application/x-other"), 0, blobs)
    no_blob = pack_manifest(Manifest(d(2), MEDIA_OCI_INDEX), NO_ID, blobs)
    with pytest.raises(ValueError, match=f"manifest {d(2)} has no blob"):
        ManifestTable(blobs).add(d(2), no_blob)


def test_unparsable_manifest_is_marked_but_not_a_key() -> None:
    blobs = BlobTable.from_items([(d(1), 1)])
    table = ManifestTable(blobs)
    table.add(d(1), pack_manifest(None, 0, blobs))
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
        absent=(d(50), d(60)),  # revisions' first, then tags'
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
    assert list(repo.revision_ids) == [ids[1], NO_ID, ids[2]]
    assert list(repo.tag_ids) == [ids[1], ids[1], ids[4], NO_ID]
    assert repo.tags == tags and repo.revisions == revisions  # built once, then kept
    assert repo.tags is repo.tags
    assert repo.revision_digests() == [d(1), d(50), d(2)]  # from the values kept
    assert repo.tags_at([2, 1]) == [tags[2], tags[1]]


def test_empty_repository_columns() -> None:
    blobs = BlobTable()
    columns = RepositoryColumns(blobs, "", array("I"), array("d"), array("I"), array("d"))
    assert Repository("empty", columns=columns).materialize() == ((), {})


def test_pack_links_makes_the_columns_the_reader_keeps() -> None:
    blobs = BlobTable.from_items((d(n), n) for n in range(1, 6))
    tags = [("a", d(1), 1.0), ("b", d(60), 2.0), ("c", d(4), 3.0)]
    revisions = {d(1): 10.0, d(50): 20.0}
    columns = RepositoryColumns(blobs, *pack_links(tags, revisions, blobs))
    assert columns.tag_names == "a\0b\0c" and columns.absent == (d(50), d(60))
    assert list(columns.tag_ids) == [blobs.id_of(d(1)), NO_ID, blobs.id_of(d(4))]
    assert list(columns.revision_ids) == [blobs.id_of(d(1)), NO_ID]
    assert list(columns.tag_times) == [1.0, 2.0, 3.0]
    assert list(columns.revision_times) == [10.0, 20.0]
    tags_built, revisions_built = columns.materialize()
    assert [(t.name, t.digest, t.pushed_at.timestamp()) for t in tags_built] == tags
    assert {k: v.timestamp() for k, v in revisions_built.items()} == revisions


def test_inventory_builder_builds_what_the_reader_builds() -> None:
    problem = Problem("/r/x", "unreadable", ProblemKind.UNREADABLE, "b")
    inventory = (
        InventoryBuilder("/r")
        .blobs({d(2): 2, d(3): 3})
        .manifest(image(1, 2, 3), size=1)
        .blob(d(4), 4)
        .unparsed_manifest(d(4))
        .repository("b", [Tag("v1", d(1), T0)], {d(1): T0}, listed_by_gc=False)
        .tag("a", "z", d(1), T0)
        .tag("a", "y", d(9), T0 + timedelta(hours=1))
        .revision("a", d(4), T0)
        .problem(problem)
        .created(d(2), T0)
        .build()
    )
    assert inventory.manifests[d(1)] == image(1, 2, 3) and d(4) not in inventory.manifests
    assert inventory.manifests.has_record(inventory.blobs.id_of(d(4)))
    assert inventory.storage_bytes == 10
    assert [r.name for r in inventory.repositories] == ["a", "b"]  # in name order
    a, b = inventory.repositories
    assert [t.name for t in a.tags] == ["y", "z"] and a.tags[0].digest == d(9)
    assert list(a.tag_ids) == [NO_ID, inventory.blobs.id_of(d(1))]
    assert dict(a.revisions) == {d(4): T0} and a.listed_by_gc and not b.listed_by_gc
    assert b.tags == (Tag("v1", d(1), T0),)
    assert inventory.problems == (problem,) and inventory.created == {d(2): T0}
    with pytest.raises(ValueError, match="has no blob: add it with blob"):
        InventoryBuilder().manifest(image(1, 2, 3)).build()


def test_inventory_tables_share_one_blob_table() -> None:
    built = InventoryBuilder().blob(d(1), 1).repository("app", [Tag("v1", d(1), T0)]).build()
    other = BlobTable.from_items([(d(1), 1)])
    with pytest.raises(ValueError, match="manifest table must be over its blob table"):
        Inventory("/r", (), ManifestTable(other), built.blobs)
    with pytest.raises(ValueError, match="repository 'app' of an Inventory must be over"):
        Inventory("/r", built.repositories, ManifestTable(other), other)
