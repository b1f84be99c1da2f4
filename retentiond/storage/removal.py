"""Change the tree safely: move what a plan removes into a quarantine, put it back, purge it.

Every removal is one ``rename(2)`` of a whole directory (a tag, a revision link, a repository)
out of ``docker/registry/v2`` into ``<root>/retentiond-quarantine/<run_id>/`` on the same
filesystem, so a crash never leaves half a directory and ``undo`` can put everything back
until the quarantine is purged after the GC.

Nothing under the root is trusted (the registry, that is anyone who can push, writes it; the
quarantine is inside it):

- what to move comes from the plan or from ``state_dir`` (:mod:`retentiond.state`), never from
  the quarantine, and every :class:`Removal` is checked before anything moves: a known kind,
  a ``live`` path of the registry layout's shape for that kind (:func:`live_path`), a
  non-negative index. A list with one bad entry is refused whole.
- every directory is opened one component at a time from the root's descriptor, following no
  symbolic link (:mod:`retentiond.storage.safe_fs`), and renamed relative to the descriptors of
  its parent and of the quarantine. A link found on the way is a :class:`StorageError` naming
  the path; the parents of all removals are checked before the first move.
- ``retentiond-quarantine`` and each run's directory in it are made by retentiond and must be
  real directories; a symbolic link there is an error, never followed, never deleted through.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retentiond.core.plan_types import Plan
from retentiond.errors import StorageError
from retentiond.state import load_removals, removals_path, run_id_problem
from retentiond.storage.safe_fs import UnsafeEntry, kind_of, open_dir, open_root

QUARANTINE = "retentiond-quarantine"
#: where retentiond before 0.x listed a run's removals, inside its quarantine: never read
LISTING = "removals.json"
V2 = "docker/registry/v2"

KINDS = ("tag", "revision", "repository", "repository-part")
PARTS = ("_manifests", "_layers", "_uploads")
FIELDS = frozenset(("index", "kind", "repository", "name", "live"))
DIGEST = re.compile(r"sha256:([0-9a-f]{64})")

#: what to tell the operator when a link or a special file stands in a removal's way
NO_LINKS = (
    "retentiond changes nothing through a symbolic link or a special file (the registry makes "
    "none): remove it, or repair that repository by hand"
)


@dataclass(frozen=True, slots=True)
class Removal:
    """One directory to move: ``live`` is relative to ``docker/registry/v2``."""

    index: int
    kind: str  # tag | revision | repository | repository-part
    repository: str
    name: str  # the tag, the digest, or the part (_layers, _manifests, _uploads)
    live: str

    @property
    def held(self) -> str:
        return f"{self.index:07d}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Removal:
        """A removal read back from JSON, checked (``ValueError`` says what is wrong)."""
        if not isinstance(data, dict):
            raise ValueError(f"is {type(data).__name__}, not an object")
        if set(data) != FIELDS:
            raise ValueError(f"has the fields {sorted(data)}, not {sorted(FIELDS)}")
        removal = cls(**data)
        problem = removal_problem(removal)
        if problem is not None:
            raise ValueError(problem)
        return removal


# -- the shape of a removal ----------------------------------------------------------------------


def live_path(kind: str, repository: str, name: str) -> str:
    """Where a removal lives in ``docker/registry/v2``: the registry layout's path for it."""
    base = f"repositories/{repository}"
    if kind == "tag":
        return f"{base}/_manifests/tags/{name}"
    if kind == "revision":
        return f"{base}/_manifests/revisions/sha256/{name.partition(':')[2]}"
    if kind == "repository-part":
        return f"{base}/{name}"
    return base


def _plain(part: str) -> bool:
    return part not in ("", ".", "..") and "/" not in part and "\0" not in part


def _repository_problem(repository: str) -> str | None:
    for part in repository.split("/"):
        if not _plain(part) or part.startswith("_"):
            return f"repository {repository[:200]!r} has the component {part[:60]!r}"
    return None


