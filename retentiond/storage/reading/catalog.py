"""Phase 2, first step: finding the repositories, as the registry's catalog walk does.

Every directory below ``repositories`` whose name does not start with ``_`` is walked,
recursively; one holding ``_layers`` or ``_manifests`` is a repository (it may hold others:
names nest). Runs in the parent, before phase 1, because how many repositories there are
decides how many workers read them.

Reads directory listings only, and trusts none of their entries as a path: each directory is
listed by its name through the ``repositories`` reader, with no link followed. A symbolic link
anywhere is an UNSAFE problem (the registry's catalog walk would follow it) of the repository it
is in (``_manifests`` and the like) or that it pretends to be; a directory that cannot be read
is an UNREADABLE problem of its name (``repositories`` itself: a StorageError); a repository
name the registry would refuse is a GC_ABORT problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from retentiond.core.inventory import ProblemKind
from retentiond.core.names import repository_name_problem
from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind
from retentiond.storage.reading.problems import (
    NOT_FOLLOWED,
    UNSAFE,
    ProblemLog,
    cannot_read,
    unsafe_message,
)
from retentiond.storage.reading.tree import Tree
from retentiond.storage.safe_fs import UnsafeEntry


@dataclass
class RepoDir:
    """A repository found by the walk, as the workers of phase 2 are told of it."""

    name: str
    path: str  # for messages; read by ``name`` through the repositories' reader
    has_layers: bool
    has_nested: bool
    #: its ``_layers``, ``_manifests`` or ``_uploads`` that are symbolic links (reported
    #: when found; not read)
    links: frozenset[str] = frozenset()


def find_repositories(reading: ProblemLog, tree: Tree) -> list[RepoDir]:
    """Every repository below ``repositories``, sorted by name."""
    if tree.repos is None:
        return []
    found: list[RepoDir] = []
    base = f"{tree.v2}/{layout.REPOSITORIES}"
    stack = [""]
    while stack:
        name = stack.pop()
        path = f"{base}/{name}" if name else base
        entries = _list_repository_dir(reading, tree, name, path)
        nested: list[str] = []
        parts = dict.fromkeys(layout.PARTS, False)  # which of them the directory holds
        links = set()
        for entry in entries:
            child = f"{name}/{entry.name}" if name else entry.name
            if entry.is_link:
                owner = name if name and entry.name.startswith("_") else child
                reading.problem(f"{base}/{child}", f"symbolic link, {NOT_FOLLOWED}", UNSAFE, owner)
                if entry.name in parts:  # the registry, following it, sees the directory
                    parts[entry.name] = True
                    links.add(entry.name)
                continue
            if entry.name in parts:
                parts[entry.name] = True
            elif not entry.name.startswith("_") and entry.kind is Kind.DIR:
                nested.append(child)
        if name and (parts[layout.LAYERS] or parts[layout.MANIFESTS]):
            found.append(RepoDir(name, path, parts[layout.LAYERS], bool(nested), frozenset(links)))
            _check_name(reading, name, path)
        stack.extend(nested)
    found.sort(key=lambda r: r.name)
    return found


def _check_name(reading: ProblemLog, name: str, path: str) -> None:
    message = repository_name_problem(name)
    if message is not None:
        reading.problem(
            path,
            f"repository name {name!r}: {message}; the registry's GC aborts on it",
            ProblemKind.GC_ABORT,
            name,
        )


def _list_repository_dir(reading: ProblemLog, tree: Tree, name: str, path: str) -> list[Entry]:
    """The entries of ``repositories/<name>``; a problem of ``name`` when it cannot be read
    (the ``repositories`` directory itself: a StorageError)."""
    assert tree.repos is not None, "called only when there is a repositories directory"
    try:
        return tree.repos.list(name)
    except FileNotFoundError:
        return []
    except UnsafeEntry as exc:  # swapped for a link since its parent was listed
        reading.problem(path, unsafe_message(exc), UNSAFE, name)
        return []
    except OSError as exc:
        if not name:
            raise StorageError(cannot_read(path, exc)) from exc
        reading.problem(
            path,
            f"cannot read: {exc.strerror}; nothing in it is decided",
            ProblemKind.UNREADABLE,
            name,
        )
        return []
