"""The reader gives the same inventory with worker processes as without, broken trees included.

Trees come from ``bench/generate.py`` (small, a second or less) and are broken on purpose in
every way the reader knows about.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.generate import Params, generate
from retentiond.core.inventory import Inventory, ProblemKind
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import ManifestUnlink, PlanEntries, TagDeletion
from retentiond.policy.model import KeepRules, Policy, Safety, Untagged
from retentiond.policy.selectors import Selector
from retentiond.storage.reader import read_blob_sizes, read_inventory
from tests.builders import InventoryBuilder

NOW = datetime(2026, 1, 2, tzinfo=UTC)
POLICY = Policy(
    name="last-3",
    repositories=Selector.parse(["**"]),
    tags=Selector.parse(["*"]),
    keep=KeepRules(last=3),
    untagged=Untagged.DELETE,
    allow_mass_delete=True,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    generate(root, Params(repositories=24, tags=12, index_share=0.3, seed=7), jobs=1)
    return root


def v2(root: Path) -> Path:
    return root / "docker/registry/v2"


def snapshot(inventory: Inventory) -> dict[str, Any]:
    """Everything an inventory says, as plain values."""
    return {
        "repositories": [
            (
                r.name,
                r.tags,
                dict(r.revisions),
                r.listed_by_gc,
                r.last_activity,
                r.layers,
                r.has_nested,
            )
            for r in inventory.repositories
        ],
        "manifests": dict(inventory.manifests),
        "blobs": dict(inventory.blobs),
        "problems": inventory.problems,
        "created": dict(inventory.created),
    }


def plan_snapshot(inventory: Inventory) -> dict[str, Any]:
    plan = make_plan(inventory, [POLICY], Safety(untagged_min_age=timedelta(hours=1)), NOW)
    return {
        "tags": plan.tags_deleted,
        "manifests": plan.manifests_unlinked,
        "refused": plan.refused,
        "reclaimable": dict(plan.reclaimable),
        "before": dict(plan.already_unreferenced),
        "summaries": plan.per_repository,
    }


def repositories(root: Path) -> Iterator[Path]:
    for dirpath, dirs, _ in os.walk(v2(root) / "repositories"):
        if "_manifests" in dirs:
            yield Path(dirpath)


def test_workers_read_what_one_process_reads(tree: Path) -> None:
    one = read_inventory(tree, workers=1, read_created=True)
    two = read_inventory(tree, workers=2, read_created=True)
    assert snapshot(one) == snapshot(two)
    assert plan_snapshot(one) == plan_snapshot(two)
    assert one.problems == ()
    assert len(one.repositories) == 24 and sum(r.tag_count for r in one.repositories) == 24 * 12
    assert dict(one.blobs) == read_blob_sizes(tree)
    assert len(one.created) > 0


def test_a_read_tree_plans_as_its_plain_values(tree: Path) -> None:
    """The plan of a read tree keeps its entries as positions in the compact repositories and
    builds them when read; they are the tuples the same inventory built from its plain values
    gives."""
    read = read_inventory(tree, workers=1)
    by_hand = InventoryBuilder(read.root).blobs(dict(read.blobs))
    for manifest in read.manifests.values():
        by_hand.manifest(manifest)
    for r in read_inventory(tree, workers=1).repositories:
        by_hand.repository(
            r.name, r.tags, r.revisions, listed_by_gc=r.listed_by_gc, last_activity=r.last_activity
        )
    for problem in read.problems:
        by_hand.problem(problem)
    compact, from_values = plan_snapshot(read), plan_snapshot(by_hand.build())
    assert isinstance(compact["tags"], PlanEntries) and len(compact["tags"]) > 24
    assert len(compact["manifests"]) > 24
    assert compact == from_values
    assert all(type(t) is TagDeletion for t in compact["tags"])
    assert all(type(m) is ManifestUnlink for m in compact["manifests"])
    assert list(compact["tags"]) == list(compact["tags"])  # read again, built again, the same


def test_progress_is_reported(tree: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    read_inventory(tree, workers=2, progress=lambda *a: seen.append(a))
    assert seen[0] == ("blob directories", 0, 256)
    assert ("blob directories", 256, 256) in seen
    assert ("repositories", 0, 24) in seen and ("repositories", 24, 24) in seen
    assert seen[-1][0] == "manifests" and seen[-1][1] == seen[-1][2]


def test_tag_history_and_layer_links_are_not_read(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tree, root, symlinks=True)
    before = snapshot(read_inventory(root, workers=1))
    for repo in repositories(root):
        for tag in (repo / "_manifests/tags").iterdir():
            shutil.rmtree(tag / "index")
            (tag / "index").write_bytes(b"not a directory")
        shutil.rmtree(repo / "_layers/sha256")
        (repo / "_layers/sha256").mkdir()
    after = snapshot(read_inventory(root, workers=1))
    assert [r[:3] for r in after["repositories"]] == [r[:3] for r in before["repositories"]]
    assert after["problems"] == ()


def break_tree(root: Path) -> None:
    """One repository broken in each way the reader must notice."""
    repos = sorted(repositories(root))
    blobs = v2(root) / "blobs/sha256"

    def tag_link(repo: Path, n: int = 0) -> Path:
        return sorted((repo / "_manifests/tags").iterdir())[n] / "current/link"

    def blob_dir(digest: str) -> Path:
        return blobs / digest[7:9] / digest[7:]

    tag_link(repos[0]).write_bytes(b"")  # an interrupted write
    shutil.rmtree(blob_dir(tag_link(repos[1]).read_text()))  # a manifest blob gone
    garbage = blob_dir(tag_link(repos[2]).read_text()) / "data"
    garbage.write_bytes(b"this is not a manifest")
    os.remove(tag_link(repos[3], 1))  # a tag directory without current/link
    revisions = sorted((repos[4] / "_manifests/revisions/sha256").iterdir())
    (revisions[0] / "link").write_text("sha256:" + "0" * 64)  # holds another digest
    os.symlink(repos[5], repos[5].parent / (repos[5].name + "-symlinked"))
    (blobs / "zz" / "not-a-digest").mkdir(parents=True)  # the GC aborts on this
    (blobs / "zz" / "not-a-digest" / "data").write_bytes(b"x")
    os.symlink(garbage, blobs / "00" / ("0" * 64))
    # a blob in a prefix directory that is not its own
    stray = sorted(p for p in (blobs / "ab").iterdir())[0] if (blobs / "ab").exists() else None
    if stray is not None:
        os.rename(stray, blobs / "cd" / stray.name)
    shutil.rmtree(repos[6] / "_layers")  # manifests but no _layers: the GC would skip it


def test_broken_trees_read_the_same_with_workers(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(tree, root, symlinks=True)
    break_tree(root)
    one = read_inventory(root, workers=1)
    two = read_inventory(root, workers=2)
    assert snapshot(one) == snapshot(two)
    assert plan_snapshot(one) == plan_snapshot(two)
    messages = [p.message for p in one.problems]
    assert any("link file is empty" in m for m in messages)
    assert any("whose blob is missing" in m for m in messages)
    assert any("is unreadable" in m for m in messages)
    assert any("link file is missing" in m for m in messages)
    assert any("not the digest its directory names" in m for m in messages)
    assert any("symbolic link" in m for m in messages)
    assert any("not a sha256 digest" in m for m in messages)
    assert {p.kind for p in one.problems} >= {
        ProblemKind.UNREADABLE,
        ProblemKind.GC_ABORT,
        ProblemKind.GC_HAZARD,
    }
    assert dict(one.blobs) == read_blob_sizes(root)
    refused = make_plan(one, [POLICY], Safety(), NOW).refused
    assert len(refused) >= 6


def test_reading_closes_every_directory_it_opens(tree: Path, tmp_path: Path) -> None:
    """Link files and manifests are opened relative to open directories: none stays open,
    and the problems still name full paths."""
    root = tmp_path / "broken"
    shutil.copytree(tree, root, symlinks=True)
    break_tree(root)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        inventory = read_inventory(root, workers=1)
    assert len(os.listdir("/proc/self/fd")) == before
    assert inventory.problems
    assert all(p.path.startswith(str(root)) for p in inventory.problems)


def test_index_child_without_revision_link_is_still_parsed(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "unlinked-child"
    shutil.copytree(tree, root, symlinks=True)
    inventory = read_inventory(root, workers=1)
    index = next(
        (repo, digest)
        for repo in inventory.repositories
        for digest in repo.revisions
        if inventory.manifests.children_of(digest)
    )
    child = inventory.manifests.children_of(index[1])[0]
    shutil.rmtree(
        v2(root) / "repositories" / index[0].name / "_manifests/revisions/sha256" / child[7:]
    )
    one, two = read_inventory(root, workers=1), read_inventory(root, workers=2)
    assert child in one.manifests and child in two.manifests
    assert snapshot(one) == snapshot(two)


# -- sizes: layers and configs from their manifests, data stat'ed only where that cannot do ----


def blob_data(root: Path, digest: str) -> Path:
    return v2(root) / "blobs/sha256" / digest[7:9] / digest[7:] / "data"


def image_manifests(inventory: Inventory) -> list[Any]:
    return sorted((m for m in inventory.manifests.values() if m.config), key=lambda m: m.digest)


def a_layer(inventory: Inventory, shared: bool) -> str:
    """A layer that one manifest names (``shared``: that several do)."""
    named: dict[str, int] = {}
    for manifest in image_manifests(inventory):
        for digest in manifest.blobs[1:]:
            named[digest] = named.get(digest, 0) + 1
    return sorted(d for d, n in named.items() if (n > 1) == shared)[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_sizes_without_stat_equal_the_sizes_on_disk(tree: Path, workers: int) -> None:
    fast = read_inventory(tree, workers=workers)
    exact = read_inventory(tree, workers=workers, stat_blobs=True)
    assert dict(fast.blobs) == read_blob_sizes(tree) == dict(exact.blobs)
    assert snapshot(fast) == snapshot(exact)
    assert plan_snapshot(fast) == plan_snapshot(exact)


def test_layer_data_is_not_read_unless_asked(tree: Path, tmp_path: Path) -> None:
    """The trade made for speed, pinned: a layer's data is taken on its manifest's word (the
    size a client checks when it pulls it); ``stat_blobs`` (what apply uses) reads the disk."""
    root = tmp_path / "copy"
    shutil.copytree(tree, root, symlinks=True)
    layer = a_layer(read_inventory(root, workers=1), shared=False)
    stated = read_blob_sizes(root)[layer]
    blob_data(root, layer).write_bytes(b"x" * (stated + 5))
    assert read_inventory(root, workers=1).blobs[layer] == stated
    assert read_inventory(root, workers=1, stat_blobs=True).blobs[layer] == stated + 5


def test_disputed_and_unstated_sizes_are_stat_ed(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tree, root, symlinks=True)
    before = read_inventory(root, workers=1)
    shared = a_layer(before, shared=True)
    namer = next(m for m in image_manifests(before) if shared in m.blobs)
    doc = json.loads(blob_data(root, namer.digest).read_bytes())
    for layer in doc["layers"]:
        if layer["digest"] == shared:
            layer["size"] += 1000  # one manifest now disagrees with the others
    blob_data(root, namer.digest).write_bytes(json.dumps(doc).encode())
    orphan = "sha256:" + "ab" * 32  # no manifest names it
    blob_data(root, orphan).parent.mkdir(parents=True)
    blob_data(root, orphan).write_bytes(b"orphan")
    for workers in (1, 2):
        inventory = read_inventory(root, workers=workers)
        assert inventory.blobs[shared] == read_blob_sizes(root)[shared]
        assert inventory.blobs[orphan] == 6
        assert inventory.blobs[namer.digest] == blob_data(root, namer.digest).stat().st_size


@pytest.mark.parametrize("what", ["manifest", "orphan"])
def test_a_blob_directory_without_data_makes_the_read_stat_every_blob(
    tree: Path, tmp_path: Path, what: str
) -> None:
    """The GC counts only directories with a data file: when a manifest blob's or an unnamed
    blob's data is missing, the tree is read again the way the GC counts (same as stat_blobs)."""
    root = tmp_path / "copy"
    shutil.copytree(tree, root, symlinks=True)
    if what == "manifest":
        digest = image_manifests(read_inventory(root, workers=1))[0].digest
        blob_data(root, digest).unlink()
    else:
        digest = "sha256:" + "cd" * 32
        blob_data(root, digest).parent.mkdir(parents=True)
    for workers in (1, 2):
        inventory = read_inventory(root, workers=workers)
        assert digest not in inventory.blobs
        assert dict(inventory.blobs) == read_blob_sizes(root)
        assert snapshot(inventory) == snapshot(read_inventory(root, workers=1, stat_blobs=True))