def _name_problem(kind: str, name: str) -> str | None:
    if kind == "tag" and not _plain(name):
        return f"tag {name[:200]!r} is not one path component"
    if kind == "revision" and DIGEST.fullmatch(name) is None:
        return f"digest {name[:200]!r} is not sha256:<64 hex>"
    if kind == "repository" and name != "":
        return f"a repository removal has the name {name[:200]!r}, not ''"
    if kind == "repository-part" and name not in PARTS:
        return f"part {name[:200]!r} is not one of {', '.join(PARTS)}"
    return None


def removal_problem(removal: Removal) -> str | None:
    """What is wrong with a removal, or None: it then names one directory of the registry
    layout, inside ``repositories/``, of the shape its kind has."""
    r = removal
    if not (isinstance(r.index, int) and not isinstance(r.index, bool) and r.index >= 0):
        return f"index {r.index!r} is not a non-negative integer"
    if r.kind not in KINDS:
        return f"kind {str(r.kind)[:60]!r} is not one of {', '.join(KINDS)}"
    for what, value in (("repository", r.repository), ("name", r.name), ("live", r.live)):
        if not isinstance(value, str):
            return f"{what} {value!r:.60} is not a string"
    problem = _repository_problem(r.repository) or _name_problem(r.kind, r.name)
    if problem is not None:
        return problem
    expected = live_path(r.kind, r.repository, r.name)
    if r.live != expected:
        return f"live path {r.live[:200]!r} is not {expected!r}, the {r.kind}'s place"
    return None


def checked(removals: Iterable[Removal], source: str) -> list[Removal]:
    """The removals, all checked; one bad entry refuses the whole list, before any move."""
    out = list(removals)
    seen: set[int] = set()
    for position, removal in enumerate(out):
        problem = removal_problem(removal)
        if problem is None and removal.index in seen:
            problem = f"index {removal.index} appears twice"
        if problem is not None:
            raise StorageError(
                f"{source}: entry {position} {problem}; the list is refused whole and nothing "
                "was moved"
            )
        seen.add(removal.index)
    return out


def parse_removals(data: Any, source: str) -> list[Removal]:
    """A list of removals read back from JSON (``source`` names the file), checked whole."""
    if not isinstance(data, list):
        raise StorageError(
            f"{source} is {type(data).__name__}, not a list of removals; nothing was moved"
        )
    out = []
    for position, item in enumerate(data):
        try:
            out.append(Removal.from_json(item))
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"{source}: entry {position} {exc}; the list is refused whole and nothing was moved"
            ) from exc
    return checked(out, source)


def removals_for(plan: Plan, nested: Iterable[str] = ()) -> list[Removal]:
    """The directories a plan removes, in a safe order: tags, then revisions, then repositories.

    A repository that has other repositories nested below it loses only its own ``_layers``,
    ``_manifests`` and ``_uploads``.
    """
    has_nested = set(nested)
    out: list[Removal] = []

    def add(kind: str, repository: str, name: str) -> None:
        out.append(Removal(len(out), kind, repository, name, live_path(kind, repository, name)))

    for t in plan.tags_deleted:
        add("tag", t.repository, t.tag)
    for m in plan.manifests_unlinked:
        add("revision", m.repository, m.digest)
    for name in plan.repositories_removed:
        if name in has_nested:
            for part in PARTS:
                add("repository-part", name, part)
        else:
            add("repository", name, "")
    return out


# -- directories opened without following links ------------------------------------------------


def quarantine_dir(root: Path, run_id: str) -> Path:
    """``<root>/retentiond-quarantine/<run_id>`` (for messages; opened by descriptor)."""
    problem = run_id_problem(run_id)
    if problem is not None:
        raise StorageError(f"no quarantine for {problem}")
    return Path(root) / QUARANTINE / run_id


def _unsafe(path: str, exc: UnsafeEntry) -> StorageError:
    return StorageError(f"{path}: {exc}; {NO_LINKS}")


@contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def opened_v2(root: Path) -> Iterator[int]:
    """``<root>/docker/registry/v2``, opened from the (trusted) root without following a link."""
    with _opened_root(root) as root_fd, _opened_v2(root_fd, root) as v2_fd:
        yield v2_fd


