"""``data_sizes``: the sizes of some blobs' ``data`` as on disk, without a stat of every blob,
and never through a link."""

from __future__ import annotations

from pathlib import Path

import pytest

from retentiond.core.blob_table import BlobTable
from retentiond.run_phases import _with_data_sizes
from retentiond.storage.reader import data_sizes, read_blob_sizes
from tests.unit.test_removal_paths import snapshot


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def hex_of(n: int) -> str:
    return d(n)[7:]


def put_blob(root: Path, digest: str, data: bytes) -> Path:
    hexpart = digest[7:]
    path = root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart
    path.mkdir(parents=True, exist_ok=True)
    (path / "data").write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docker/registry/v2/repositories").mkdir(parents=True)
    for n in range(1, 40):
        put_blob(root, d(n << 248 | n), b"x" * n)  # spread over prefixes 01..27
    return root


def test_sizes_are_those_on_disk_in_table_order(root: Path) -> None:
    wanted = [d(n << 248 | n) for n in (3, 7, 8, 30)]
    table = data_sizes(root, wanted)
    assert isinstance(table, BlobTable)
    assert list(table.items()) == [(digest, int(digest[-2:], 16)) for digest in wanted]
    every = read_blob_sizes(root)
    assert all(every[digest] == size for digest, size in table.items())


def test_blobs_without_data_are_left_out(root: Path) -> None:
    no_data = put_blob(root, d(5 << 248 | 1000), b"")
    (no_data / "data").unlink()
    wanted = [d(5 << 248 | 5), d(5 << 248 | 1000), d(6 << 248 | 999), d(200 << 248)]
    assert list(data_sizes(root, wanted)) == [d(5 << 248 | 5)]


def test_a_link_on_the_way_is_not_followed(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    elsewhere = put_blob(outside, d(50 << 248 | 1), b"secret bytes")
    store = root / "docker/registry/v2/blobs/sha256"
    prefix = hex_of(50 << 248 | 1)[:2]
    (store / prefix).symlink_to(elsewhere.parent)  # a prefix directory that is a link
    blob_link = store / hex_of(3 << 248 | 3)[:2] / hex_of(3 << 248 | 99)
    blob_link.symlink_to(elsewhere)  # a blob directory that is a link
    data_link = put_blob(root, d(4 << 248 | 77), b"")
    (data_link / "data").unlink()
    (data_link / "data").symlink_to(elsewhere / "data")  # a data file that is a link
    before = snapshot(outside)
    wanted = [d(3 << 248 | 3), d(3 << 248 | 99), d(4 << 248 | 77), d(50 << 248 | 1)]
    assert list(data_sizes(root, wanted).items()) == [(d(3 << 248 | 3), 3)]
    assert snapshot(outside) == before


def test_workers_give_what_one_process_gives(root: Path) -> None:
    wanted = sorted(read_blob_sizes(root))
    alone = data_sizes(root, wanted, workers=1)
    assert len(alone) == 39
    assert list(data_sizes(root, iter(wanted), workers=3).items()) == list(alone.items())


def test_blobs_out_of_order_are_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="out of order"):
        data_sizes(root, [d(8 << 248 | 8), d(3 << 248 | 3)])


def test_a_tree_without_a_blob_store_has_no_sizes(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    (root / "docker/registry/v2").mkdir(parents=True)
    assert len(data_sizes(root, [d(1)])) == 0


def test_frozen_sizes_reuse_the_preview_s_table_only_when_it_is_the_answer(root: Path) -> None:
    """The frozen plan's reclaimable blobs with sizes: the preview's table itself when the
    tree did not change (no second table of millions), else one made of both."""
    every = sorted(read_blob_sizes(root))
    preview = data_sizes(root, every[:30])
    gone = d(9 << 248 | 1000)  # reclaimable, no data: nothing to reclaim
    same = _with_data_sizes(root, sorted([*every[:30], gone]), preview)
    assert same is preview
    grown = _with_data_sizes(root, every[:31], preview)  # one more since the preview: stat'ed
    assert dict(grown) == {digest: int(digest[-2:], 16) for digest in every[:31]}
    shrunk = _with_data_sizes(root, every[1:30], preview)  # one kept since: left out
    assert list(shrunk) == every[1:30]
