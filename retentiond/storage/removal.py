"""Change the tree safely: move what a plan removes into a quarantine, put it back, purge it.

Every removal is one ``rename(2)`` of a whole directory (a tag, a revision link, a repository)
out of ``docker/registry/v2`` into ``<root>/retentiond-quarantine/<run_id>/`` on the same
filesystem, so a crash never leaves half a directory and ``undo`` can put everything back
until the quarantine is purged after the GC.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retentiond.core.plan_types import Plan
from retentiond.errors import StorageError
from retentiond.state import write_atomic
from retentiond.storage.reader import storage_v2

QUARANTINE = "retentiond-quarantine"
#: inside each run's quarantine: what was moved from where, so ``undo`` needs nothing else
LISTING = "removals.json"


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
    def from_json(cls, data: dict[str, Any]) -> Removal:
        return cls(**data)


def quarantine_dir(root: Path, run_id: str) -> Path:
    return Path(root) / QUARANTINE / run_id


def removals_for(plan: Plan, nested: Iterable[str] = ()) -> list[Removal]:
    """The directories a plan removes, in a safe order: tags, then revisions, then repositories.

    A repository that has other repositories nested below it loses only its own ``_layers``,
    ``_manifests`` and ``_uploads``.
    """
    has_nested = set(nested)
    out: list[Removal] = []

    def add(kind: str, repository: str, name: str, live: str) -> None:
        out.append(Removal(len(out), kind, repository, name, live))

    for t in plan.tags_deleted:
        add("tag", t.repository, t.tag, f"repositories/{t.repository}/_manifests/tags/{t.tag}")
    for m in plan.manifests_unlinked:
        hexpart = m.digest.split(":", 1)[1]
        add(
            "revision",
            m.repository,
            m.digest,
            f"repositories/{m.repository}/_manifests/revisions/sha256/{hexpart}",
        )
    for name in plan.repositories_removed:
        if name in has_nested:
            for part in ("_manifests", "_layers", "_uploads"):
                add("repository-part", name, part, f"repositories/{name}/{part}")
        else:
            add("repository", name, "", f"repositories/{name}")
    return out


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise StorageError(
                f"cannot move {src} to {dst}: not the same filesystem; the quarantine must be on "
                "the registry's storage filesystem"
            ) from exc
        raise StorageError(f"cannot move {src} to {dst}: {exc.strerror}") from exc


def check_writable(root: Path) -> None:
    """The registry tree and the quarantine are writable and on one filesystem."""
    v2 = storage_v2(root)
    qdir = Path(root) / QUARANTINE
    try:
        qdir.mkdir(exist_ok=True)
        probe = qdir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
        same = os.stat(qdir).st_dev == os.stat(v2).st_dev
    except OSError as exc:
        raise StorageError(
            f"cannot write {qdir}: {exc.strerror}; retentiond needs write access to the "
            "registry's storage root to delete anything"
        ) from exc
    if not same:
        raise StorageError(
            f"{qdir} and {v2} are on different filesystems; moves would not be atomic"
        )
    if not os.access(v2 / "repositories", os.W_OK):
        raise StorageError(f"{v2}/repositories is not writable by this user")


def move_out(
    root: Path, run_id: str, removals: Iterable[Removal], done: Callable[[Removal], None]
) -> int:
    """Move each removal into the quarantine; ``done`` is called after each move.

    A directory that is already gone (moved by an interrupted earlier attempt) is skipped.
    Returns how many were moved now.
    """
    v2 = storage_v2(root)
    qdir = quarantine_dir(root, run_id)
    qdir.mkdir(parents=True, exist_ok=True)
    removals = list(removals)
    listing = qdir / LISTING
    if not listing.exists():
        write_atomic(listing, json.dumps([r.to_json() for r in removals]).encode())
    moved = 0
    for removal in removals:
        src, dst = v2 / removal.live, qdir / removal.held
        if dst.exists() or not src.exists():
            continue
        _rename(src, dst)
        moved += 1
        done(removal)
    return moved


def put_back(root: Path, run_id: str, removals: Iterable[Removal]) -> list[str]:
    """Move quarantined directories back, last removed first. Returns the conflicts: a path
    that exists again (pushed since) keeps the new content and the old one stays held."""
    v2 = storage_v2(root)
    qdir = quarantine_dir(root, run_id)
    conflicts: list[str] = []
    for removal in sorted(removals, key=lambda r: r.index, reverse=True):
        src, dst = qdir / removal.held, v2 / removal.live
        if not src.exists():
            continue
        if dst.exists():
            conflicts.append(f"{removal.live} exists again; kept it, the old one is in {src}")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        _rename(src, dst)
    if not conflicts:
        shutil.rmtree(qdir, ignore_errors=True)
    return conflicts


def held_removals(root: Path, run_id: str) -> list[Removal] | None:
    """What a run's quarantine holds, or None when it has no quarantine any more."""
    try:
        data = (quarantine_dir(root, run_id) / LISTING).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the quarantine of run {run_id}: {exc.strerror}") from exc
    return [Removal.from_json(r) for r in json.loads(data)]


def purge(root: Path, run_id: str) -> None:
    """Delete a run's quarantine for good."""
    qdir = quarantine_dir(root, run_id)
    try:
        shutil.rmtree(qdir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {qdir}: {exc.strerror}") from exc
