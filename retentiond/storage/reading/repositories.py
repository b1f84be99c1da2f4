"""Phase 2: each repository's link files, as blob ids of the table phase 1 built.

Reads, per repository: every tag's ``current/link`` (digest and mtime: the push time), every
revision link, and, for ``verify`` only, the ``_layers`` links (:mod:`.links`); the mtimes of
``_layers/sha256`` and of ``_uploads`` and its entries (a push in progress), for the
repository's last activity. Never reads a tag's ``index/`` history (the plan does not need it).

Trusts nothing in the repository: it is read through a reader scoped to its directory
(:meth:`~retentiond.storage.port.StorageReader.below` of ``repositories``), every path below
through the reader of the directory above it, with no link followed. A symbolic link,
FIFO, socket or device anywhere inside it (its own directory, ``_manifests``, a tag's
directory or link, the revision links, ``_layers``, an upload) is an UNSAFE problem of the
repository (``GC_ABORT``): the registry never writes one, and its GC follows links where it
reads. A directory or file that cannot be read is an UNREADABLE problem of the repository (the
GC, run as the registry's user, may still read it). Whatever is met becomes a problem, never an
exception: one repository cannot end the read of the others.

Runs in the workers (:mod:`.pool`); each returns a :class:`RepoLinks` of arrays, and the
parent makes the :class:`~retentiond.core.inventory.Repository`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from retentiond.core.blob_table import NO_ID, BlobTable
from retentiond.core.repository import LinkColumns, Repository, RepositoryColumns, pack_links
from retentiond.core.values import Problem, ProblemKind
from retentiond.storage import layout
from retentiond.storage.reading.catalog import RepoDir
from retentiond.storage.reading.links import (
    RepoReading,
    Tag,
    read_layer_links,
    read_revisions,
    read_tags,
)
from retentiond.storage.reading.pool import shared_blobs
from retentiond.storage.reading.problems import NOT_FOLLOWED, UNSAFE, ProblemLog, unsafe_message
from retentiond.storage.reading.tree import Tree
from retentiond.storage.safe_fs import SymlinkFound, UnsafeEntry


@dataclass
class RepoLinks:
    """What a worker read of one repository (the parent makes a Repository of it)."""

    index: int
    columns: LinkColumns
    last_activity: float | None
    layers: list[str] | None
    problems: list[Problem]
    #: tags and revisions whose manifest has no blob (reported after all the others)
    missing_problems: list[Problem]


def read_repositories(
    tree: Tree, read_layers: bool, blobs: BlobTable | None, chunk: list[tuple[int, RepoDir]]
) -> list[RepoLinks]:
    """A worker's task: the repositories of ``chunk``, with their indexes in the walk."""
    table = shared_blobs(blobs)
    return [read_repository(tree, index, repo, read_layers, table) for index, repo in chunk]


def make_repository(repo: RepoDir, links: RepoLinks, blobs: BlobTable) -> Repository:
    """The parent's side: a repository of the inventory from what a worker read."""
    return Repository(
        name=repo.name,
        listed_by_gc=repo.has_layers,
        last_activity=_utc(links.last_activity) if links.last_activity is not None else None,
        layers=frozenset(links.layers) if links.layers is not None else None,
        has_nested=repo.has_nested,
        columns=RepositoryColumns(blobs, *links.columns),
    )


def read_repository(
    tree: Tree, index: int, repo: RepoDir, read_layers: bool, blobs: BlobTable
) -> RepoLinks:
    """One repository's links; anything that cannot be read or trusted, down to the
    repository's own directory, is a problem of the repository, never an exception."""
    assert tree.repos is not None, "repositories are found in the repositories directory"
    try:
        directory = tree.repos.below(repo.name)
    except (OSError, UnsafeEntry) as exc:
        return _unread_repository(index, repo, read_layers, exc)
    try:
        return _read_repository_at(RepoReading(repo, directory), index, read_layers, blobs)
    except (OSError, UnsafeEntry) as exc:  # what the steps above do not expect: still a problem
        return _unread_repository(index, repo, read_layers, exc)
    finally:
        directory.close()


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _unread_repository(
    index: int, repo: RepoDir, read_layers: bool, exc: OSError | UnsafeEntry
) -> RepoLinks:
    """A repository that could not be read: nothing in it, and the problem that says why."""
    reading = ProblemLog()
    if isinstance(exc, UnsafeEntry):
        reading.problem(repo.path, unsafe_message(exc), UNSAFE, repo.name)
    else:
        reading.problem(
            repo.path, f"cannot read: {exc.strerror}", ProblemKind.UNREADABLE, repo.name
        )
    return RepoLinks(
        index,
        LinkColumns.empty(),
        None,
        [] if read_layers else None,
        reading.problems,
        [],
    )


