"""The primitives that open what is under the storage root: no link followed in any component,
no blocking on a FIFO, the type checked before reading, reads bounded. Each test runs with
``openat2`` (where the kernel has it) and with the one-component-at-a-time fallback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retentiond.storage.safe_fs import (
    DIR_FLAGS,
    FILE_FLAGS,
    BadComponent,
    NotADirectoryEntry,
    NotRegularFile,
    SymlinkFound,
    TooLarge,
    lstat_below,
    open_below,
    open_dir,
    opener,
    read_file,
    scandir_below,
)
from tests.unit.safe_fs_fixtures import no_hang, resolution  # noqa: F401 (autouse)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[int]:
    """``a/b/link`` (a regular file), ``outside/b/link`` beside it; the root's descriptor."""
    (tmp_path / "root/a/b").mkdir(parents=True)
    (tmp_path / "root/a/b/link").write_text("sha256:" + "0" * 64)
    (tmp_path / "outside/b").mkdir(parents=True)
    (tmp_path / "outside/b/link").write_text("secret")
    fd = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def root_of(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_a_plain_file_is_read(tree: int) -> None:
    data, st = read_file("a/b/link", tree, 100)
    assert data == b"sha256:" + b"0" * 64 and stat.S_ISREG(st.st_mode)


@pytest.mark.parametrize("component", ["a", "a/b", "a/b/link"])
def test_a_link_in_any_component_is_refused_and_named(
    tree: int, tmp_path: Path, component: str
) -> None:
    path = root_of(tmp_path) / component
    os.rename(path, tmp_path / "moved")
    os.symlink(tmp_path / "moved", path)
    with pytest.raises(SymlinkFound) as caught:
        read_file("a/b/link", tree, 100)
    assert caught.value.where == component
    with pytest.raises(SymlinkFound):
        os.close(open_below("a/b/link", tree, FILE_FLAGS))
    with pytest.raises(SymlinkFound):
        os.close(opener()("a/b/link", tree))


def test_a_relative_link_up_and_out_is_refused(tree: int, tmp_path: Path) -> None:
    os.symlink("../../outside/b", root_of(tmp_path) / "a/up")
    with pytest.raises(SymlinkFound) as caught:
        read_file("a/up/link", tree, 100)
    assert caught.value.where == "a/up"


def test_a_link_to_a_directory_is_not_opened_as_one(tree: int, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside", root_of(tmp_path) / "a/elsewhere")
    with pytest.raises(SymlinkFound):
        open_dir("a/elsewhere", tree)
    with pytest.raises(SymlinkFound):
        scandir_below("a/elsewhere/b", tree)


@pytest.mark.parametrize("path", ["..", "a/../a/b/link", "/etc/passwd", "a//b", "a\0b", ""])
def test_paths_that_are_not_plain_relative_ones_are_refused(tree: int, path: str) -> None:
    with pytest.raises(BadComponent):
        read_file(path, tree, 100)


def test_a_fifo_opens_without_blocking_and_is_not_read(tree: int, tmp_path: Path) -> None:
    link = root_of(tmp_path) / "a/b/link"
    link.unlink()
    os.mkfifo(link)
    with pytest.raises(NotRegularFile, match="a FIFO"):
        read_file("a/b/link", tree, 100)


def test_a_socket_is_not_a_regular_file(tree: int, tmp_path: Path) -> None:
    directory = root_of(tmp_path) / "a/b"
    (directory / "link").unlink()
    code = "import socket; socket.socket(socket.AF_UNIX).bind('link')"
    subprocess.run([sys.executable, "-c", code], cwd=directory, check=True)
    with pytest.raises(NotRegularFile, match="a socket"):
        read_file("a/b/link", tree, 100)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_is_not_read(tree: int, tmp_path: Path) -> None:
    link = root_of(tmp_path) / "a/b/link"
    link.unlink()
    os.mknod(link, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    with pytest.raises(NotRegularFile, match="a character device"):
        read_file("a/b/link", tree, 100)


def test_a_directory_is_not_a_file_and_a_file_not_a_directory(tree: int) -> None:
    with pytest.raises(NotRegularFile, match="a directory"):
        read_file("a/b", tree, 100)
    with pytest.raises(NotADirectoryEntry):
        open_dir("a/b/link", tree)
    with pytest.raises(NotADirectoryEntry) as caught:
        read_file("a/b/link/deeper", tree, 100)
    assert caught.value.where == "a/b/link"


def test_reads_are_bounded(tree: int) -> None:
    with pytest.raises(TooLarge):
        read_file("a/b/link", tree, 10)


def test_missing_and_forbidden_pass_as_os_errors(tree: int, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_file("a/b/nothing", tree, 100)
    with pytest.raises(FileNotFoundError):
        open_below("a/nothing/link", tree, FILE_FLAGS)


def test_lstat_below_follows_no_link_on_the_way(tree: int, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside/b", root_of(tmp_path) / "a/c")
    assert stat.S_ISLNK(lstat_below("a/c", tree).st_mode)
    with pytest.raises(SymlinkFound):
        lstat_below("a/c/link", tree)


def test_directories_open_and_list_below(tree: int) -> None:
    fd = open_below("a/b", tree, DIR_FLAGS)
    os.close(fd)
    assert [e.name for e in scandir_below("a/b", tree)] == ["link"]
