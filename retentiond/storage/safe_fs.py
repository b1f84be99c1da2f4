"""Open what is under the storage root without trusting it as a path or as a file type.

The storage tree is written by the registry, that is by anyone who can push, and the
quarantine lives inside it. Nothing found there may make retentiond read or write outside the
root, or block: every path below the root is opened relative to the directory above it with
no symbolic link followed in any component (a symbolic link anywhere is :class:`SymlinkFound`),
files with ``O_NONBLOCK`` (a FIFO never blocks) and a type check before any read (a FIFO, a
device or a socket is :class:`NotRegularFile`), and reads are bounded (:class:`TooLarge`).

How a path is opened: with ``openat2(2)`` and ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` when
the kernel has it (Linux 5.6 and later, unless a seccomp filter refuses it): one system call
for the whole relative path, the kernel refusing a link in any component and any escape from
the directory, atomically (nothing can be swapped for a link between two steps). Otherwise one
component at a time, each ``openat(..., O_NOFOLLOW)`` relative to the one before. Both are
equally strict; the first is faster (a tag's ``current/link`` is three components, and a plan
opens a million of them). When a path is refused the components are looked at again with
``lstat`` to say which one is the link.

The root itself (``registry.root``) comes from the operator's config and is trusted: it may be
a symbolic link (a mount point elsewhere, say). Everything below it is not.

Exceptions (all :class:`UnsafeEntry`, a ``ValueError``, with ``where``: the relative path of
the offending component when known; OS errors such as ``FileNotFoundError`` and
``PermissionError`` pass through as they are)::

    UnsafeEntry
    ├── SymlinkFound      a path component is a symbolic link
    ├── NotRegularFile    a FIFO, socket, device or directory where a file is expected
    ├── NotADirectoryEntry a file where a directory is expected
    ├── TooLarge          more bytes than the caller's bound
    └── BadComponent      an empty, ``.`` or ``..`` component, or a NUL byte
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeEntry(ValueError):
    """Something under the root that retentiond will not read or change.

    ``where``: the path (relative to the directory it was opened from) of the component that
    is wrong, when known; else empty."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


class SymlinkFound(UnsafeEntry):
    pass


class NotRegularFile(UnsafeEntry):
    """``what``: what the file turned out to be once opened ("a FIFO", "a directory"), in
    words; empty when the open itself refused it (a socket, a device)."""

    def __init__(self, message: str, where: str = "", what: str = "") -> None:
        super().__init__(message, where)
        self.what = what


class NotADirectoryEntry(UnsafeEntry):
    pass


class TooLarge(UnsafeEntry):
    pass


class BadComponent(UnsafeEntry):
    pass


