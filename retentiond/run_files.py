"""A run's own files in ``state_dir/runs/<run_id>/``: what it removes, keeps and reclaims.

A run of a million tags removes a million directories, keeps tens of thousands of tags and
expects millions of blobs to go. None of it lives in the journal (``journal.json`` stays a few
hundred bytes, saved at every phase): each list is a file of its own, written once, streamed,
before the first move, and read back as a stream where it is needed (the moves, recovery, undo,
verification). Files::

    removals.jsonl     every directory the run moves into the quarantine, one JSON object a
                       line (:class:`~retentiond.storage.removal_list.Removal`); what recovery
                       and undo trust. Deleted when the quarantine is purged or put back.
    kept.jsonl         [repository, tag, digest] of every tag the run keeps, a repository's
                       tags in a row: what verification asks the registry for.
    deleted.jsonl      ["tag", repository, tag, policy], ["manifest", repository, digest,
                       policy] and ["repository", name, "", null]: what the run removed and
                       why, kept as the run's detailed record.
    reclaimable.bin    the blobs the GC is expected to delete with the size of their data: a
                       JSON header line, then the 32-byte digests in ascending order, then
                       their sizes (8 bytes each, little-endian).

Each file is written to a temporary name, fsynced and renamed, so it is whole or absent. What
is read back is checked: a file of the wrong shape is a :class:`~retentiond.errors.StorageError`
naming it, and nothing is done with it. The run directories of the newest
:data:`KEEP_FINISHED` finished runs are kept (their ``deleted.jsonl``); older ones are deleted,
except a run whose quarantine is held (its ``removals.jsonl`` is still there).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from json.encoder import encode_basestring_ascii as _string
from pathlib import Path
from typing import IO, Any

from retentiond.core.blob_table import BlobTable
from retentiond.errors import StorageError
from retentiond.run_records import RUNS_DIR, JournalEntry, run_id_problem
from retentiond.state import fsync_dir, read_state_file
from retentiond.storage.removal_list import Removal
from retentiond.storage.safe_fs import open_root

RUNS = RUNS_DIR
REMOVALS = "removals.jsonl"
KEPT = "kept.jsonl"
DELETED = "deleted.jsonl"
RECLAIMABLE = "reclaimable.bin"
#: where versions before 0.2 kept a run's removals: ``state_dir/removals/<run_id>.json``
LEGACY_REMOVALS = "removals"
#: finished runs whose directory (their ``deleted.jsonl``) is kept
KEEP_FINISHED = 20
_RECLAIMABLE_FORMAT = "retentiond-reclaimable/1"
_MOVED_NOTHING = (
    "nothing was moved. Put the directories of its run back by hand from the quarantine, or "
    "move the file away"
)


def run_dir(state_dir: Path, run_id: str) -> Path:
    """``state_dir/runs/<run_id>``; the run id is checked before it becomes a path."""
    problem = run_id_problem(run_id)
    if problem is not None:
        raise StorageError(f"no files for {problem}")
    return state_dir / RUNS / run_id


class _Writer:
    """A file written whole or not at all: a temporary, fsynced, then renamed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 (closed in close/abort)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from exc

    def abort(self) -> None:
        self.file.close()
        with suppress(OSError):
            self.tmp.unlink()


#: one encoder for every line (``json.dumps`` with arguments makes one per call)
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _row_line(row: Sequence[str | None]) -> str:
    """A row of strings and nulls as :data:`_compact` writes it, a few times faster (the
    kept and deleted lists are written in the read-only window); any other row as it does."""
    try:
        return "[" + ",".join(["null" if v is None else _string(v) for v in row]) + "]"
    except TypeError:  # not a string (a journal of an earlier version, read as it was)
        return _compact(row)


def _removal_line(item: Removal | dict[str, Any]) -> str:
    return item.json_line() if isinstance(item, Removal) else _compact(item)


