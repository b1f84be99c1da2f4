"""The filesystem backend of the storage port: a registry's storage tree on a local disk.

:class:`FilesystemStorage` serves ``<root>/docker/registry/v2`` and the quarantine beside it
(:mod:`retentiond.storage.port`) through :mod:`retentiond.storage.safe_fs`: the root (the
operator's ``registry.root``) is trusted and may be a symbolic link; below it every path is
opened relative to a directory descriptor with no symbolic link followed in any component,
files with ``O_NONBLOCK`` and their type checked (``fstat``) before any read, reads bounded.

:meth:`~FilesystemStorage.below` gives a :class:`FilesystemReader`: the port's reading calls
relative to one open directory (a repository, a tag directory, the blob store), so that a read
below it is one ``openat2`` from its descriptor and an unsafe component is named relative to
it. A listing's :attr:`~retentiond.storage.port.Entry.order` is the entry's inode, from the
directory (no ``stat``): reading in inode order reads the inode table front to back.

It holds descriptors so that a call costs the system calls of the work and no more:

- ``v2``, the root and, from their first use, ``blobs/sha256`` and ``repositories``: a read
  below these two is one ``openat2`` from their descriptor, one ``fstat``, one ``read`` and one
  ``close`` (a plan reads a link per tag);
- the last few directories a :meth:`~FilesystemStorage.stat` or a mutation was in (a pass over
  one directory's entries opens it once), dropped when a move or a removal takes them away;
- the quarantine and the runs' directories in it, once opened, and the bucket a run's last
  held directory went into.

A run's held directories are grouped a hundred to a directory (:func:`_bucket`): a ``rename``
into a directory of a hundred entries costs the kernel some 14 us on ext4, into one of tens of
thousands some 22 us (a directory past one block is an htree), and a run's moves are the most
of its work in the window besides the GC. A run held by an earlier version (every held
directory in the run's own directory) is still found, put back and deleted.

Descriptors are inherited by forked workers, each of which then has its own caches (a
:class:`FilesystemReader` handed to a worker is pickled as its descriptor's number). Moves are
``rename(2)`` between two descriptors, never through a path (the quarantine must be on the
storage's filesystem: :meth:`~FilesystemStorage.same_store`).

One module for the whole backend, the reading calls, the scoped readers and the mutations: they
share the descriptor handling and the checks of :mod:`~retentiond.storage.safe_fs`, and the
read helpers at the top serve both classes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from operator import attrgetter, methodcaller
from pathlib import Path
from stat import S_ISREG
from types import TracebackType

from retentiond.storage import layout
from retentiond.storage.port import SYMBOLIC_LINK, Entry, Kind, Names, Read
from retentiond.storage.safe_fs import (
    DIR_FLAGS,
    FILE_FLAGS,
    BadComponent,
    NotRegularFile,
    TooLarge,
    UnsafeEntry,
    components,
    kind_of,
    lstat_below,
    open_below,
    open_dir,
    open_root,
    opener,
    read_fd,
)

#: without it (not Linux), small files are read without the page cache advice below
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)
#: the directories opened from ``v2`` once and kept, to open what is below them in one step
#: ``find`` processes deleting a quarantine at once, and the held entries given to each
DELETERS = 8
DELETE_CHUNK = 2000
#: the names retentiond gives what it holds (:func:`~retentiond.storage.layout.held_name`)
_HELD_NAME = re.compile(r"[0-9]{1,12}")
#: the buckets a run's held directories are in (:func:`_bucket`), and how many each holds
_BUCKET_NAME = re.compile(r"b[0-9]{1,10}")
_PER_BUCKET = 100
_TOPS = (layout.REPOSITORIES, layout.BLOB_STORE)
_ROUTES = tuple((top, f"{top}/") for top in _TOPS)
#: how many directories :meth:`FilesystemStorage.stat` and the mutations keep open
_KEPT_DIRS = 4

_DIR, _FILE, _OTHER = Kind.DIR, Kind.FILE, Kind.OTHER
_IS_DIR = methodcaller("is_dir", follow_symlinks=False)
_NAME = attrgetter("name")
_INODE = methodcaller("inode")
#: an Entry (or a Read) from a tuple of its fields, without the named tuple's own ``__new__``
#: (a Python function): a plan makes one per tag
_new = tuple.__new__


def _entry(e: os.DirEntry[str]) -> Entry:
    """An entry of a listing, of the type the directory gives (never a link's target's)."""
    if e.is_dir(follow_symlinks=False):
        return _new(Entry, (e.name, _DIR, None, None, "a directory", e.inode()))
    if e.is_file(follow_symlinks=False):
        return _new(Entry, (e.name, _FILE, None, None, "a regular file", e.inode()))
    detail = SYMBOLIC_LINK if e.is_symlink() else ""
    return _new(Entry, (e.name, _OTHER, None, None, detail, e.inode()))


def _list(fd: int) -> list[Entry]:
    """The entries of the open directory ``fd``, which is closed. A directory's entry is made
    here, not by :func:`_entry`: a listing of a million tags makes a million of them."""
    try:
        with os.scandir(fd) as it:
            return [
                _new(Entry, (e.name, _DIR, None, None, "a directory", e.inode()))
                if e.is_dir(follow_symlinks=False)
                else _entry(e)
                for e in it
            ]
    finally:
        os.close(fd)


def _names(fd: int) -> Names:
    """The names of the open directory ``fd``, which is closed: a few C calls for the whole
    directory, whatever its size."""
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=_NAME)
    finally:
        os.close(fd)
    only_dirs = all(map(_IS_DIR, entries))
    return Names(list(map(_NAME, entries)), array("Q", map(_INODE, entries)), only_dirs)


def _not_regular(path: str, st: os.stat_result) -> NotRegularFile:
    what = kind_of(st.st_mode)
    return NotRegularFile(f"{path!r} is {what}, not a regular file", path, what)


def _read(fd: int, path: str, limit: int) -> Read:
    """The port's ``read`` of the open file ``fd``, which is closed. A file smaller than a
    block (its bytes in the inode, ext4's inline data) leaves no copy in the page cache: a
    plan reads millions of them, whose copies would push out the inodes that make the next
    plan fast."""
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise _not_regular(path, st)
        if st.st_size > limit:
            raise TooLarge(f"{path!r} holds {st.st_size} bytes, more than {limit}", path)
        want = st.st_size + 1  # one read: fewer bytes than asked is the end of the file
        data = os.read(fd, want)
        if len(data) == want:  # it grew since the fstat
            data = read_fd(fd, path, limit, data)
        if st.st_blocks * 512 < st.st_blksize and data and _DONTNEED is not None:
            os.posix_fadvise(fd, 0, 0, _DONTNEED)
        return _new(Read, (data, st.st_mtime))
    finally:
        os.close(fd)


def _head(fd: int, path: str, size: int) -> Read:
    """The port's ``head`` of the open file ``fd``, which is closed (page cache: as
    :func:`_read`)."""
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise _not_regular(path, st)
        data = os.read(fd, size)
        if st.st_blocks * 512 < st.st_blksize and data and _DONTNEED is not None:
            os.posix_fadvise(fd, 0, 0, _DONTNEED)
        return _new(Read, (data, st.st_mtime))
    finally:
        os.close(fd)


def _stat_each(fd: int, paths: Sequence[str]) -> list[Entry | None]:
    """The port's ``stat_each`` below the open directory ``fd``: one ``lstat`` relative to it
    a path (the components on the way are not opened one by one: that would be three system
    calls a blob where the GC's count of a large store makes millions)."""
    found: list[Entry | None] = []
    lstat = os.lstat
    for path in paths:
        if "\0" in path or path[:1] == "/" or (".." in path and ".." in path.split("/")):
            raise BadComponent(f"{path!r} is not a plain relative path", path)
        try:
            st = lstat(path, dir_fd=fd)
        except FileNotFoundError:
            found.append(None)
            continue
        except OSError as exc:
            if exc.filename is None:
                exc.filename = path
            raise
        if S_ISREG(st.st_mode):
            entry = (path, _FILE, st.st_size, st.st_mtime, "a regular file", None)
            found.append(_new(Entry, entry))
        else:
            found.append(_stat_entry(path, st))
    return found


def _bad(path: str) -> BadComponent:
    return BadComponent(f"{path!r} is not a plain relative path (a NUL byte)", path)


def _stat_entry(name: str, st: os.stat_result) -> Entry:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return Entry(name, _DIR, None, st.st_mtime, "a directory")
    if stat.S_ISREG(mode):
        return Entry(name, _FILE, st.st_size, st.st_mtime, "a regular file")
    return Entry(name, _OTHER, None, st.st_mtime, kind_of(mode))


def _bucket(name: str) -> str | None:
    """The directory of its run that the held directory ``name`` is in: ``b`` and its index
    without the last two digits (``0012345`` is in ``b00123``); None for a name retentiond
    did not give."""
    return "b" + name[:-2] if _HELD_NAME.fullmatch(name) and len(name) > 2 else None


def held_on_disk(held: str) -> str:
    """Where this backend keeps the quarantine's ``held`` (relative to the quarantine): a
    run's held directory in its bucket, anything else where the port names it."""
    run, name = _split(held)
    bucket = _bucket(name) if run else None
    return held if bucket is None else f"{run}/{bucket}/{name}"


def _split(path: str) -> tuple[str, str]:
    """(parent, last component) of a relative path; BadComponent when it is not a plain one."""
    components(path)
    parent, _, name = path.rpartition("/")
    return parent, name


class FilesystemStorage:
    """The port (:class:`~retentiond.storage.port.StorageReader` and
    :class:`~retentiond.storage.port.StorageWriter`) over ``<root>/docker/registry/v2``.

    ``root_fd``: the root already opened by the caller (:func:`~retentiond.storage.safe_fs.
    open_root`, to word its own error), owned by the storage from then on, closed on failure
    too; else the root is opened here and its ``OSError`` passes. ``open_tree``: open ``v2``
    now (the port's errors, ``where`` relative to the root); without it, ``v2`` is opened by
    the first call that needs it and a storage used only for the quarantine never does.
    Close it (or use it as a context manager)."""

    def __init__(
        self, root: Path | str, root_fd: int | None = None, open_tree: bool = True
    ) -> None:
        self.root = Path(root)
        self._root_fd = open_root(str(root)) if root_fd is None else root_fd
        self._v2_fd = -1
        self._tops: dict[str, int] = {}
        self._dirs: dict[str, int] = {}  # below v2, least recently used first
        self._quarantine: dict[str, int] = {}  # "" and run ids
        self._bucket: tuple[str, int] | None = None  # ("<run>/<bucket>", its descriptor)
        self._open_file: Callable[[str, int], int] = opener(FILE_FLAGS)
        if open_tree:
            try:
                self._v2()
            except BaseException:
                self.close()
                raise

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        fds = [*self._dirs.values(), *self._tops.values(), *self._quarantine.values()]
        fds += [fd for fd in (self._v2_fd, self._root_fd) if fd >= 0]
        if self._bucket is not None:
            fds.append(self._bucket[1])
        self._dirs, self._tops, self._quarantine, self._bucket = {}, {}, {}, None
        self._v2_fd = self._root_fd = -1
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> FilesystemStorage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _v2(self) -> int:
        if self._v2_fd < 0:
            self._v2_fd = open_dir(layout.V2, self._root_fd)
        return self._v2_fd

    def location(self, path: str) -> str:
        """``<root>/docker/registry/v2/<path>`` (``path`` empty: ``v2``), for messages."""
        return f"{self.root}/{layout.V2}/{path}" if path else f"{self.root}/{layout.V2}"

    # -- reading ---------------------------------------------------------------------------------

    def _open_top(self, top: str) -> int | None:
        """``blobs/sha256`` or ``repositories``, opened once (None: it cannot be)."""
        fd = self._tops.get(top)
        if fd is None:
            try:
                fd = self._tops[top] = open_dir(top, self._v2())
            except (OSError, UnsafeEntry):
                return None  # what is below it is opened from v2, which says why
        return fd

    def _top(self, path: str) -> tuple[int, str]:
        """The descriptor to open ``path`` from and ``path`` relative to it: that of
        ``repositories`` or ``blobs/sha256`` when ``path`` is below one of them, else ``v2``'s."""
        for top, prefix in _ROUTES:
            if path.startswith(prefix):
                fd = self._tops.get(top)
                if fd is None:
                    fd = self._open_top(top)
                if fd is not None:
                    return fd, path[len(prefix) :]
                break
        return self._v2(), path

    def _open_file_below(self, path: str) -> int:
        components(path)  # the fast opener passes the path to the kernel as it is
        fd, rel = self._top(path)
        try:
            return self._open_file(rel, fd)
        except UnsafeEntry:
            if len(rel) == len(path):
                raise
        return open_below(path, self._v2(), FILE_FLAGS)  # again, to name the path from v2

    def _open_dir_below(self, path: str) -> int:
        if path in _TOPS and (fd := self._open_top(path)) is not None:
            return os.open(".", DIR_FLAGS, dir_fd=fd)  # its own offset: workers list it too
        if not path:
            return os.open(".", DIR_FLAGS, dir_fd=self._v2())
        fd, rel = self._top(path)
        try:
            return open_dir(rel, fd)
        except UnsafeEntry:
            if len(rel) == len(path):
                raise
        return open_dir(path, self._v2())

    def read(self, path: str, limit: int) -> Read:
        """The bytes of the regular file ``path`` (at most ``limit``: ``TooLarge`` above) and
        its mtime; a FIFO, a socket, a device or a directory is ``NotRegularFile``, never
        read. A file smaller than a block leaves no copy in the page cache."""
        return _read(self._open_file_below(path), path, limit)

    def head(self, path: str, size: int) -> Read:
        """The first ``size`` bytes of the regular file ``path``, whatever its size."""
        return _head(self._open_file_below(path), path, size)

    def list(self, path: str) -> list[Entry]:
        """The entries of the directory ``path`` (``""``: ``v2``), each of the type the
        directory gives, with no ``stat`` (``size`` and ``mtime`` None)."""
        return _list(self._open_dir_below(path))

    def names(self, path: str) -> Names:
        return _names(self._open_dir_below(path))

    def below(self, path: str) -> FilesystemReader:
        """A reader of the directory ``path`` (``""``: ``v2``), which holds it open."""
        return FilesystemReader(self._open_dir_below(path))

    def stat(self, path: str) -> Entry:
        """The entry at ``path``, not followed if it is a link, with its size (a file) and
        mtime; ``detail`` says what it is."""
        parent, name = _split(path)
        return _stat_entry(name, os.lstat(name, dir_fd=self._dir(parent)))

    def stat_each(self, paths: Sequence[str]) -> Sequence[Entry | None]:
        return _stat_each(self._v2(), paths)

    # -- the directories kept open --------------------------------------------------------------

    def _dir(self, path: str) -> int:
        """The directory ``path`` below ``v2``, opened without following a link (``""``:
        ``v2``) and kept open while the next calls are in it."""
        if not path:
            return self._v2()
        fd = self._dirs.pop(path, None)
        if fd is None:
            fd = open_dir(path, self._v2())
        self._keep(path, fd)
        return fd

    def _keep(self, path: str, fd: int) -> None:
        self._dirs[path] = fd
        while len(self._dirs) > _KEPT_DIRS:
            os.close(self._dirs.pop(next(iter(self._dirs))))

    def _forget(self, path: str) -> None:
        """Close the kept directories at or below ``path``: it was moved or removed."""
        below = path + "/"
        for kept in [p for p in self._dirs if p == path or p.startswith(below)]:
            os.close(self._dirs.pop(kept))

    # -- changing the tree ---------------------------------------------------------------------

    def is_dir(self, path: str) -> bool:
        try:
            self._dir(path)
        except FileNotFoundError:
            return False
        return True

    def can_change(self, path: str) -> bool:
        parent, name = _split(path)
        return os.access(name, os.W_OK | os.X_OK, dir_fd=self._dir(parent))

    def make_dirs(self, path: str) -> None:
        """Each missing component made (``mkdir``) and opened without following a link."""
        if path in self._dirs:
            self._dir(path)
            return
        fd = self._v2()
        done: list[str] = []
        try:
            for part in components(path):
                done.append(part)
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                where = "/".join(done)
                try:
                    new = open_dir(part, fd)
                except FileNotFoundError:  # removed again as it was made
                    raise FileNotFoundError(
                        errno.ENOENT, "vanished as it was made", where
                    ) from None
                except UnsafeEntry as exc:
                    raise type(exc)(str(exc), where) from exc
                if fd != self._v2_fd:
                    os.close(fd)
                fd = new
        except BaseException:
            if fd != self._v2_fd:
                os.close(fd)
            raise
        self._keep(path, fd)

    def remove_dir(self, path: str) -> None:
        parent, name = _split(path)
        os.rmdir(name, dir_fd=self._dir(parent))
        self._forget(path)

    def remove_tree(self, path: str, ignore_errors: bool = False) -> None:
        """``shutil.rmtree`` by descriptor: no link inside is followed."""
        try:
            parent, name = _split(path)
            fd = self._dir(parent)
        except (OSError, UnsafeEntry):
            if ignore_errors:
                return
            raise
        self._forget(path)
        shutil.rmtree(name, ignore_errors=ignore_errors, dir_fd=fd)

    # -- the quarantine: <root>/retentiond-quarantine -------------------------------------------

    def quarantine_dir(self, path: str, create: bool) -> bool:
        """``path``: ``""`` (the quarantine) or a run id, made and opened one at a time."""
        if path in self._quarantine:
            return True
        if path:
            components(path)
            if "/" in path:
                raise ValueError(f"{path!r} is not a directory of the quarantine")
        parent = self._root_fd if not path else self._quarantine_fd("")
        name = path or layout.QUARANTINE
        if create:
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=parent)
        try:
            self._quarantine[path] = open_dir(name, parent)
        except FileNotFoundError:
            if create:
                raise
            return False
        return True

    def _quarantine_fd(self, path: str) -> int:
        if not self.quarantine_dir(path, create=False):
            raise FileNotFoundError(
                errno.ENOENT, os.strerror(errno.ENOENT), layout.in_quarantine(path)
            )
        return self._quarantine[path]

    def check_quarantine_writable(self) -> None:
        fd = self._quarantine_fd("")
        probe = os.open(
            layout.WRITE_PROBE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=fd
        )
        os.close(probe)
        os.unlink(layout.WRITE_PROBE, dir_fd=fd)

    def same_store(self) -> bool:
        return os.fstat(self._quarantine_fd("")).st_dev == os.fstat(self._v2()).st_dev

    def moves_by_copy(self) -> bool:
        return False  # one rename(2): a move is whole or not done

    def _bucket_fd(self, run: str, bucket: str, create: bool) -> int:
        """The run's directory ``bucket``, opened without following a link (made first when
        ``create``); the last one is kept open. FileNotFoundError when it is not there."""
        key = f"{run}/{bucket}"
        if self._bucket is not None:
            if self._bucket[0] == key:
                return self._bucket[1]
            os.close(self._bucket[1])
            self._bucket = None
        parent = self._quarantine_fd(run)
        if create:
            with suppress(FileExistsError):
                os.mkdir(bucket, dir_fd=parent)
        try:
            fd = open_dir(bucket, parent)
        except UnsafeEntry as exc:
            exc.where = key  # (relative to the quarantine)
            raise
        self._bucket = (key, fd)
        return fd

    def _forget_buckets(self, run: str) -> None:
        if self._bucket is not None and self._bucket[0].startswith(run + "/"):
            os.close(self._bucket[1])
            self._bucket = None

    def _where_held(self, held: str) -> tuple[int, str]:
        """The open directory the quarantine's ``held`` is in and its name there: its bucket,
        or (held by an earlier version, or not a held directory of a run) its parent."""
        run, name = _split(held)
        bucket = _bucket(name) if run else None
        if bucket is not None:
            try:
                fd = self._bucket_fd(run, bucket, create=False)
                os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            else:
                return fd, name
        return self._quarantine_fd(run), name

    def held_stat(self, held: str) -> Entry:
        fd, name = self._where_held(held)
        return _stat_entry(name, os.lstat(name, dir_fd=fd))

    def hold(self, path: str, held: str) -> None:
        parent, name = _split(path)
        run, held_name = _split(held)
        bucket = _bucket(held_name) if run else None
        src = self._dir(parent)
        if bucket is None:
            dst = self._quarantine_fd(run)
        else:
            dst = self._bucket_fd(run, bucket, create=True)
        os.rename(name, held_name, src_dir_fd=src, dst_dir_fd=dst)
        self._forget(path)

    def restore(self, held: str, path: str) -> None:
        src, held_name = self._where_held(held)
        parent, name = _split(path)
        dst = self._dir(parent)
        try:
            os.rename(held_name, name, src_dir_fd=src, dst_dir_fd=dst)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # pushed again just now
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path) from exc
            raise

    def remove_held(self, held: str) -> None:
        """Delete a run's directory (or one held directory) and everything in it; no link
        inside is followed. A run's directory is emptied by ``find -delete`` working from its
        open descriptor (a run of a million removals holds millions of files: ``find`` deletes
        them some ten times faster than Python, and outside its lock), then removed; where
        ``find`` fails, by ``shutil.rmtree`` by descriptor."""
        run, name = _split(held)
        if not run:
            self._forget_buckets(name)
            kept = self._quarantine.pop(held, None)
            if kept is not None:
                os.close(kept)
            fd = self._quarantine_fd(run)
            _empty_by_find(name, fd)
        else:
            fd, name = self._where_held(held)
        shutil.rmtree(name, dir_fd=fd)