# -- prefix directories: as a registry writes them, read at once; anything odd, entry by entry --


@pytest.mark.parametrize(
    "odd",
    [
        None,  # nothing odd: the whole directory at once
        "A" * 64,  # upper case: not a digest to the registry
        "ab" + "c" * 61,  # 63 characters
        "ab" + " c" * 31,  # whitespace, which bytes.fromhex would skip
        "ab" + "g" * 62,  # not hex
        "cd" + "e" * 62,  # in another prefix's directory
        "file",  # a file, not a directory
    ],
)
def test_prefix_directories_read_alike_at_once_and_one_by_one(
    tmp_path: Path, odd: str | None
) -> None:
    prefix = tmp_path / "docker/registry/v2/blobs/sha256/ab"
    names = ["ab" + f"{n:062x}" for n in (5, 1, 0x77, 3)] + ["ab" + "9" * 62]
    names += [odd] if odd is not None and odd != "file" else []
    for name in names:
        (prefix / name).mkdir(parents=True)
        (prefix / name / "data").write_bytes(b"x" * len(name))
    if odd == "file":
        (prefix / ("ab" + "f" * 62)).write_bytes(b"a file where a blob directory belongs")
    fast = read_inventory(tmp_path, workers=1)  # sizes unknown: names only
    exact = read_inventory(tmp_path, workers=1, stat_blobs=True)  # each entry, stat'ed
    assert sorted(fast.blobs) == sorted(exact.blobs)  # ids in a shard: in the order found
    assert [p.message for p in fast.problems] == [p.message for p in exact.problems]
    assert sorted(fast.blobs) == sorted(
        "sha256:" + n for n in names if re.fullmatch("[0-9a-f]{64}", n)
    )  # a blob in another prefix's directory is still one


