"""Change the tree safely: move what a plan removes into a quarantine, put it back, purge it.

Every removal (:mod:`retentiond.storage.removal_list`) is one move of a whole directory (a tag,
a revision link, a repository) out of ``docker/registry/v2`` into
``<root>/retentiond-quarantine/<run_id>/`` in the same store (on a filesystem, one
``rename(2)``), so a crash never leaves half a directory and ``undo`` can put everything back
until the quarantine is purged after the GC. The moves go through the storage port
(:class:`~retentiond.storage.filesystem.FilesystemStorage`); this module decides what to move,
in what order, what is a conflict, and says what is wrong.

Nothing under the root is trusted (the registry, that is anyone who can push, writes it; the
quarantine is inside it):

- what to move comes from the plan or from ``state_dir`` (:mod:`retentiond.state`), never from
  the quarantine, and the list is checked whole before anything moves
  (:func:`~retentiond.storage.removal_list.checked`).
- no symbolic link is followed on the way to a directory moved (the storage opens every
  component without following one). A link found on the way is a :class:`StorageError`
  naming the path; the parents of all removals are checked before the first move.
- ``retentiond-quarantine`` and each run's directory in it are made by retentiond and must be
  real directories; a symbolic link there is an error, never followed, never deleted through.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retentiond.errors import StorageError
from retentiond.run_files import load_removals, removals_path
from retentiond.run_records import run_id_problem
from retentiond.storage import layout
from retentiond.storage.filesystem import FilesystemStorage
from retentiond.storage.layout import LEGACY_LISTING, QUARANTINE, V2
from retentiond.storage.location import Location, location_of
from retentiond.storage.port import Entry, Kind, Storage
from retentiond.storage.removal_list import (
    Removal,
    checked,
    parse_removals,
)
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.safe_fs import UnsafeEntry, open_root

#: what to tell the operator when a link or a special file stands in a removal's way
NO_LINKS = (
    "retentiond changes nothing through a symbolic link or a special file (the registry makes "
    "none): remove it, or repair that repository by hand"
)


def quarantine_dir(root: Location, run_id: str) -> str:
    """``<root>/retentiond-quarantine/<run_id>`` (for messages; opened by descriptor, or as a
    key prefix)."""
    problem = run_id_problem(run_id)
    if problem is not None:
        raise StorageError(f"no quarantine for {problem}")
    return location_of(root, layout.quarantine(run_id))


def _unsafe(path: str, exc: UnsafeEntry) -> StorageError:
    return StorageError(f"{path}: {exc}; {NO_LINKS}")


# -- the storage, opened with the messages of a run that changes it ------------------------------


def open_storage(root: Location, tree: bool = True) -> Storage:
    """The storage below ``root`` (trusted), ``docker/registry/v2`` opened when ``tree`` (else
    only the quarantine is used); a StorageError says what cannot be opened and what to do.
    A bucket: the S3 backend, the bucket checked reachable."""
    if isinstance(root, S3Settings):
        from retentiond.storage.s3 import open_s3_storage  # boto3 only when S3 is used

        return open_s3_storage(root)
    try:
        root_fd = open_root(str(root))
    except OSError as exc:
        raise StorageError(
            f"cannot open the storage root {root}: {exc.strerror}; check registry.root"
        ) from exc
    where = f"{root}/{V2}"
    try:
        return FilesystemStorage(root, root_fd, open_tree=tree)
    except UnsafeEntry as exc:
        raise _unsafe(where, exc) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot open {where}: {exc.strerror}; is registry.root the registry's storage root?"
        ) from exc


def _made_dir(storage: Storage, path: str, where: str, create: bool) -> bool:
    """Whether retentiond's own quarantine directory ``path`` (``""`` or a run id) is there,
    made first when ``create``. A link or a file there is an error: never followed."""
    try:
        return storage.quarantine_dir(path, create)
    except FileNotFoundError:
        raise StorageError(f"cannot create {where}: it vanished as it was made") from None
    except UnsafeEntry as exc:
        raise StorageError(
            f"{where} is not a directory made by retentiond ({exc}); it is never followed nor "
            "deleted through: move it away (and put back by hand whatever it points to that a "
            "run moved), then run again"
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot {'create' if create else 'open'} {where}: {exc.strerror}; retentiond "
            "needs write access to the registry's storage root"
        ) from exc


def _open_quarantine(storage: Storage, root: Location, run_id: str, create: bool) -> str | None:
    """The run's quarantine opened in ``storage`` (made when ``create``): its path, for
    messages; None when it (or the quarantine) does not exist."""
    path = quarantine_dir(root, run_id)
    if not _made_dir(storage, "", location_of(root, QUARANTINE), create):
        return None
    if not _made_dir(storage, run_id, path, create):
        return None
    return path


def _held(storage: Storage, held: str, qpath: str = "") -> Entry | None:
    """The quarantine's ``held``, None when it is not there; ``qpath``: the run's quarantine,
    for messages."""
    try:
        return storage.held_stat(held)
    except FileNotFoundError:
        return None
    except UnsafeEntry as exc:
        raise _unsafe_held(exc, qpath) from exc


def _unsafe_held(exc: UnsafeEntry, qpath: str) -> StorageError:
    """Something unsafe inside a run's quarantine (``where``: relative to the quarantine,
    ``<run_id>/...``): named below the run's quarantine ``qpath``."""
    inside = (exc.where or "").partition("/")[2]
    return StorageError(
        f"{qpath}/{inside}: {exc}; retentiond never follows it nor moves anything through it: "
        "move it away, then run again"
    )