def kind_of(mode: int) -> str:
    """What a file of this mode is, in words ("a FIFO", "a symbolic link", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def components(path: str) -> list[str]:
    """The components of a relative path; BadComponent for ``..``, ``.``, empty or NUL parts
    (an absolute path has an empty first component)."""
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise BadComponent(f"{path!r} is not a plain relative path (component {part!r})")
    return parts


# -- openat2 ---------------------------------------------------------------------------------------

#: the same number on every Linux architecture but alpha (new system calls share one table)
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS

#: ``openat2(dir_fd, path, flags)`` for the flags it was made for, or None: the kernel lacks it
_Openat2 = Callable[[int, bytes], int]


def _make_openat2(flags: int) -> _Openat2 | None:
    """An ``openat2`` with ``flags`` and the resolve flags above, when this kernel has it."""
    if sys.platform != "linux" or os.uname().machine == "alpha":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    # no argtypes: the constant arguments are built once as C values, the descriptor goes as
    # a C int and the path as a char pointer (ctypes' own conversions; 0.6 us a call less than
    # with argtypes, for a million calls a plan); the probe below checks that the call works
    how = ctypes.create_string_buffer(struct.pack("=QQQ", flags, 0, _RESOLVE), 24)
    number = ctypes.c_long(_SYS_OPENAT2)
    address = ctypes.c_void_p(ctypes.addressof(how))
    size = ctypes.c_size_t(24)
    get_errno = ctypes.get_errno

    def openat2(dir_fd: int, path: bytes, _how: object = how) -> int:
        fd: int = syscall(number, dir_fd, path, address, size)
        if fd < 0:
            code = get_errno()
            raise OSError(code, os.strerror(code), path.decode("utf-8", "surrogateescape"))
        return fd

    _RAW[flags] = (syscall, number, address, size, how)
    probe = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(openat2(probe, b"."))
    except OSError:
        # ENOSYS (an older kernel), EPERM (a seccomp filter): one component at a time
        return None
    finally:
        os.close(probe)
    return openat2


_OPENAT2: dict[int, _Openat2 | None] = {}
#: what each of those calls (for :func:`opener`, which makes the call itself)
_RAW: dict[int, tuple[Any, ...]] = {}


def _openat2_for(flags: int) -> _Openat2 | None:
    if flags not in _OPENAT2:
        _OPENAT2[flags] = _make_openat2(flags)
    return _OPENAT2[flags]


def use_openat2(enabled: bool) -> None:
    """Use ``openat2`` where the kernel has it (the default), or never (tests of the fallback)."""
    _OPENAT2.clear()
    if not enabled:
        _OPENAT2.update({DIR_FLAGS: None, FILE_FLAGS: None})


# -- opening --------------------------------------------------------------------------------------


def _diagnose(path: str, dir_fd: int, exc: OSError) -> UnsafeEntry | OSError:
    """Why ``path`` below ``dir_fd`` was refused: the first component that is a symbolic link
    or not a directory (looked at again with lstat), or ``exc`` itself."""
    parts = path.split("/")
    for n in range(len(parts)):
        where = "/".join(parts[: n + 1])
        try:
            st = _lstat_components(parts[: n + 1], dir_fd)
        except OSError:
            break
        if stat.S_ISLNK(st.st_mode):
            return SymlinkFound(f"{where!r} is a symbolic link (not followed)", where)
        if n < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return NotADirectoryEntry(f"{where!r} is {kind_of(st.st_mode)}, not a directory", where)
    if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):  # a socket, a device
        try:
            st = _lstat_components(parts, dir_fd)
        except OSError:
            return exc
        return NotRegularFile(f"{path!r} is {kind_of(st.st_mode)}, not a regular file", path)
    return exc


def _lstat_components(parts: list[str], dir_fd: int) -> os.stat_result:
    """lstat of the last of ``parts``, the others opened without following links."""
    if len(parts) == 1:
        return os.lstat(parts[0], dir_fd=dir_fd)
    with opened_dir("/".join(parts[:-1]), dir_fd) as fd:
        return os.lstat(parts[-1], dir_fd=fd)


def _step_by_step(path: str, dir_fd: int, flags: int) -> int:
    """openat of each component with O_NOFOLLOW, the last one with ``flags``."""
    parts = components(path)
    fd = dir_fd
    try:
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            new = os.open(part, flags if last else DIR_FLAGS, dir_fd=fd)
            if fd != dir_fd:
                os.close(fd)
            fd = new
    except BaseException:
        if fd != dir_fd:
            os.close(fd)
        raise
    return fd


def open_below(path: str, dir_fd: int, flags: int = FILE_FLAGS) -> int:
    """Open the relative ``path`` below ``dir_fd`` with ``flags`` (which must hold
    ``O_NOFOLLOW``), following no symbolic link in any component. The caller closes it.

    SymlinkFound / NotADirectoryEntry / NotRegularFile (a socket) / BadComponent name the
    component at fault; any other OSError (FileNotFoundError, PermissionError) passes."""
    if "\0" in path or not path or path[0] == "/":
        raise BadComponent(f"{path!r} is not a plain relative path")
    openat2 = _OPENAT2[flags] if flags in _OPENAT2 else _openat2_for(flags)
    try:
        if openat2 is not None:
            return openat2(dir_fd, path.encode("utf-8", "surrogateescape"))
        return _step_by_step(path, dir_fd, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
            raise
        if exc.errno == errno.EXDEV:  # RESOLVE_BENEATH: a ".." or an absolute link
            raise BadComponent(f"{path!r} leads outside the directory it is opened from") from exc
        found = _diagnose(path, dir_fd, exc)
        if found is exc:
            raise
        raise found from exc


def opener(flags: int = FILE_FLAGS) -> Callable[[str, int], int]:
    """:func:`open_below` with ``flags``, as ``open(path, dir_fd)``, for a loop of millions:
    with ``openat2`` the path goes straight to the kernel (which still refuses any link and
    any escape; the checks and the diagnosis run only when it refuses). ``path`` must be made
    of names read from directories (they hold no NUL byte)."""
    if _openat2_for(flags) is None:
        return lambda path, dir_fd: open_below(path, dir_fd, flags)
    syscall, number, address, size, _ = _RAW[flags]

    def open_fast(path: str, dir_fd: int) -> int:
        fd: int = syscall(number, dir_fd, path.encode("utf-8", "surrogateescape"), address, size)
        if fd < 0:
            return open_below(path, dir_fd, flags)  # again, to raise what it raises
        return fd

    return open_fast


def open_dir(path: str, dir_fd: int) -> int:
    """Open the directory ``path`` below ``dir_fd``, never following a symbolic link in any
    component. The caller closes the descriptor."""
    components(path)
    try:
        return open_below(path, dir_fd, DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:  # the last component (the others were diagnosed)
            raise _why_not_dir(path, dir_fd) from exc
        raise


def _why_not_dir(path: str, dir_fd: int) -> UnsafeEntry:
    try:
        st = _lstat_components(path.split("/"), dir_fd)
    except OSError:
        return NotADirectoryEntry(f"{path!r} is not a directory", path)
    if stat.S_ISLNK(st.st_mode):
        return SymlinkFound(f"{path!r} is a symbolic link (not followed)", path)
    return NotADirectoryEntry(f"{path!r} is {kind_of(st.st_mode)}, not a directory", path)


def open_root(root: str) -> int:
    """The trusted root (it may itself be a symbolic link: the operator's choice)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextmanager
def opened_dir(path: str, dir_fd: int) -> Iterator[int]:
    fd = open_dir(path, dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def check_regular(fd: int, name: str) -> os.stat_result:
    """fstat of an open file; NotRegularFile unless it is a regular file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        what = kind_of(st.st_mode)
        raise NotRegularFile(f"{name!r} is {what}, not a regular file", name, what)
    return st


def read_fd(fd: int, name: str, limit: int, first: bytes = b"") -> bytes:
    """The rest of an open file after ``first`` (what was read already), at most ``limit``
    bytes in all; TooLarge beyond."""
    chunks = [first]
    total = len(first)
    while total <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise TooLarge(f"{name!r} holds more than {limit} bytes", name)
    return b"".join(chunks)


def read_file(name: str, dir_fd: int, limit: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes (at most ``limit``) and its stat, opened below ``dir_fd``
    without following links or blocking. ``name`` may have several components."""
    components(name)
    fd = open_below(name, dir_fd, FILE_FLAGS)
    try:
        st = check_regular(fd, name)
        if st.st_size > limit:
            raise TooLarge(f"{name!r} holds {st.st_size} bytes, more than {limit}", name)
        return read_fd(fd, name, limit), st
    finally:
        os.close(fd)


def lstat_below(path: str, dir_fd: int) -> os.stat_result:
    """``lstat`` of ``path`` below ``dir_fd`` with no link followed on the way."""
    parts = components(path)
    return _lstat_components(parts, dir_fd)


def scandir_below(path: str, dir_fd: int) -> list[os.DirEntry[str]]:
    """The entries of the directory ``path`` below ``dir_fd`` (opened as :func:`open_dir`).
    Their ``path`` is their name: ``entry.is_dir(follow_symlinks=False)`` and
    ``entry.stat(follow_symlinks=False)`` are relative to the directory, never to a link."""
    with opened_dir(path, dir_fd) as fd, os.scandir(fd) as it:
        return list(it)