def write_lines(path: Path, items: Iterable[Any], line: Callable[[Any], str] = _compact) -> int:
    """Write each item as one line of compact JSON (``line`` makes it); returns how many."""
    writer = _Writer(path)
    count = 0
    buffer: list[str] = []
    try:
        for item in items:
            buffer.append(line(item))
            count += 1
            if len(buffer) >= 4096:
                writer.write(("\n".join(buffer) + "\n").encode())
                buffer.clear()
        if buffer:
            writer.write(("\n".join(buffer) + "\n").encode())
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return count


def _open_for_reading(path: Path, what: str) -> IO[bytes] | None:
    """The file opened without following a link or blocking on a FIFO; None when absent."""
    try:
        dir_fd = open_root(str(path.parent))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path.name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(
            f"cannot read {what} {path}: {exc.strerror}; retentiond writes it as a regular "
            "file: move it away"
        ) from exc
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StorageError(
            f"{what} {path} is not a regular file; retentiond writes it as one: move it away"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_lines(
    path: Path, what: str, advice: str = "nothing was done with it"
) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each line; a line that is not JSON is an error naming
    the file and the line, then ``advice``. Nothing when the file is absent."""
    handle = _open_for_reading(path, what)
    if handle is None:
        return
    with handle:
        before = 0
        while lines := handle.readlines(_READ_HINT):
            yield from _parsed_lines(lines, before, path, what, advice)
            before += len(lines)


#: bytes of lines read and parsed at a time
_READ_HINT = 1 << 20
_raw_decode = json.JSONDecoder().raw_decode
_UNPARSED = object()


def _parsed_lines(
    lines: list[bytes], before: int, path: Path, what: str, advice: str
) -> Iterator[tuple[int, Any]]:
    """:func:`read_lines` of some lines, ``before`` lines into the file. Each is what
    ``json.loads`` makes of it; a line retentiond wrote (ASCII JSON, nothing around it) is
    parsed in place from the lines decoded once, any other by ``json.loads`` itself."""
    text = b"".join(lines).decode("ascii", "replace")
    exact = text.isascii()  # offsets in the text are offsets in the bytes
    start = 0
    for number, line in enumerate(lines, before + 1):
        end, at = start + len(line), start
        start = end
        if not line.strip():
            continue
        if not line.endswith(b"\n"):
            raise StorageError(
                f"{what} {path} ends in a cut line ({number}); it was not written by a "
                f"finished write of retentiond: {advice}"
            )
        item: Any = _UNPARSED
        if exact:
            try:
                item, stop = _raw_decode(text, at)
            except (ValueError, RecursionError):
                item = _UNPARSED
            else:
                if stop != end - 1:  # more on the line, or a value across lines
                    item = _UNPARSED
        if item is _UNPARSED:
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise StorageError(
                    f"{what} {path} line {number} is not valid JSON ({exc}); {advice}"
                ) from exc
        yield number, item


def exists(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


# -- the removals ---------------------------------------------------------------------------------


def removals_path(state_dir: Path, run_id: str) -> Path:
    """Where run ``run_id``'s removals are: this version's file, or an earlier version's list
    when only that exists."""
    path = run_dir(state_dir, run_id) / REMOVALS
    legacy = state_dir / LEGACY_REMOVALS / f"{run_id}.json"
    return legacy if not exists(path) and exists(legacy) else path


def save_removals(
    state_dir: Path, run_id: str, removals: Iterable[Removal | dict[str, Any]]
) -> int:
    """Write what run ``run_id`` is about to move, before its first move; returns how many
    (each a :class:`Removal`, or its JSON object as :meth:`Removal.to_json` makes it)."""
    return write_lines(run_dir(state_dir, run_id) / REMOVALS, removals, _removal_line)


def load_removals(state_dir: Path, run_id: str) -> list[Any] | None:
    """The JSON of run ``run_id``'s removals, one item each (unchecked: see
    :func:`retentiond.storage.removal_list.parse_removals`), or None when there is none."""
    path = removals_path(state_dir, run_id)
    if path.suffix == ".json":  # an earlier version's: one JSON list
        data = read_state_file(path, "the list of removals")
        if data is None:
            return None
        try:
            return list(json.loads(data))
        except (ValueError, TypeError, RecursionError) as exc:
            raise StorageError(
                f"the list of removals {path} is not a JSON list ({exc}); nothing was moved. "
                "Put the directories of its run back by hand from the quarantine, or move the "
                "file away"
            ) from exc
    if not exists(path) and not path.is_symlink():
        return None
    return [item for _, item in read_lines(path, "the list of removals", _MOVED_NOTHING)]


def removal_batches(state_dir: Path, run_id: str, size: int) -> Iterator[list[Removal]]:
    """Run ``run_id``'s removals, ``size`` at a time, each checked as it is read (a removal
    of the wrong shape is an error naming the file and its line; nothing of its batch moves)."""
    path = removals_path(state_dir, run_id)
    if path.suffix == ".json":  # an earlier version's list: small enough to read whole
        whole = load_removals(state_dir, run_id) or []
        items: Iterable[tuple[int, Any]] = enumerate(whole, 1)
    else:
        items = read_lines(path, "the list of removals", _MOVED_NOTHING)
    batch: list[Removal] = []
    for position, (_, item) in enumerate(items):
        try:
            removal = Removal.from_json(item)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"{path}: entry {position} {exc}; {_MOVED_NOTHING}") from exc
        if removal.index != position:  # retentiond numbers them in order, from 0
            raise StorageError(
                f"{path}: entry {position} has the index {removal.index}, not {position}; "
                f"{_MOVED_NOTHING}"
            )
        batch.append(removal)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def drop_removals(state_dir: Path, run_id: str) -> None:
    """Forget run ``run_id``'s removals: its quarantine is gone (purged or put back)."""
    for path in (
        run_dir(state_dir, run_id) / REMOVALS,
        state_dir / LEGACY_REMOVALS / f"{run_id}.json",
    ):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror}") from exc