@contextmanager
def _opened_root(root: Path) -> Iterator[int]:
    try:
        fd = open_root(str(root))
    except OSError as exc:
        raise StorageError(
            f"cannot open the storage root {root}: {exc.strerror}; check registry.root"
        ) from exc
    with _fd(fd):
        yield fd


@contextmanager
def _opened_v2(root_fd: int, root: Path) -> Iterator[int]:
    where = f"{root}/{V2}"
    try:
        fd = open_dir(V2, root_fd)
    except UnsafeEntry as exc:
        raise _unsafe(where, exc) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot open {where}: {exc.strerror}; is registry.root the registry's storage root?"
        ) from exc
    with _fd(fd):
        yield fd


def _open_made_dir(name: str, dir_fd: int, where: str, create: bool) -> int | None:
    """Open retentiond's own directory ``name`` below ``dir_fd`` (made first when ``create``),
    or None when it does not exist. A link or a file there is an error: never followed."""
    try:
        if create:
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=dir_fd)
        return open_dir(name, dir_fd)
    except FileNotFoundError:
        if create:
            raise StorageError(f"cannot create {where}: it vanished as it was made") from None
        return None
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


@dataclass
class _Quarantine:
    """The open quarantine of one run: ``top`` is ``retentiond-quarantine``, ``run`` is the
    run's directory in it (None when it does not exist)."""

    path: Path
    top: int
    run: int | None


@contextmanager
def _opened_quarantine(
    root: Path, root_fd: int, run_id: str, create: bool
) -> Iterator[_Quarantine | None]:
    path = quarantine_dir(root, run_id)
    top = _open_made_dir(QUARANTINE, root_fd, str(path.parent), create)
    if top is None:
        yield None
        return
    with _fd(top):
        run = _open_made_dir(run_id, top, str(path), create)
        try:
            yield _Quarantine(path, top, run)
        finally:
            if run is not None:
                os.close(run)


def _parent_of(live: str) -> tuple[str, str]:
    parent, _, base = live.rpartition("/")
    return parent, base


def _open_parent(v2_fd: int, v2: str, parent: str, create: bool) -> int | None:
    """Open ``parent`` below ``v2`` following no link in any component; missing components
    are made when ``create`` (one at a time), else None is returned."""
    if not create:
        try:
            return open_dir(parent, v2_fd)
        except FileNotFoundError:
            return None
        except UnsafeEntry as exc:
            raise _unsafe(f"{v2}/{exc.where or parent}", exc) from exc
    fd = v2_fd
    done: list[str] = []
    try:
        for part in parent.split("/"):
            done.append(part)
            with suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
            try:
                new = open_dir(part, fd)
            except FileNotFoundError:  # removed again as it was made: no parent to use
                raise StorageError(f"{v2}/{'/'.join(done)} vanished as it was made") from None
            except UnsafeEntry as exc:
                raise _unsafe(f"{v2}/{'/'.join(done)}", exc) from exc
            if fd != v2_fd:
                os.close(fd)
            fd = new
    except BaseException:
        if fd != v2_fd:
            os.close(fd)
        raise
    return fd


class _Parents:
    """The parent directory of the removal at hand, kept open while the next removals share it
    (tags of one repository do): one descriptor at a time."""

    def __init__(self, v2_fd: int, v2: str, create: bool) -> None:
        self.v2_fd, self.v2, self.create = v2_fd, v2, create
        self.path: str | None = None
        self.fd: int | None = None

    def get(self, parent: str) -> int | None:
        if parent != self.path:
            self.close()
            self.fd = _open_parent(self.v2_fd, self.v2, parent, self.create)
            self.path = parent
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.path = self.fd = None


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _directory_or_none(name: str, dir_fd: int, where: str) -> bool:
    """True when ``name`` is a real directory, False when it does not exist; anything else
    (a link, a file) is an error."""
    st = _lstat(name, dir_fd)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{where} is {kind_of(st.st_mode)}, not a directory; {NO_LINKS}")
    return True


