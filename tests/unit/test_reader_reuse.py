"""A read that takes the manifests an earlier read parsed gives the inventory a read of its
own gives, whatever changed in between (:mod:`retentiond.storage.reading.reuse`).

The preview keeps what it parsed; the frozen read, seconds or minutes later, takes it where the
manifest's bytes are the same. Between the two the tree may have taken pushes, lost blobs to a
GC of held runs, or been tampered with: each case here is a tree read with ``keep``, changed,
then read both ways, and the two inventories (and their plans) compared whole.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from array import array
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.generate import Params, generate
from retentiond.core.blob_table import NO_ID, BlobTable, id_map
from retentiond.core.inventory import Inventory
from retentiond.core.manifest_table import remap_record
from retentiond.storage.reader import read_inventory, read_inventory_keeping
from retentiond.storage.reading.reuse import ParsedBefore, Reuse
from tests.unit.test_reader_parallel import (
    a_layer,
    blob_data,
    break_tree,
    image_manifests,
    plan_snapshot,
    repositories,
    snapshot,
    v2,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    generate(root, Params(repositories=16, tags=10, index_share=0.3, seed=11), jobs=1)
    return root


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another registry's tree: its images pushed into a copy of ``tree`` are new blobs."""
    root = tmp_path_factory.mktemp("other")
    generate(root, Params(repositories=3, tags=4, index_share=0.5, seed=12), jobs=1)
    return root


def records(inventory: Inventory) -> list[bytes | None]:
    """The packed records, by blob id: what the planner reads."""
    return list(inventory.manifests._records)


def assert_same_read(root: Path, before: ParsedBefore, workers: int) -> int:
    """The read that takes ``before`` gives the read of its own's inventory; how many it took."""
    fresh = read_inventory(root, workers=workers, read_created=True)
    taken = read_inventory(root, workers=workers, read_created=True, parsed_before=before)
    assert snapshot(taken) == snapshot(fresh)
    assert records(taken) == records(fresh)
    assert plan_snapshot(taken) == plan_snapshot(fresh)
    assert len(before) == 0  # released: not held through the plan
    return before.reused