# -- kept and deleted -----------------------------------------------------------------------------


def _checked_row(path: Path, what: str, number: int, row: Any, size: int) -> list[Any]:
    if (
        not isinstance(row, list)
        or len(row) != size
        or not all(isinstance(v, str) for v in row[: size - 1])
        or not (row[-1] is None or isinstance(row[-1], str))
    ):
        raise StorageError(
            f"{what} {path} line {number} is {str(row)[:80]}, not a row of {size} strings as "
            "retentiond writes it; nothing was done with it"
        )
    return row


def write_kept(state_dir: Path, run_id: str, rows: Iterable[tuple[str, str, str]]) -> int:
    return write_lines(run_dir(state_dir, run_id) / KEPT, rows, _row_line)


def read_kept(state_dir: Path, run_id: str) -> Iterator[tuple[str, str, str]]:
    """Every kept (repository, tag, digest), a repository's tags in a row."""
    path = run_dir(state_dir, run_id) / KEPT
    for number, row in read_lines(path, "the kept tags"):
        repository, tag, digest = _checked_row(path, "the kept tags", number, row, 3)
        if digest is None:
            raise StorageError(f"the kept tags {path} line {number} has no digest")
        yield repository, tag, digest


def write_deleted(state_dir: Path, run_id: str, rows: Iterable[Sequence[str | None]]) -> int:
    return write_lines(run_dir(state_dir, run_id) / DELETED, rows, _row_line)


def read_deleted_tags(state_dir: Path, run_id: str) -> Iterator[tuple[str, str]]:
    """(repository, tag) of every tag the run deleted."""
    path = run_dir(state_dir, run_id) / DELETED
    for number, row in read_lines(path, "the deleted tags"):
        kind, repository, name, _ = _checked_row(path, "the deleted tags", number, row, 4)
        if kind == "tag":
            yield repository, name


# -- the reclaimable blobs ------------------------------------------------------------------------


def write_reclaimable(state_dir: Path, run_id: str, table: BlobTable) -> None:
    keys, sizes = table.packed()
    if sys.byteorder == "little":  # the array's own bytes: no copy of a table of millions
        body = memoryview(sizes).cast("B")
    else:
        little = array("q", sizes)
        little.byteswap()
        body = memoryview(little).cast("B")
    digest = hashlib.sha256(keys)
    digest.update(body)
    header = {"format": _RECLAIMABLE_FORMAT, "blobs": len(sizes), "sha256": digest.hexdigest()}
    writer = _Writer(run_dir(state_dir, run_id) / RECLAIMABLE)
    writer.write(json.dumps(header).encode() + b"\n")
    writer.write(keys)
    writer.write(body)
    writer.close()


