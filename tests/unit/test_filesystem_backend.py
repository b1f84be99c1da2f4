"""The filesystem backend of the storage port: it lists, reads and changes the tree below
``docker/registry/v2`` and the quarantine beside it without following a symbolic link, blocking
on a FIFO or reading more than asked, and says what is wrong in the port's errors, with paths
relative to ``v2``. Each test runs with ``openat2`` (where the kernel has it) and with the
one-component-at-a-time fallback."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from retentiond.storage import layout
from retentiond.storage.filesystem import FilesystemStorage, held_on_disk
from retentiond.storage.port import Entry, Kind, StorageReader, StorageWriter
from retentiond.storage.safe_fs import (
    NotADirectoryEntry,
    NotRegularFile,
    SymlinkFound,
    TooLarge,
    UnsafeEntry,
)
from tests.unit.safe_fs_fixtures import no_hang, resolution  # noqa: F401 (autouse)

HEX = "ab" * 32
DIGEST = "sha256:" + HEX
LINK = layout.tag_link("app", "latest")
RUN = "20261201T030000Z-1a2b3c"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tag ``app:latest`` whose link points at a blob in the store, and ``outside``, beside
    the root, holding what a followed link would find."""
    root = tmp_path / "root"
    v2 = root / layout.V2
    (v2 / LINK).parent.mkdir(parents=True)
    (v2 / LINK).write_text(DIGEST)
    (v2 / layout.blob_dir(HEX)).mkdir(parents=True)
    (v2 / layout.blob_data(HEX)).write_text("{}")
    outside = tmp_path / "outside"
    (outside / "current").mkdir(parents=True)
    (outside / "current/link").write_text("sha256:" + "0" * 64)
    return root


@pytest.fixture
def storage(root: Path) -> Iterator[FilesystemStorage]:
    with FilesystemStorage(root) as opened:
        yield opened


def v2(root: Path) -> Path:
    return root / layout.V2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_it_is_the_port() -> None:
    # checked by mypy: the class implements both protocols
    reader: type[StorageReader] = FilesystemStorage
    writer: type[StorageWriter] = FilesystemStorage
    assert reader.__name__ == writer.__name__ == "FilesystemStorage"


# -- reading -------------------------------------------------------------------------------------


def test_a_link_and_a_blob_are_read_with_their_mtime(
    root: Path, storage: FilesystemStorage
) -> None:
    read = storage.read(LINK, 200)
    assert read.data == DIGEST.encode() and read.mtime == os.stat(v2(root) / LINK).st_mtime
    assert storage.read(layout.blob_data(HEX), 100).data == b"{}"
    assert storage.read(layout.BLOB_STORE + "/" + layout.blob_data_in_store(HEX), 2).data == b"{}"


def test_reads_are_bounded(storage: FilesystemStorage) -> None:
    assert storage.read(LINK, len(DIGEST)).data == DIGEST.encode()
    with pytest.raises(TooLarge) as caught:
        storage.read(LINK, len(DIGEST) - 1)
    assert caught.value.where == LINK


def test_a_fifo_is_not_read_and_does_not_block(root: Path, storage: FilesystemStorage) -> None:
    (v2(root) / LINK).unlink()
    os.mkfifo(v2(root) / LINK)
    with pytest.raises(NotRegularFile, match="a FIFO") as caught:
        storage.read(LINK, 200)
    assert caught.value.where == LINK
    with pytest.raises(NotRegularFile, match="a directory"):
        storage.read(layout.tag_dir("app", "latest"), 200)


@pytest.mark.parametrize(
    "component",
    [
        "repositories",
        "repositories/app/_manifests/tags/latest/current",
        LINK,
    ],
)
def test_a_link_on_the_way_is_refused_and_named_from_v2(
    root: Path, tmp_path: Path, component: str
) -> None:
    path = v2(root) / component
    path.rename(tmp_path / "moved")
    path.symlink_to(tmp_path / "moved")
    with FilesystemStorage(root) as storage, pytest.raises(SymlinkFound) as caught:
        storage.read(LINK, 200)
    assert caught.value.where == component


def test_a_file_where_a_directory_should_be_is_named(storage: FilesystemStorage) -> None:
    with pytest.raises(NotADirectoryEntry) as caught:
        storage.read(f"{LINK}/deeper", 200)
    assert caught.value.where == LINK


