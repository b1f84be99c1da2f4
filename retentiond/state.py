"""``state_dir``: the run lock, the journal of the run in progress, and the history of runs.

Everything is written by write-to-temporary + fsync + rename, so a crash leaves either the old
file or the new one. The lock is ``flock(2)``: the kernel releases it when the process dies,
even by ``kill -9``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from retentiond.errors import RetentiondError, StorageError

JOURNAL = "journal.json"
HISTORY = "runs.jsonl"
LOCK = "lock"


class Busy(RetentiondError):
    """Another retentiond run holds the lock."""


def _ensure(state_dir: Path) -> Path:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create state_dir {state_dir}: {exc.strerror}; set state_dir to a writable "
            "directory"
        ) from exc
    return state_dir


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


@contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    """Hold the single-run lock, or raise :class:`Busy` at once."""
    path = _ensure(state_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise Busy(
                f"another retentiond run holds {path}; wait for it to finish (one run at a time)"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


class Journal:
    """The run in progress: what it planned and removed and which phase it reached."""

    def __init__(self, state_dir: Path) -> None:
        self.path = _ensure(state_dir) / JOURNAL

    def load(self) -> dict[str, Any] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the journal {self.path}: {exc.strerror}") from exc
        try:
            loaded: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise StorageError(
                f"the journal {self.path} is not valid JSON ({exc}); an interrupted run cannot be "
                "resumed from it: check the registry by hand, then move the file away"
            ) from exc
        return loaded

    def save(self, entry: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(entry, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()


def append_history(state_dir: Path, record: dict[str, Any]) -> None:
    path = _ensure(state_dir) / HISTORY
    line = json.dumps(record, sort_keys=True) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StorageError(f"cannot append to {path}: {exc.strerror}") from exc


def read_history(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / HISTORY
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line after a crash
    return out