def _parent_is_dir(storage: Storage, path: str) -> bool:
    """Whether the parent directory ``path`` is there (False: missing), reached without a
    link on the way (else a StorageError naming the component)."""
    try:
        return storage.is_dir(path)
    except UnsafeEntry as exc:
        raise _unsafe(storage.location(exc.where or path), exc) from exc


def _make_parent(storage: Storage, path: str) -> None:
    """The parent directory ``path``, made where missing, one component at a time."""
    try:
        storage.make_dirs(path)
    except FileNotFoundError as exc:
        raise StorageError(f"{storage.location(exc.filename)} vanished as it was made") from None
    except UnsafeEntry as exc:
        raise _unsafe(storage.location(exc.where or path), exc) from exc


def _directory_or_none(storage: Storage, path: str) -> bool:
    """True when ``path`` is a real directory, False when it does not exist; anything else
    (a link, a file) is an error."""
    try:
        entry = storage.stat(path)
    except FileNotFoundError:
        return False
    if entry.kind is not Kind.DIR:
        raise StorageError(
            f"{storage.location(path)} is {entry.detail}, not a directory; {NO_LINKS}"
        )
    return True


def _parent(live: str) -> str:
    return live.rpartition("/")[0]


#: from this many removals in one directory, it is listed once instead of a ``stat`` each
_LIST_FROM = 8


# -- the moves -----------------------------------------------------------------------------------


def check_writable(root: Location) -> None:
    """The registry tree and the quarantine are writable and on one filesystem; the quarantine
    is made here (a real directory: a link there is an error)."""
    with open_storage(root) as storage:
        qpath = location_of(root, QUARANTINE)
        _made_dir(storage, "", qpath, create=True)
        try:
            storage.check_quarantine_writable()
        except OSError as exc:
            raise StorageError(
                f"cannot write {qpath}: {exc.strerror}; retentiond needs write access to "
                "the registry's storage root to delete anything"
            ) from exc
        if not storage.same_store():
            raise StorageError(
                f"{qpath} and {location_of(root, V2)} are on different filesystems; moves would "
                "not be atomic"
            )
        repositories = storage.location(layout.REPOSITORIES)
        if not _parent_is_dir(storage, layout.REPOSITORIES):
            raise StorageError(f"{repositories} does not exist; nothing to delete")
        if not storage.can_change(layout.REPOSITORIES):
            raise StorageError(f"{repositories} is not writable by this user")


def _check_sources(storage: Storage, removals: list[Removal]) -> bytearray:
    """Before the first move: every removal's parent is reached without a link, and the
    directory itself is a real directory or already gone. Returns a 1 for each removal whose
    directory is there (to move), a 0 for one already gone.

    Each parent is checked once; the removals of a parent that has many of them are looked
    up in one listing of it instead of a ``stat`` each."""
    present = bytearray(len(removals))
    by_parent: dict[str, list[int]] = {}
    for at, removal in enumerate(removals):
        by_parent.setdefault(_parent(removal.live), []).append(at)
    try:
        for parent, positions in by_parent.items():
            if not _parent_is_dir(storage, parent):
                continue
            if len(positions) >= _LIST_FROM:
                listed = {e.name: e for e in storage.list(parent)}
                for at in positions:
                    present[at] = _listed_directory(storage, removals[at].live, listed)
            else:
                for at in positions:
                    present[at] = _directory_or_none(storage, removals[at].live)
    except StorageError as exc:
        raise StorageError(f"{exc}; nothing was moved") from exc
    except UnsafeEntry as exc:  # the parent was swapped for a link since it was checked
        raise StorageError(
            f"{_unsafe(storage.location(exc.where or ''), exc)}; nothing was moved"
        ) from exc
    return present