def test_missing_paths_are_file_not_found(storage: FilesystemStorage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read(layout.tag_link("app", "gone"), 200)
    with pytest.raises(FileNotFoundError):
        storage.list(layout.repository("gone"))
    with pytest.raises(FileNotFoundError):
        storage.stat(layout.tag_dir("app", "gone"))
    with pytest.raises(FileNotFoundError):
        storage.read(layout.blob_data("cd" * 32), 200)


def test_a_missing_blob_store_is_missing_below_it_too(root: Path) -> None:
    (v2(root) / layout.blob_data(HEX)).unlink()
    (v2(root) / layout.blob_dir(HEX)).rmdir()
    (v2(root) / layout.blob_prefix_dir("ab")).rmdir()
    (v2(root) / layout.BLOB_STORE).rmdir()
    with FilesystemStorage(root) as storage, pytest.raises(FileNotFoundError):
        storage.read(layout.blob_data(HEX), 200)


# -- listing -------------------------------------------------------------------------------------


def test_a_listing_gives_each_entry_s_own_kind(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    tags = v2(root) / layout.repository("app") / layout.TAGS
    (tags / "file").write_text("x")
    (tags / "link").symlink_to(tmp_path / "outside")
    os.mkfifo(tags / "fifo")
    listed = {e.name: e for e in storage.list(layout.repository("app") + "/" + layout.TAGS)}
    assert {name: e.kind for name, e in listed.items()} == {
        "latest": Kind.DIR,
        "file": Kind.FILE,
        "link": Kind.OTHER,
        "fifo": Kind.OTHER,
    }
    assert listed["link"].detail == "a symbolic link"
    assert all(e.size is None and e.mtime is None for e in listed.values())


def test_the_top_directories_list_again_and_again(root: Path, storage: FilesystemStorage) -> None:
    inode = os.lstat(v2(root) / layout.blob_prefix_dir("ab")).st_ino
    for _ in range(3):
        assert [e.name for e in storage.list(layout.REPOSITORIES)] == ["app"]
        assert storage.list(layout.BLOB_STORE) == [
            Entry("ab", Kind.DIR, detail="a directory", order=inode)
        ]
        assert sorted(e.name for e in storage.list("")) == ["blobs", "repositories"]


def test_a_linked_directory_is_not_listed(root: Path, tmp_path: Path) -> None:
    store = v2(root) / layout.BLOB_STORE
    store.rename(tmp_path / "store")
    store.symlink_to(tmp_path / "store")
    with FilesystemStorage(root) as storage:
        with pytest.raises(SymlinkFound) as caught:
            storage.list(layout.BLOB_STORE)
        assert caught.value.where == layout.BLOB_STORE
        with pytest.raises(SymlinkFound):
            storage.list(layout.blob_prefix_dir("ab"))


def test_stat_says_what_an_entry_is(root: Path, tmp_path: Path, storage: FilesystemStorage) -> None:
    entry = storage.stat(LINK)
    assert entry == Entry(
        "link", Kind.FILE, len(DIGEST), os.stat(v2(root) / LINK).st_mtime, "a regular file"
    )
    assert storage.stat(layout.tag_dir("app", "latest")).kind is Kind.DIR
    (v2(root) / layout.tag_dir("app", "linked")).symlink_to(tmp_path / "outside")
    linked = storage.stat(layout.tag_dir("app", "linked"))
    assert (linked.kind, linked.detail) == (Kind.OTHER, "a symbolic link")


# -- opening -------------------------------------------------------------------------------------


def test_a_linked_v2_is_refused_and_the_root_closed(root: Path, tmp_path: Path) -> None:
    v2(root).rename(tmp_path / "v2")
    v2(root).symlink_to(tmp_path / "v2")
    before = open_fds()
    with pytest.raises(SymlinkFound) as caught:
        FilesystemStorage(root)
    assert caught.value.where == layout.V2
    assert open_fds() == before


def test_the_quarantine_needs_no_tree(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with FilesystemStorage(tmp_path / "root", open_tree=False) as storage:
        assert not storage.quarantine_dir("", create=False)
        assert storage.quarantine_dir("", create=True)
    assert (tmp_path / "root" / layout.QUARANTINE).is_dir()


def test_close_closes_every_descriptor(root: Path) -> None:
    before = open_fds()
    storage = FilesystemStorage(root)
    storage.read(LINK, 200)
    storage.read(layout.blob_data(HEX), 200)
    storage.stat(LINK)
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir(RUN, create=True)
    assert open_fds() > before
    storage.close()
    assert open_fds() == before


# -- changing the tree and the quarantine --------------------------------------------------------


def test_hold_and_restore_move_a_whole_directory(root: Path, storage: FilesystemStorage) -> None:
    tag = layout.tag_dir("app", "latest")
    assert storage.quarantine_dir("", create=True) and storage.quarantine_dir(RUN, create=True)
    assert storage.same_store()
    storage.stat(LINK)  # keeps the tag's current/ directory open
    held = layout.held(RUN, 0)
    storage.hold(tag, held)
    assert not (v2(root) / tag).exists()
    on_disk = root / layout.in_quarantine(held_on_disk(held))
    assert on_disk == root / layout.in_quarantine(f"{RUN}/b00000/0000000")  # in its bucket
    assert (on_disk / "current/link").read_text() == DIGEST
    assert storage.held_stat(held).kind is Kind.DIR
    with pytest.raises(FileNotFoundError):  # not through the directory kept open before
        storage.stat(LINK)
    storage.restore(held, tag)
    assert (v2(root) / LINK).read_text() == DIGEST
    with pytest.raises(FileNotFoundError):
        storage.held_stat(held)


def test_restore_over_a_path_pushed_again_moves_nothing(
    root: Path, storage: FilesystemStorage
) -> None:
    tag = layout.tag_dir("app", "latest")
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir(RUN, create=True)
    held = layout.held(RUN, 0)
    storage.hold(tag, held)
    (v2(root) / LINK).parent.mkdir(parents=True)
    (v2(root) / LINK).write_text("sha256:" + "1" * 64)
    with pytest.raises(FileExistsError):
        storage.restore(held, tag)
    assert storage.held_stat(held).kind is Kind.DIR
    assert (v2(root) / LINK).read_text() == "sha256:" + "1" * 64


def test_a_linked_quarantine_is_never_followed(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    (root / layout.QUARANTINE).symlink_to(tmp_path / "outside")
    with pytest.raises(SymlinkFound):
        storage.quarantine_dir("", create=True)
    with pytest.raises(SymlinkFound):
        storage.hold(layout.tag_dir("app", "latest"), layout.held(RUN, 0))
    assert (v2(root) / LINK).is_file()


def test_remove_held_deletes_no_link_target(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    storage.quarantine_dir("", create=True)
    storage.quarantine_dir(RUN, create=True)
    held = root / layout.in_quarantine(layout.held(RUN, 0))
    held.mkdir()
    (held / "current").symlink_to(tmp_path / "outside/current")
    storage.remove_held(RUN)
    assert not (root / layout.quarantine(RUN)).exists()
    assert (tmp_path / "outside/current/link").is_file()
    with pytest.raises(FileNotFoundError):
        storage.remove_held(RUN)


def test_make_dirs_makes_what_is_missing_and_follows_no_link(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    storage.make_dirs(layout.repository("new/ns") + "/" + layout.TAGS)
    assert storage.is_dir(layout.repository("new/ns") + "/" + layout.TAGS)
    (v2(root) / layout.repository("evil")).symlink_to(tmp_path / "outside")
    with pytest.raises(SymlinkFound) as caught:
        storage.make_dirs(layout.repository("evil") + "/" + layout.TAGS)
    assert caught.value.where == layout.repository("evil")
    assert sorted(os.listdir(tmp_path / "outside")) == ["current"]
    with pytest.raises(SymlinkFound):
        storage.is_dir(layout.repository("evil") + "/" + layout.TAGS)
    assert not storage.is_dir(layout.repository("absent"))


def test_remove_dir_removes_only_an_empty_directory(root: Path, storage: FilesystemStorage) -> None:
    with pytest.raises(OSError):
        storage.remove_dir(layout.blob_dir(HEX))
    storage.make_dirs(layout.revisions_dir("app"))
    storage.remove_dir(layout.revisions_dir("app"))
    assert not (v2(root) / layout.revisions_dir("app")).exists()
    assert storage.is_dir(layout.repository("app"))


def test_remove_tree_follows_no_link_inside(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    links = v2(root) / layout.layer_links_dir("app") / HEX
    links.mkdir(parents=True)
    (links / "elsewhere").symlink_to(tmp_path / "outside")
    storage.remove_tree(f"{layout.layer_links_dir('app')}/{HEX}")
    assert not links.exists() and (tmp_path / "outside/current/link").is_file()
    storage.remove_tree(layout.repository("gone/x"), ignore_errors=True)
    with pytest.raises(FileNotFoundError):
        storage.remove_tree(layout.repository("gone/x"))


def test_the_quarantine_is_writable_and_changes_are_allowed(
    root: Path, storage: FilesystemStorage
) -> None:
    storage.quarantine_dir("", create=True)
    storage.check_quarantine_writable()
    assert os.listdir(root / layout.QUARANTINE) == []
    assert storage.can_change(layout.REPOSITORIES)
    assert storage.location(LINK) == f"{root}/{layout.V2}/{LINK}"


# -- what the reader's phases use: heads, names, scoped readers, stat_each ------------------------


def test_head_reads_the_first_bytes_whatever_the_size(
    root: Path, storage: FilesystemStorage
) -> None:
    (v2(root) / LINK).write_text(DIGEST * 10)
    head = storage.head(LINK, 20)
    assert head.data == DIGEST.encode()[:20]
    assert head.mtime == os.stat(v2(root) / LINK).st_mtime
    (v2(root) / LINK).unlink()
    os.mkfifo(v2(root) / LINK)
    with pytest.raises(NotRegularFile) as caught:
        storage.head(LINK, 20)
    assert (caught.value.where, caught.value.what) == (LINK, "a FIFO")


def test_names_are_sorted_columns_with_their_order(root: Path, storage: FilesystemStorage) -> None:
    tags = v2(root) / layout.REPOSITORIES / "app/_manifests/tags"
    for tag in ("b", "a"):
        (tags / tag).mkdir()
    names = storage.names("repositories/app/_manifests/tags")
    assert names.names == ["a", "b", "latest"] and names.only_dirs
    assert list(names.order or []) == [os.lstat(tags / n).st_ino for n in names.names]
    (tags / "file").write_text("")
    assert not storage.names("repositories/app/_manifests/tags").only_dirs


def test_a_scoped_reader_reads_and_names_from_its_directory(
    root: Path, tmp_path: Path, storage: FilesystemStorage
) -> None:
    with storage.below("repositories/app/_manifests") as manifests:
        assert manifests.head("tags/latest/current/link", 200).data == DIGEST.encode()
        assert [e.name for e in manifests.list("")] == ["tags"]
        assert manifests.stat("").kind is Kind.DIR
        assert manifests.stat("tags/latest/current/link").size == len(DIGEST)
        with manifests.below("tags") as tags:
            assert tags.read("latest/current/link", 200).data == DIGEST.encode()
        current = v2(root) / "repositories/app/_manifests/tags/latest/current"
        current.rename(tmp_path / "moved")
        current.symlink_to(tmp_path / "moved")
        with pytest.raises(SymlinkFound) as caught:
            manifests.head("tags/latest/current/link", 200)
        assert caught.value.where == "tags/latest/current"
        with pytest.raises(SymlinkFound):
            manifests.stat("tags/latest/current/link")


def test_a_scoped_reader_pickles_as_its_inherited_descriptor(storage: FilesystemStorage) -> None:
    with storage.below(layout.BLOB_STORE) as store:
        copy = pickle.loads(pickle.dumps(store))
        assert copy.read(layout.blob_data_in_store(HEX), 100).data == b"{}"


def test_stat_each_gives_each_entry_or_none(root: Path, storage: FilesystemStorage) -> None:
    (v2(root) / layout.blob_dir("cd" * 32)).mkdir(parents=True)
    os.symlink("/etc/passwd", v2(root) / layout.blob_data("cd" * 32))
    with storage.below(layout.blob_prefix_dir("ab")) as prefix:
        data, missing = prefix.stat_each([f"{HEX}/data", f"{'ab' * 31}ff/data"])
        assert data is not None and (data.kind, data.size) == (Kind.FILE, 2) and missing is None
    with storage.below(layout.blob_prefix_dir("cd")) as prefix:
        (linked,) = prefix.stat_each([f"{'cd' * 32}/data"])
        assert linked is not None and linked.is_link and linked.kind is Kind.OTHER
        with pytest.raises(UnsafeEntry):
            prefix.stat_each(["../ab/data"])
