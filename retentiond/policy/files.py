"""Reading a config or policy file without trusting what the path names.

The path is followed (a Kubernetes ConfigMap mounts each file as a symbolic link into a
``..data`` directory), but what is opened must be a regular file: it is opened with
``O_NONBLOCK`` (a FIFO never blocks) and checked with ``fstat`` before anything is read (a
FIFO, a device such as ``/dev/zero``, a socket or a directory is refused), and at most
:data:`MAX_FILE_BYTES` are read. Every refusal is a :class:`SourceFileError` whose message says
what the path is and what to do; it never quotes the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024
MAX_FILE_TEXT = "1 MiB"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class SourceFileError(ValueError):
    """A config or policy file that cannot be read, or is not a file retentiond reads."""


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: ``a directory``, ``a FIFO (named pipe)``."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_source_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; ``what`` names it in messages (``policy file``, ``config file``).

    Raises :class:`SourceFileError` when it is not a regular file, is larger than
    :data:`MAX_FILE_BYTES`, is not UTF-8 or cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise SourceFileError(f"cannot read {what}: {exc.strerror or exc}") from exc
    try:
        data = _read_regular(fd, what)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(f"{what} is not UTF-8 text; save it as UTF-8") from exc


def _read_regular(fd: int, what: str) -> bytes:
    too_large = (
        f"{what} is larger than {MAX_FILE_TEXT}, the most retentiond reads;"
        " split it into several files"
    )
    try:
        mode = os.fstat(fd)
        if not stat.S_ISREG(mode.st_mode):
            raise SourceFileError(
                f"{what} is {file_kind(mode.st_mode)}, not a regular file;"
                f" {_hint(mode.st_mode, what)}"
            )
        if mode.st_size > MAX_FILE_BYTES:
            raise SourceFileError(too_large)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:  # the file may grow after fstat
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SourceFileError(f"cannot read {what}: {exc.strerror or exc}") from exc
    if size > MAX_FILE_BYTES:
        raise SourceFileError(too_large)
    return b"".join(chunks)


def _hint(mode: int, what: str) -> str:
    if stat.S_ISDIR(mode):
        return f"pass the {what} inside it"
    return f"pass the path of the {what} itself"