class FilesystemReader:
    """The port's reading (:class:`~retentiond.storage.port.StorageReader`) below one open
    directory, given by :meth:`FilesystemStorage.below`: a path is opened relative to it in
    one ``openat2`` (no symbolic link followed in any component), and an unsafe component is
    named relative to it.

    Pickled (a task for a forked worker) it is its descriptor's number, which the worker
    inherited: the parent keeps it open, and closes it, until the workers are done. Names
    passed to :meth:`read` and :meth:`head` go to the kernel as they are (``openat2``
    refuses a ``..`` or an absolute path; a NUL byte, which would cut the path short, is
    refused here)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._open_file: Callable[[str, int], int] = opener(FILE_FLAGS)

    def __getstate__(self) -> int:
        return self._fd

    def __setstate__(self, fd: int) -> None:
        self.__init__(fd)  # type: ignore[misc]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FilesystemReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open_dir(self, path: str) -> int:
        """``path`` opened anew (``""``: this directory, with an offset of its own: a
        descriptor inherited by workers may be listed by several of them at once)."""
        if not path:
            return os.open(".", DIR_FLAGS, dir_fd=self._fd)
        return open_dir(path, self._fd)

    def list(self, path: str) -> list[Entry]:
        return _list(self._open_dir(path))

    def names(self, path: str) -> Names:
        return _names(self._open_dir(path))

    def read(self, path: str, limit: int) -> Read:
        if "\0" in path:
            raise _bad(path)
        return _read(self._open_file(path, self._fd), path, limit)

    def head(self, path: str, size: int) -> Read:
        if "\0" in path:
            raise _bad(path)
        return _head(self._open_file(path, self._fd), path, size)

    def stat(self, path: str) -> Entry:
        """``lstat``, no link followed on the way (``""``: this directory, ``fstat``)."""
        if not path:
            return _stat_entry("", os.fstat(self._fd))
        return _stat_entry(path.rpartition("/")[2], lstat_below(path, self._fd))

    def stat_each(self, paths: Sequence[str]) -> Sequence[Entry | None]:
        return _stat_each(self._fd, paths)

    def below(self, path: str) -> FilesystemReader:
        return FilesystemReader(self._open_dir(path))


def _empty_by_find(name: str, parent: int) -> None:
    """Delete what directory ``name`` (below the open directory ``parent``) holds with GNU
    ``find``: it works in the directory the descriptor opened (its working directory is that
    descriptor, through ``/proc/self/fd``), walks without following links (``-P``) nor
    crossing into another filesystem (``-xdev``), and deletes children before parents.

    Several ``find`` at once (:data:`DELETERS`), each given :data:`DELETE_CHUNK` of the held
    entries (the names retentiond gives them, digits only: nothing ``find`` could read as an
    option or an operator), then one for whatever else is there. Deleting is mostly waiting
    on the filesystem's journal, not CPU: on ext4, 280,000 files and directories took 30 s
    with one ``find`` and 11 s with eight (the same CPU). Best effort: what they leave is for
    the caller's ``shutil.rmtree``."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError:
        return
    try:
        names = os.listdir(fd)
        # a bucket holds up to a hundred held directories (a run held by an earlier version
        # has its held directories here, one by one)
        held = sorted(n for n in names if _HELD_NAME.fullmatch(n))
        chunks = [held[i : i + DELETE_CHUNK] for i in range(0, len(held), DELETE_CHUNK)]
        buckets = sorted(n for n in names if _BUCKET_NAME.fullmatch(n))
        step = DELETE_CHUNK // _PER_BUCKET
        chunks += [buckets[i : i + step] for i in range(0, len(buckets), step)]
        if len(chunks) > 1:
            with ThreadPoolExecutor(DELETERS, thread_name_prefix="delete") as pool:
                for _ in pool.map(partial(_find_delete, fd), chunks):
                    pass
        _find_delete(fd, [".", "-mindepth", "1"])
    except OSError:  # no find, or no /proc: shutil.rmtree does it all
        pass
    finally:
        os.close(fd)


def _find_delete(fd: int, starts: list[str]) -> None:
    """``find -P <starts> -xdev -delete`` in the open directory ``fd``."""
    subprocess.run(
        ["find", "-P", *starts, "-xdev", "-delete"],
        cwd=f"/proc/self/fd/{fd}",
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
