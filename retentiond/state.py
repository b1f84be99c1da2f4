"""``state_dir``: the run lock, the journal of the run in progress, each run's list of removals,
and the history of runs.

``state_dir`` is retentiond's own directory; the storage root is not (the registry writes it).
What ``undo`` and crash recovery act on is read from here only, and checked before use: a file
of the wrong shape is a :class:`~retentiond.errors.StorageError` that names it and says what to
do, never a move.

Everything is written by write-to-temporary + fsync + rename, so a crash leaves either the old
file or the new one. The lock is ``flock(2)``: the kernel releases it when the process dies,
even by ``kill -9``.

Files::

    lock                  flock of the run in progress
    journal.json          the run in progress (phase, plan summary, what to verify)
    removals/<run>.json   what run <run> moved into the quarantine: a JSON list of removals,
                          written before the first move, deleted when the quarantine is purged
    runs.jsonl            one JSON object per finished run (and per purge or undo)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from retentiond.errors import RetentiondError, StorageError
from retentiond.logs import get_logger
from retentiond.storage.safe_fs import UnsafeEntry, open_root, read_file

JOURNAL = "journal.json"
HISTORY = "runs.jsonl"
LOCK = "lock"
REMOVALS = "removals"
#: the most a state file may hold (a journal lists every kept tag: ~100 bytes each)
STATE_LIMIT = 1 << 32

#: the one format of a run id, as :func:`new_run_id` makes it; checked wherever one becomes a path
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
RUN_ID_EXAMPLE = "20261201T030000Z-1a2b3c"


class Busy(RetentiondError):
    """Another retentiond run holds the lock."""


def new_run_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def run_id_problem(value: object) -> str | None:
    """Why ``value`` is not a run id (the text is safe to print: repr, cut short), or None."""
    if is_run_id(value):
        return None
    return f"{_short(value)} is not a retentiond run id (like {RUN_ID_EXAMPLE})"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- checking what is read back ----------------------------------------------------------------

#: a value's check and what the value should be, in words
Check = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_triple(value: Any) -> bool:
    """[repository, name, policy-or-null]"""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and (value[2] is None or isinstance(value[2], str))
    )


def _list_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(item(v) for v in value)


def _dict_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: (
        isinstance(value, dict) and all(isinstance(k, str) and item(v) for k, v in value.items())
    )


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


STR: Check = (lambda v: isinstance(v, str), "a string")
BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
INT: Check = (_is_int, "an integer")
NUMBER: Check = (_is_number, "a number")
OBJECT: Check = (lambda v: isinstance(v, dict), "an object")
STRINGS: Check = (_list_of(lambda v: isinstance(v, str)), "a list of strings")
TRIPLES: Check = (_list_of(_is_triple), "a list of [repository, name, policy]")
DURATIONS: Check = (_dict_of(_is_number), "an object of numbers")
TIME: Check = (_optional(_is_iso), "an ISO 8601 time or null")
RUN: Check = (is_run_id, f"a run id like {RUN_ID_EXAMPLE}")

#: the journal's fields that a run reads back, and what each must be (others are ignored)
JOURNAL_FIELDS: Mapping[str, Check] = {
    "run_id": RUN,
    "phase": STR,
    "started_at": TIME,
    "gc_mode": STR,
    "durations": DURATIONS,
    "errors": STRINGS,
    "maintenance_entered_at": NUMBER,
    "maintenance_state": STR,
    "enter_seconds": NUMBER,
    "plan": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "removals": (lambda v: isinstance(v, list), "a list"),
    "reclaimable": (_dict_of(_is_int), "an object of integers"),
    "deleted_tags": TRIPLES,
    "unlinked": TRIPLES,
    "repositories_removed": STRINGS,
    "kept_tags": TRIPLES,
    "blob_count_before": INT,
    "gc_ran": BOOL,
    "gc_before_removals": BOOL,
    "pre_gc_bytes": INT,
    "pre_gc_blobs": INT,
    "gc_output_tail": STRINGS,
    "gc_skipped": STR,
    "held_until": TIME,
    "bytes_reclaimed": INT,
    "blobs_deleted": INT,
    "blobs_gone": STRINGS,
    "cleaned": (_dict_of(_is_int), "an object of integers"),
    "resumed": BOOL,
    "read_only_seconds": NUMBER,
    "unavailable_seconds": NUMBER,
    "broken": STRINGS,
}
JOURNAL_REQUIRED = ("run_id", "phase")

#: the fields of a history record that decisions and metrics read back
HISTORY_FIELDS: Mapping[str, Check] = {
    "run_id": RUN,
    "status": STR,
    "finished_at": TIME,
    "held_until": TIME,
    "gc_ran": BOOL,
    "gc_before_removals": BOOL,
    "purged": BOOL,
    "durations": DURATIONS,
    "blob_count_before": INT,
    "read_only_seconds": NUMBER,
    "unavailable_seconds": NUMBER,
    "broken": STRINGS,
    "errors": STRINGS,
}
HISTORY_REQUIRED = ("run_id",)


def shape_problem(value: Any, fields: Mapping[str, Check], required: tuple[str, ...]) -> str | None:
    """What is wrong with a JSON object read back from ``state_dir``, or None."""
    if not isinstance(value, dict):
        return f"it is {type(value).__name__}, not a JSON object"
    for key in required:
        if key not in value:
            return f"{key!r} is missing"
    for key, (check, what) in fields.items():
        if key in value and not check(value[key]):
            return f"{key!r} is {_short(value[key])}, not {what}"
    return None


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
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path, what: str) -> bytes | None:
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

    def load(self) -> dict[str, Any] | None:
        """The run in progress, checked: the fields a run reads back have their types."""
        data = _read(self.path, "the journal")
        if data is None:
            return None
        try:
            loaded = _json(data)
        except ValueError as exc:
            raise self.malformed(f"is not valid JSON ({exc})") from exc
        problem = shape_problem(loaded, JOURNAL_FIELDS, JOURNAL_REQUIRED)
        if problem is not None:
            raise self.malformed(f"is not a journal of retentiond: {problem}")
        entry: dict[str, Any] = loaded
        return entry

    def save(self, entry: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(entry, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()


# -- each run's removals -------------------------------------------------------------------------


def removals_path(state_dir: Path, run_id: str) -> Path:
    problem = run_id_problem(run_id)
    if problem is not None:
        raise StorageError(f"no list of removals for {problem}")
    return state_dir / REMOVALS / f"{run_id}.json"


def save_removals(state_dir: Path, run_id: str, removals: list[dict[str, Any]]) -> None:
    """Write what run ``run_id`` is about to move, before its first move."""
    path = removals_path(state_dir, run_id)
    _ensure(path.parent)
    write_atomic(path, json.dumps(removals, indent=0).encode())


def load_removals(state_dir: Path, run_id: str) -> Any | None:
    """The JSON of run ``run_id``'s list of removals (unchecked: see
    :func:`retentiond.storage.removal.parse_removals`), or None when there is none."""
    path = removals_path(state_dir, run_id)
    data = _read(path, "the list of removals")
    if data is None:
        return None
    try:
        return _json(data)
    except ValueError as exc:
        raise StorageError(
            f"the list of removals {path} is not valid JSON ({exc}); nothing was moved. Put "
            f"the directories of its run back by hand from the quarantine, or move the file away"
        ) from exc


def drop_removals(state_dir: Path, run_id: str) -> None:
    """Forget run ``run_id``'s removals: its quarantine is gone (purged or put back)."""
    path = removals_path(state_dir, run_id)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot delete {path}: {exc.strerror}") from exc


# -- history -------------------------------------------------------------------------------------


def append_history(state_dir: Path, record: dict[str, Any]) -> None:
    path = _ensure(state_dir) / HISTORY
    line = json.dumps(record, sort_keys=True) + "\n"
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


def read_history(state_dir: Path) -> list[dict[str, Any]]:
    """Every run record, checked. A line that is not JSON (torn by a crash while it was
    written) is skipped with a warning; a JSON line of the wrong shape is an error."""
    path = state_dir / HISTORY
    data = _read(path, "the history of runs")
    if data is None:
        return []
    out: list[dict[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = _json(line)
        except ValueError:
            get_logger(job="state").warning("skipped a torn line", file=str(path), line=number)
            continue
        problem = shape_problem(record, HISTORY_FIELDS, HISTORY_REQUIRED)
        if problem is not None:
            raise StorageError(
                f"{path} line {number} is not a run record of retentiond: {problem}; nothing "
                "was changed. This file is written only by retentiond: fix or delete that line"
            )
        out.append(record)
    return out