def _rename(name: str, src_fd: int, new: str, dst_fd: int, src: str, dst: str) -> None:
    try:
        os.rename(name, new, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise StorageError(
                f"cannot move {src} to {dst}: not the same filesystem; the quarantine must be on "
                "the registry's storage filesystem"
            ) from exc
        raise StorageError(f"cannot move {src} to {dst}: {exc.strerror}") from exc


# -- the moves -----------------------------------------------------------------------------------


def check_writable(root: Path) -> None:
    """The registry tree and the quarantine are writable and on one filesystem; the quarantine
    is made here (a real directory: a link there is an error)."""
    with _opened_root(root) as root_fd, _opened_v2(root_fd, root) as v2_fd:
        qpath = f"{root}/{QUARANTINE}"
        qfd = _open_made_dir(QUARANTINE, root_fd, qpath, create=True)
        assert qfd is not None
        with _fd(qfd):
            try:
                probe = os.open(
                    ".write-probe", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=qfd
                )
                os.close(probe)
                os.unlink(".write-probe", dir_fd=qfd)
            except OSError as exc:
                raise StorageError(
                    f"cannot write {qpath}: {exc.strerror}; retentiond needs write access to "
                    "the registry's storage root to delete anything"
                ) from exc
            same = os.fstat(qfd).st_dev == os.fstat(v2_fd).st_dev
        if not same:
            raise StorageError(
                f"{qpath} and {root}/{V2} are on different filesystems; moves would not be atomic"
            )
        repositories = _open_parent(v2_fd, f"{root}/{V2}", "repositories", create=False)
        if repositories is None:
            raise StorageError(f"{root}/{V2}/repositories does not exist; nothing to delete")
        os.close(repositories)  # a real directory: its mode can be checked by name
        if not os.access("repositories", os.W_OK | os.X_OK, dir_fd=v2_fd):
            raise StorageError(f"{root}/{V2}/repositories is not writable by this user")


def _check_sources(v2_fd: int, v2: str, removals: list[Removal]) -> None:
    """Before the first move: every removal's parent is reached without a link, and the
    directory itself is a real directory or already gone."""
    parents = _Parents(v2_fd, v2, create=False)
    try:
        for removal in removals:
            parent, base = _parent_of(removal.live)
            fd = parents.get(parent)
            if fd is not None:
                _directory_or_none(base, fd, f"{v2}/{removal.live}")
    except StorageError as exc:
        raise StorageError(f"{exc}; nothing was moved") from exc
    finally:
        parents.close()


def move_out(
    root: Path, run_id: str, removals: Iterable[Removal], done: Callable[[Removal], None]
) -> int:
    """Move each removal into the quarantine; ``done`` is called after each move.

    A directory that is already gone (moved by an interrupted earlier attempt) is skipped.
    Returns how many were moved now. The caller has saved the list in ``state_dir`` first.
    """
    removals = checked(removals, f"the removals of run {run_id}")
    v2 = f"{root}/{V2}"
    with _opened_root(root) as root_fd, _opened_v2(root_fd, root) as v2_fd:
        _check_sources(v2_fd, v2, removals)
        with _opened_quarantine(root, root_fd, run_id, create=True) as quarantine:
            assert quarantine is not None and quarantine.run is not None
            run_fd = quarantine.run
            parents = _Parents(v2_fd, v2, create=False)
            moved = 0
            try:
                for removal in removals:
                    parent, base = _parent_of(removal.live)
                    if _lstat(removal.held, run_fd) is not None:
                        continue
                    fd = parents.get(parent)
                    if fd is None or not _directory_or_none(base, fd, f"{v2}/{removal.live}"):
                        continue
                    held = f"{quarantine.path}/{removal.held}"
                    _rename(base, fd, removal.held, run_fd, f"{v2}/{removal.live}", held)
                    moved += 1
                    done(removal)
            finally:
                parents.close()
    return moved


@dataclass
class PutBack:
    """What :func:`put_back` did: ``restored`` directories moved back; ``conflicts`` the ones
    left in quarantine, each with why."""

    restored: int = 0
    conflicts: list[str] = field(default_factory=list)


def _check_destinations(v2_fd: int, v2: str, removals: list[Removal]) -> None:
    """Before the first move back: the parts of every destination's parent that exist are
    reached without a link."""
    parents = _Parents(v2_fd, v2, create=False)
    try:
        for removal in removals:
            parents.get(_parent_of(removal.live)[0])
    except StorageError as exc:
        raise StorageError(f"{exc}; nothing was put back") from exc
    finally:
        parents.close()


def _put_one(removal: Removal, run_fd: int, parents: _Parents, qpath: Path, out: PutBack) -> None:
    src = f"{qpath}/{removal.held}"
    st = _lstat(removal.held, run_fd)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        out.conflicts.append(f"{src} is {kind_of(st.st_mode)}, not a directory; left there")
        return
    parent, base = _parent_of(removal.live)
    fd = parents.get(parent)
    assert fd is not None  # made when missing
    if _lstat(base, fd) is not None:
        out.conflicts.append(f"{removal.live} exists again; kept it, the old one is in {src}")
        return
    try:
        os.rename(removal.held, base, src_dir_fd=run_fd, dst_dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # pushed again just now
            out.conflicts.append(f"{removal.live} exists again; kept it, the old one is in {src}")
            return
        raise StorageError(f"cannot move {src} back to {removal.live}: {exc.strerror}") from exc
    out.restored += 1


def put_back(root: Path, run_id: str, removals: Iterable[Removal]) -> PutBack:
    """Move quarantined directories back, last removed first. A path that exists again (pushed
    since) keeps the new content and the old one stays held (a conflict). Without conflicts,
    the run's quarantine is then removed."""
    removals = sorted(
        checked(removals, f"the removals of run {run_id}"), key=lambda r: r.index, reverse=True
    )
    v2 = f"{root}/{V2}"
    out = PutBack()
    with (
        _opened_root(root) as root_fd,
        _opened_v2(root_fd, root) as v2_fd,
        _opened_quarantine(root, root_fd, run_id, create=False) as quarantine,
    ):
        if quarantine is None or quarantine.run is None:
            return out
        run_fd = quarantine.run
        held = [r for r in removals if _lstat(r.held, run_fd) is not None]
        _check_destinations(v2_fd, v2, held)
        parents = _Parents(v2_fd, v2, create=True)
        try:
            for removal in held:
                _put_one(removal, run_fd, parents, quarantine.path, out)
        finally:
            parents.close()
        if not out.conflicts:
            _remove_run_dir(quarantine.top, run_id, quarantine.path)
    return out


def _remove_run_dir(top_fd: int, run_id: str, path: Path) -> None:
    st = _lstat(run_id, top_fd)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(
            f"{path} is {kind_of(st.st_mode)}, not a directory made by retentiond; it is not "
            "followed nor deleted through: move it away by hand"
        )
    try:
        shutil.rmtree(run_id, dir_fd=top_fd)  # descriptor-based: follows no link inside
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def run_removals(
    state_dir: Path, root: Path, run_id: str, legacy: Any = None
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
        f"of an earlier retentiond kept it only in {qdir}/{LISTING}, where whoever can write "
        "the registry's storage can change it, so it is not trusted); nothing was moved. Put "
        f"its numbered directories back by hand, each to {root}/{V2}/<its entry's live path> "
        f"in {LISTING} after checking that path is below repositories/, then delete {qdir}"
    )


def quarantine_exists(root: Path, run_id: str) -> bool:
    """Whether ``<root>/retentiond-quarantine/<run_id>`` is there (a real directory)."""
    with (
        _opened_root(root) as root_fd,
        _opened_quarantine(root, root_fd, run_id, create=False) as quarantine,
    ):
        return quarantine is not None and quarantine.run is not None


def purge(root: Path, run_id: str) -> None:
    """Delete a run's quarantine for good (never through a link)."""
    path = quarantine_dir(root, run_id)
    with _opened_root(root) as root_fd:
        top = _open_made_dir(QUARANTINE, root_fd, str(path.parent), create=False)
        if top is None:
            return
        with _fd(top):
            _remove_run_dir(top, run_id, path)