def copy_of(tree: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(tree, root, symlinks=True)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unchanged_tree_takes_every_manifest(tree: Path, workers: int) -> None:
    first, before = read_inventory_keeping(tree, read_created=True, workers=workers)
    assert before is not None and len(before) == sum(1 for r in records(first) if r)
    taken = assert_same_read(tree, pickle.loads(pickle.dumps(before)), workers)
    assert taken == len(before)


def push_other(root: Path, other: Path) -> None:
    """Push ``other``'s images into ``root``: its blobs and repositories copied in."""
    shutil.copytree(v2(other) / "blobs", v2(root) / "blobs", dirs_exist_ok=True)
    for repo in repositories(other):
        name = repo.relative_to(v2(other) / "repositories")
        shutil.copytree(repo, v2(root) / "repositories" / f"pushed-{name}", symlinks=True)


def retag(root: Path) -> None:
    """A tag moved to another repository's manifest (same blobs, another tag link)."""
    repos = sorted(repositories(root))
    source = sorted((repos[0] / "_manifests/tags").iterdir())[0] / "current/link"
    target = sorted((repos[1] / "_manifests/tags").iterdir())[0] / "current/link"
    digest = source.read_text()
    target.write_text(digest)
    revision = repos[1] / "_manifests/revisions/sha256" / digest[7:]
    revision.mkdir(parents=True, exist_ok=True)
    (revision / "link").write_text(digest)


def collect_a_layer(root: Path) -> None:
    """A layer's blob gone (as a GC of held runs removes blobs): its manifests name a blob
    that is not there, and every id after it moves down."""
    layer = a_layer(read_inventory(root, workers=1), shared=True)
    shutil.rmtree(blob_data(root, layer).parent)


def push_and_collect(root: Path, other: Path) -> None:
    """Both: the ids shift both ways."""
    push_other(root, other)
    collect_a_layer(root)


def same_length_other_bytes(root: Path) -> None:
    """A manifest's bytes changed in place, its length kept: no longer its digest."""
    digest = image_manifests(read_inventory(root, workers=1))[0].digest
    data = blob_data(root, digest)
    doc = json.loads(data.read_bytes())
    doc["layers"] = doc["layers"][:1]
    text = json.dumps(doc).encode()
    data.write_bytes(text + b" " * (data.stat().st_size - len(text)))


def data_made_a_link(root: Path) -> None:
    """A manifest's ``data`` swapped for a link to a copy of the same bytes."""
    digest = image_manifests(read_inventory(root, workers=1))[1].digest
    data = blob_data(root, digest)
    copy = data.parent / "copy"
    shutil.copy(data, copy)
    data.unlink()
    os.symlink(copy, data)


def data_gone(root: Path) -> None:
    """A manifest blob's ``data`` missing (the read then stats every blob)."""
    blob_data(root, image_manifests(read_inventory(root, workers=1))[2].digest).unlink()


CHANGES: dict[str, Callable[[Path, Path], None]] = {
    "pushes": lambda root, other: push_other(root, other),
    "retag": lambda root, other: retag(root),
    "layer collected": lambda root, other: collect_a_layer(root),
    "pushes and a layer collected": lambda root, other: push_and_collect(root, other),
    "same length, other bytes": lambda root, other: same_length_other_bytes(root),
    "data made a link": lambda root, other: data_made_a_link(root),
    "data gone": lambda root, other: data_gone(root),
    "broken every way": lambda root, other: break_tree(root),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("workers", [1, 2])
def test_a_changed_tree_reads_as_a_read_of_its_own(
    tree: Path, other: Path, tmp_path: Path, change: str, workers: int
) -> None:
    root = copy_of(tree, tmp_path)
    _, before = read_inventory_keeping(root, read_created=True, workers=workers)
    assert before is not None
    CHANGES[change](root, other)
    taken = assert_same_read(root, before, workers)
    if change == "data gone":
        assert taken == 0  # the sized read that follows parses everything again
    elif change in ("pushes", "retag"):
        assert taken == len(read_inventory_keeping(tree)[1] or ())
    else:
        assert 0 < taken < sum(1 for r in records(read_inventory(tree)) if r)


def test_disputed_sizes_are_not_kept(tree: Path, tmp_path: Path) -> None:
    """A manifest that states a size the read did not settle on (another manifest states
    another) is parsed again: the sizes a taken manifest states are the earlier read's."""
    root = copy_of(tree, tmp_path)
    inventory = read_inventory(root, workers=1)
    shared = a_layer(inventory, shared=True)
    namers = [m for m in image_manifests(inventory) if shared in m.blobs]
    data = blob_data(root, namers[0].digest)
    doc = json.loads(data.read_bytes())
    for layer in doc["layers"]:
        if layer["digest"] == shared:
            layer["size"] += 1000
    data.write_bytes(json.dumps(doc).encode())
    _, before = read_inventory_keeping(root, workers=1)
    assert before is not None
    kept = set(before.ids)
    shared_id = read_inventory(root, workers=1).blobs.id_of(shared)
    assert shared_id not in before.silent
    for manifest in namers:
        assert read_inventory(root, workers=1).blobs.id_of(manifest.digest) not in kept
    assert_same_read(root, before, 1)


def test_a_taken_read_cannot_be_taken_again(tree: Path) -> None:
    _, before = read_inventory_keeping(tree, workers=1)
    assert before is not None
    read_inventory(tree, workers=1, parsed_before=before)
    assert before.reused > 0
    again = read_inventory_keeping(tree, workers=1)[0]
    with pytest.raises(ValueError, match="taken"):
        Reuse(before, again.blobs)


@pytest.mark.parametrize("seed", range(6))
def test_id_map_finds_each_digest_in_the_other_table(seed: int) -> None:
    rng = random.Random(seed)
    digests = {"sha256:" + rng.randbytes(32).hex() for _ in range(rng.choice([0, 5, 3000]))}
    old = set(rng.sample(sorted(digests), len(digests) * 2 // 3))
    new = {d for d in digests if d not in old or rng.random() < 0.9}
    if seed == 0:
        new = set(old)
    old_table = BlobTable.from_items((d, 1) for d in old)
    new_table = BlobTable.from_items((d, 1) for d in new)
    mapped = id_map(old_table.packed()[0], new_table.packed()[0])
    expected = [new_table.id_of(d) if d in new else NO_ID for d in old_table]
    assert mapped.tolist() == expected


def test_a_record_over_another_table_names_the_same_digests(tree: Path) -> None:
    first = read_inventory(tree, workers=1)
    image = image_manifests(first)[0]
    table = first.manifests
    own = first.blobs.id_of(image.digest)
    record = table._records[own]
    assert record is not None
    extra = {"sha256:" + (bytes([n]) * 32).hex() for n in range(5)}
    wider = BlobTable.from_items([*first.blobs.items(), *((d, 1) for d in extra)])
    new_ids = id_map(first.blobs.packed()[0], wider.packed()[0])
    remapped = remap_record(record, new_ids)
    assert remapped is not None
    assert remapped != record or new_ids.tolist() == list(range(len(first.blobs)))
    layer = first.blobs.id_of(image.blobs[-1])
    gone = array("I", new_ids)
    gone[layer] = NO_ID
    assert remap_record(record, gone) is None