def _listed_directory(storage: Storage, live: str, listed: dict[str, Entry]) -> bool:
    """:func:`_directory_or_none` from the parent's listing (a ``stat`` only for an entry
    that is not a directory, to say what it is)."""
    entry = listed.get(live.rpartition("/")[2])
    if entry is None:
        return False
    return entry.kind is Kind.DIR or _directory_or_none(storage, live)


def _hold(storage: Storage, removal: Removal, held: str, qpath: str) -> bool:
    """Move one removal into the quarantine; False when its directory (or its parent) is gone
    since it was checked."""
    try:
        storage.hold(removal.live, held)
    except FileNotFoundError:
        return False
    except UnsafeEntry as exc:
        run = held.partition("/")[0]
        if exc.where is not None and exc.where.startswith(f"{run}/"):  # in the quarantine
            raise _unsafe_held(exc, qpath) from exc
        raise _unsafe(storage.location(exc.where or removal.live), exc) from exc
    except OSError as exc:
        src, dst = storage.location(removal.live), f"{qpath}/{removal.held}"
        if exc.errno == errno.EXDEV:
            raise StorageError(
                f"cannot move {src} to {dst}: not the same filesystem; the quarantine must be on "
                "the registry's storage filesystem"
            ) from exc
        raise StorageError(f"cannot move {src} to {dst}: {exc.strerror}") from exc
    return True


def move_out(
    root: Location,
    run_id: str,
    removals: Iterable[Removal],
    done: Callable[[Removal], None],
    *,
    resumed: bool | None = None,
    prechecked: bool = False,
) -> int:
    """Move each removal into the quarantine; ``done`` is called after each move.

    A directory that is already gone (moved by an interrupted earlier attempt) is skipped, and
    so is one already held under its name when the run's quarantine existed before this call
    (an attempt resumed; ``resumed`` says so when the caller knows better, e.g. moving a long
    list in batches). Returns how many were moved now. The caller has saved the list in
    ``state_dir`` first.

    Every move is one rename of a whole directory, from its parent opened without following a
    link (a link in the directory's place is moved as it is, never followed): a process killed
    between two moves leaves each directory either in the tree or held, and :func:`put_back`
    restores the held ones.

    ``prechecked``: the removals are a list that
    :func:`~retentiond.run_files.removal_batches` checked as it read them (each one's shape,
    its index its position in the run's list): not checked twice in the window.
    """
    if not (prechecked and isinstance(removals, list)):
        removals = checked(removals, f"the removals of run {run_id}")
    with open_storage(root) as storage:
        present = _check_sources(storage, removals)
        if resumed is None:
            resumed = _open_quarantine(storage, root, run_id, create=False) is not None
        qpath = _open_quarantine(storage, root, run_id, create=True)
        assert qpath is not None
        moved = 0
        for removal, there in zip(removals, present, strict=True):
            if not there:
                continue
            held = layout.held(run_id, removal.index)
            if resumed and _held(storage, held, qpath) is not None:
                if storage.moves_by_copy():  # what is left of it, if anything: deleted
                    _finish_hold(storage, removal, held, qpath)
                continue
            if _hold(storage, removal, held, qpath):
                moved += 1
                done(removal)
    return moved


def _finish_hold(storage: Storage, removal: Removal, held: str, qpath: str) -> None:
    """A move by copy interrupted after its copy was whole: delete what is left of its source
    (never its links first: those went first). Something pushed there since stays."""
    try:
        _hold(storage, removal, held, qpath)
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileExistsError):
            raise


@dataclass
class PutBack:
    """What :func:`put_back` did: ``restored`` directories moved back; ``conflicts`` the ones
    left in quarantine, each with why."""

    restored: int = 0
    conflicts: list[str] = field(default_factory=list)


def _check_destinations(storage: Storage, removals: list[Removal]) -> None:
    """Before the first move back: the parts of every destination's parent that exist are
    reached without a link."""
    try:
        for removal in removals:
            _parent_is_dir(storage, _parent(removal.live))
    except StorageError as exc:
        raise StorageError(f"{exc}; nothing was put back") from exc