def test_manifest_blobs_of_any_size_read_whole_and_oversized_ones_refused(
    tree: Path, tmp_path: Path
) -> None:
    """The first read takes 64 KiB: a larger manifest is read to its end, one larger than the
    registry accepts (4 MiB) is unreadable, and its size is what was read."""
    root = tmp_path / "sizes"
    shutil.copytree(tree, root, symlinks=True)
    repos = sorted(repositories(root))
    big, huge = (
        sorted((repo / "_manifests/tags").iterdir())[0] / "current/link" for repo in repos[:2]
    )
    big_data = blob_data(root, big.read_text())
    doc = json.loads(big_data.read_bytes())
    text = json.dumps(doc, indent=2).replace("\n", "\n" + " " * 10000)  # 100s of KiB, same JSON
    assert len(text) > 1 << 17
    big_data.write_text(text)
    blob_data(root, huge.read_text()).write_bytes(b" " * (5 << 20))
    inventory = read_inventory(root, workers=1)
    assert inventory.blobs[big.read_text()] == len(text)
    assert big.read_text() in inventory.manifests
    messages = [p.message for p in inventory.problems]
    assert any("larger than any manifest" in m and huge.read_text() in m for m in messages)


def test_phases_that_wait_on_the_disk_get_more_readers_unless_just_read(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read by default forks at least DISK_READERS for the phases that list directories and
    read links (a cold tree waits on the disk); the frozen read, right after the preview's and
    taking its manifests, reads cached metadata with two per CPU. Both read the same."""
    import retentiond.storage.reader as reader
    from retentiond.storage.reading import pool

    assert pool.wanted(None, 10**6, 16, disk=True) >= pool.DISK_READERS
    assert pool.wanted(None, 10**6, 16) == min(16, 2 * (os.cpu_count() or 1))
    assert pool.wanted(None, 3, 16, disk=True) == 1  # a small tree: in-process
    assert pool.wanted(5, 10**6, 16, disk=True) == 5  # asked for: as asked
    asked: list[bool] = []

    def wanted(requested: int | None, size: int, threshold: int, *, disk: bool = False) -> int:
        asked.append(disk)
        return pool.wanted(requested, size, threshold, disk=disk)

    monkeypatch.setattr(reader, "wanted", wanted)
    first, parsed = reader.read_inventory_keeping(tree)
    assert asked == [True]  # phase 2
    assert parsed is not None
    asked.clear()
    again = read_inventory(tree, parsed_before=parsed)
    assert asked == [False]
    assert snapshot(again) == snapshot(first)
