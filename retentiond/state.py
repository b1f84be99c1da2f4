"""``state_dir``: the run lock, the journal of the run in progress, and the history of runs
(each run's own files, its removals among them, are :mod:`retentiond.run_files`'s).

``state_dir`` is retentiond's own directory; the storage root is not (the registry writes it).
What ``undo`` and crash recovery act on is read from here only, and checked before use
(:mod:`retentiond.run_records` holds the journal's and the history's types, their JSON and their
checks): a file of the wrong shape is a :class:`~retentiond.errors.StorageError` that names it
and says what to do, never a move.

Everything is written by write-to-temporary + fsync + rename, so a crash leaves either the old
file or the new one. The lock is ``flock(2)``: the kernel releases it when the process dies,
even by ``kill -9``.

Files::

    lock                  flock of the run in progress
    journal.json          the run in progress: phase, counts, times (a few hundred bytes)
    runs/<run>/           the run's removals, kept tags, deleted tags, reclaimable blobs
    runs.jsonl            one JSON object per finished run (and per purge or undo)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from retentiond.errors import RetentiondError, StorageError
from retentiond.logs import get_logger
from retentiond.run_records import HistoryEntry, JournalEntry, RecordProblem
from retentiond.storage.safe_fs import UnsafeEntry, open_root, read_file

JOURNAL = "journal.json"
HISTORY = "runs.jsonl"
LOCK = "lock"
#: the most a state file may hold (the history of runs grows by a line a run)
STATE_LIMIT = 1 << 32


class Busy(RetentiondError):
    """Another retentiond run holds the lock."""


# -- files -------------------------------------------------------------------------------------


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
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state_file(path: Path, what: str) -> bytes | None:
    """A state file's bytes, or None when it does not exist. Opened without blocking or
    following a link: a FIFO or a link where a state file should be is an error, not a hang."""
    try:
        dir_fd = open_root(str(path.parent))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return read_file(path.name, dir_fd, STATE_LIMIT)[0]
    except FileNotFoundError:
        return None
    except UnsafeEntry as exc:
        raise StorageError(
            f"cannot read {what} {path}: {exc}; retentiond writes it as a regular file: move it "
            "away"
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)


def _json(data: bytes | str) -> Any:
    """Parsed JSON; ValueError also for JSON nested too deeply to parse."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


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

    def malformed(self, why: str) -> StorageError:
        """The error for a journal that cannot be trusted: nothing is done with it."""
        return StorageError(
            f"the journal {self.path} {why}; the interrupted run it describes cannot be resumed "
            "from it and nothing was changed: check the registry and its retentiond-quarantine "
            "by hand, then move the file away"
        )

    def load(self) -> JournalEntry | None:
        """The run in progress, checked (:meth:`JournalEntry.from_json`): a journal of the wrong
        shape is an error, never acted on."""
        data = read_state_file(self.path, "the journal")
        if data is None:
            return None
        try:
            loaded = _json(data)
        except ValueError as exc:
            raise self.malformed(f"is not valid JSON ({exc})") from exc
        try:
            return JournalEntry.from_json(loaded)
        except RecordProblem as exc:
            raise self.malformed(str(exc)) from exc

    def save(self, entry: JournalEntry) -> None:
        write_atomic(self.path, json.dumps(entry.to_json(), indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()


# -- history -------------------------------------------------------------------------------------


def append_history(state_dir: Path, line_json: Mapping[str, Any]) -> None:
    """Append one line (a ``RunRecord``'s or ``HistoryMark``'s ``to_json()``), fsynced."""
    path = _ensure(state_dir) / HISTORY
    line = json.dumps(line_json, sort_keys=True) + "\n"
    try:
        with open(path, "ab+") as f:
            if f.tell() > 0:  # a line torn by a crash stays alone on its line
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StorageError(f"cannot append to {path}: {exc.strerror}") from exc


def read_history(state_dir: Path) -> list[HistoryEntry]:
    """Every run record, checked. A line that is not JSON (torn by a crash while it was
    written) is skipped with a warning; a JSON line of the wrong shape is an error."""
    path = state_dir / HISTORY
    data = read_state_file(path, "the history of runs")
    if data is None:
        return []
    out: list[HistoryEntry] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = _json(line)
        except ValueError:
            get_logger(job="state").warning("skipped a torn line", file=str(path), line=number)
            continue
        try:
            out.append(HistoryEntry.from_json(record))
        except RecordProblem as problem:
            raise StorageError(
                f"{path} line {number} is not a run record of retentiond: {problem}; nothing "
                "was changed. This file is written only by retentiond: fix or delete that line"
            ) from problem
    return out