def _put_one(storage: Storage, run_id: str, removal: Removal, qpath: str, out: PutBack) -> None:
    held = layout.held(run_id, removal.index)
    src = f"{qpath}/{removal.held}"
    entry = _held(storage, held, qpath)
    if entry is None:
        return
    if entry.kind is not Kind.DIR:
        out.conflicts.append(f"{src} is {entry.detail}, not a directory; left there")
        return
    _make_parent(storage, _parent(removal.live))
    conflict = f"{removal.live} exists again; kept it, the old one is in {src}"
    if not storage.moves_by_copy():  # a copy interrupted half-way back: restore finishes it
        try:
            storage.stat(removal.live)
        except FileNotFoundError:
            pass
        else:
            out.conflicts.append(conflict)
            return
    try:
        storage.restore(held, removal.live)
    except FileExistsError:  # pushed again just now
        out.conflicts.append(conflict)
        return
    except OSError as exc:
        raise StorageError(f"cannot move {src} back to {removal.live}: {exc.strerror}") from exc
    out.restored += 1


def put_back(root: Location, run_id: str, removals: Iterable[Removal]) -> PutBack:
    """Move quarantined directories back, last removed first. A path that exists again (pushed
    since) keeps the new content and the old one stays held (a conflict). Without conflicts,
    the run's quarantine is then removed."""
    removals = sorted(
        checked(removals, f"the removals of run {run_id}"), key=lambda r: r.index, reverse=True
    )
    out = PutBack()
    with open_storage(root) as storage:
        qpath = _open_quarantine(storage, root, run_id, create=False)
        if qpath is None:
            return out
        held = [
            r for r in removals if _held(storage, layout.held(run_id, r.index), qpath) is not None
        ]
        _check_destinations(storage, held)
        for removal in held:
            _put_one(storage, run_id, removal, qpath, out)
        if not out.conflicts:
            _remove_run_dir(storage, run_id, qpath)
    return out


def _remove_run_dir(storage: Storage, run_id: str, path: str) -> None:
    entry = _held(storage, run_id)
    if entry is None:
        return
    if entry.kind is not Kind.DIR:
        raise StorageError(
            f"{path} is {entry.detail}, not a directory made by retentiond; it is not "
            "followed nor deleted through: move it away by hand"
        )
    try:
        storage.remove_held(run_id)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def run_removals(
    state_dir: Path, root: Location, run_id: str, legacy: Any = None
) -> list[Removal] | None:
    """What run ``run_id`` moved into its quarantine, read from ``state_dir`` only and checked
    whole; ``legacy`` is the ``removals`` of a journal written by an earlier version (also in
    ``state_dir``). None when there is no list and no quarantine: nothing was moved.

    A quarantine without a list in ``state_dir`` (a run of an earlier version, which kept the
    list only in the quarantine, where the registry can write) is an error: it is not trusted.
    """
    raw = load_removals(state_dir, run_id)
    source = str(removals_path(state_dir, run_id))
    if raw is None and legacy is not None:
        raw, source = legacy, f"the removals in the journal of run {run_id}"
    if raw is not None:
        return parse_removals(raw, source)
    if not quarantine_exists(root, run_id):
        return None
    qdir = quarantine_dir(root, run_id)
    raise StorageError(
        f"run {run_id} has a quarantine, {qdir}, but no list of its removals in {source} (a run "
        f"of an earlier retentiond kept it only in {qdir}/{LEGACY_LISTING}, where whoever can "
        "write the registry's storage can change it, so it is not trusted); nothing was moved. "
        f"Put its numbered directories back by hand, each to {location_of(root, V2)}/<its "
        f"entry's live path> in {LEGACY_LISTING} after checking that path is below "
        f"repositories/, then delete {qdir}"
    )


def quarantine_exists(root: Location, run_id: str) -> bool:
    """Whether ``<root>/retentiond-quarantine/<run_id>`` is there (a real directory)."""
    with open_storage(root, tree=False) as storage:
        return _open_quarantine(storage, root, run_id, create=False) is not None


def purge(root: Location, run_id: str) -> None:
    """Delete a run's quarantine for good (never through a link)."""
    path = quarantine_dir(root, run_id)
    with open_storage(root, tree=False) as storage:
        if _made_dir(storage, "", location_of(root, QUARANTINE), create=False):
            _remove_run_dir(storage, run_id, path)