def _read_repository_at(
    reading: RepoReading, index: int, read_layers: bool, blobs: BlobTable
) -> RepoLinks:
    repo = reading.repo
    tags: list[Tag] = []
    revisions: dict[str, float] = {}
    if layout.MANIFESTS not in repo.links:
        tags = read_tags(reading)
        revisions = read_revisions(reading)
    layers: list[str] | None = None
    if read_layers:
        layers = [] if layout.LAYERS in repo.links else read_layer_links(reading)
    last_activity = _last_activity(reading, tags, revisions)
    if revisions and not repo.has_layers:
        reading.problem(
            repo.path,
            "repository has manifests but no _layers directory: registry 2.8's GC skips it and "
            "would delete the blobs of its images",
            ProblemKind.GC_HAZARD,
            repo.name,
        )
    tags.sort(key=lambda t: t[0])
    columns = pack_links(tags, revisions, blobs)
    return RepoLinks(
        index=index,
        columns=columns,
        last_activity=last_activity,
        layers=layers,
        problems=list(dict.fromkeys(reading.problems)),  # a link met twice is one problem
        missing_problems=_missing(repo, tags, revisions, columns) if columns.absent else [],
    )


def _last_activity(
    reading: RepoReading, tags: list[Tag], revisions: dict[str, float]
) -> float | None:
    """The latest sign of a push: a revision or tag link written, a layer linked, an upload."""
    links = reading.repo.links
    signs = [
        max(revisions.values(), default=None),
        max((t[2] for t in tags), default=None),
        None if layout.LAYERS in links else _layers_mtime(reading),
        *([] if layout.UPLOADS in links else _uploads_mtimes(reading)),
    ]
    present = [t for t in signs if t is not None]
    return max(present) if present else None


def _missing(
    repo: RepoDir, tags: list[Tag], revisions: dict[str, float], columns: LinkColumns
) -> list[Problem]:
    """A problem per tag and revision whose manifest has no blob."""
    problems = ProblemLog()
    for (tag, digest, _), tag_id in zip(tags, columns.tag_ids, strict=True):
        if tag_id == NO_ID:
            problems.problem(
                f"{repo.path}/{layout.in_repository_tag_link(tag)}",
                f"tag {tag!r} points to {digest}, whose blob is missing",
                ProblemKind.UNREADABLE,
                repo.name,
            )
    for digest, revision_id in zip(revisions, columns.revision_ids, strict=True):
        if revision_id == NO_ID:
            problems.problem(
                f"{repo.path}/{layout.REVISIONS}/{layout.hex_of(digest)}",
                f"revision {digest} has no blob",
                ProblemKind.UNREADABLE,
                repo.name,
            )
    return problems.problems


def _layers_mtime(reading: RepoReading) -> float | None:
    """The mtime of ``_layers/sha256`` (a layer pushed); a link there is a problem (the
    links inside it are read only by ``verify``: the registry's GC never reads them)."""
    path = layout.LAYER_LINKS
    entry = reading.attempt(path, reading.dir.stat)
    if entry is None:
        return None
    if entry.is_link:
        reading.unsafe(path, SymlinkFound(path, path))
        return None
    return entry.mtime


def _uploads_mtimes(reading: RepoReading) -> list[float | None]:
    """The mtimes of ``_uploads`` and of each upload in it (a push in progress)."""
    listed = reading.entries(layout.UPLOADS)
    if listed is None:
        return []
    uploads, entries = listed
    try:
        times: list[float | None] = [uploads.stat("").mtime]
        for entry in entries:
            if entry.is_link:
                reading.problem(
                    f"{reading.base}/{layout.UPLOADS}/{entry.name}",
                    f"symbolic link, {NOT_FOLLOWED}",
                    UNSAFE,
                    reading.repo.name,
                )
                continue
            try:
                times.append(uploads.stat(entry.name).mtime)
            except (OSError, UnsafeEntry):
                continue
        return times
    finally:
        uploads.close()