def read_reclaimable(state_dir: Path, run_id: str) -> BlobTable | None:
    """The blobs the GC is expected to delete, or None when the run has no such file."""
    path = run_dir(state_dir, run_id) / RECLAIMABLE
    data = read_state_file(path, "the reclaimable blobs")
    if data is None:
        return None
    head, _, rest = data.partition(b"\n")

    def bad(why: str) -> StorageError:
        return StorageError(
            f"the reclaimable blobs {path} {why}; it was not written whole by retentiond and "
            "nothing was done with it: move it away (the run then reports no bytes reclaimed)"
        )

    try:
        header = json.loads(head)
    except ValueError as exc:
        raise bad("has no header") from exc
    if not isinstance(header, dict) or header.get("format") != _RECLAIMABLE_FORMAT:
        raise bad(f"is not in the format {_RECLAIMABLE_FORMAT}")
    count = header.get("blobs")
    if not isinstance(count, int) or len(rest) != count * 40:
        raise bad(f"does not hold {count} blobs")
    if hashlib.sha256(rest).hexdigest() != header.get("sha256"):
        raise bad("does not match its checksum")
    sizes = array("q")
    sizes.frombytes(rest[count * 32 :])
    if sys.byteorder != "little":
        sizes.byteswap()
    try:
        return BlobTable.from_packed(rest[: count * 32], sizes)
    except ValueError as exc:
        raise bad(str(exc)) from exc


# -- the end of a run -----------------------------------------------------------------------------


def finish_files(state_dir: Path, run_id: str) -> None:
    """The run is over: drop what only it needed (kept tags, reclaimable blobs), then the
    directories of runs older than the newest :data:`KEEP_FINISHED` (none still held)."""
    here = run_dir(state_dir, run_id)
    for name in (KEPT, RECLAIMABLE):
        try:
            (here / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {here / name}: {exc.strerror}") from exc
    runs = state_dir / RUNS
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(runs)
            if run_id_problem(entry.name) is None and entry.is_dir(follow_symlinks=False)
        )
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot list {runs}: {exc.strerror}") from exc
    for name in names[:-KEEP_FINISHED]:
        if name != run_id and not (runs / name / REMOVALS).exists():
            shutil.rmtree(runs / name, ignore_errors=True)


# -- a journal of an earlier version --------------------------------------------------------------


def migrate_legacy(state_dir: Path, entry: JournalEntry) -> bool:
    """A journal written before 0.2 held the run's lists itself: write them to the run's files
    and drop them from ``entry`` (the caller saves it), so that the run is finished the way
    this version runs. True when there was something to move."""
    legacy = (entry.kept_tags, entry.deleted_tags, entry.unlinked, entry.reclaimable)
    if all(part is None for part in legacy):
        return False
    run_id = entry.run_id
    deleted, unlinked = entry.deleted_tags or [], entry.unlinked or []
    by_policy: dict[str, dict[str, int]] = {"tags": {}, "manifests": {}}
    for key, rows in (("tags", deleted), ("manifests", unlinked)):
        for row in rows:
            counts = by_policy[key]
            counts[row.policy or ""] = counts.get(row.policy or "", 0) + 1
    write_deleted(
        state_dir,
        run_id,
        [
            *(["tag", *row] for row in deleted),
            *(["manifest", *row] for row in unlinked),
            *(["repository", name, "", None] for name in entry.repositories_removed or []),
        ],
    )
    write_kept(state_dir, run_id, entry.kept_tags or [])
    write_reclaimable(state_dir, run_id, BlobTable.from_items((entry.reclaimable or {}).items()))
    entry.removed = {
        "tags": len(deleted),
        "manifests": len(unlinked),
        "repositories": len(entry.repositories_removed or []),
    }
    entry.removed_by_policy = by_policy
    entry.kept_tags = entry.deleted_tags = entry.unlinked = entry.reclaimable = None
    entry.blobs_gone = None
    return True
