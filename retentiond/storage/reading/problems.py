"""What the reader says about what it cannot trust: problems, their kinds and their wording.

Every phase reports through a :class:`ProblemLog`; the words for a symbolic link, a special
file or an unreadable directory are here once, so that the same entry reads the same wherever
it is met. Nothing here reads the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from retentiond.core.inventory import Problem, ProblemKind
from retentiond.storage.safe_fs import NotRegularFile, SymlinkFound, UnsafeEntry

#: what a symbolic link or a special file inside a repository or the blob store means
UNSAFE = ProblemKind.GC_ABORT
NOT_FOLLOWED = (
    "not followed: the registry never writes one, and its GC would follow it and decide from "
    "files outside the storage root; remove it"
)


@dataclass
class ProblemLog:
    """The problems one reader (a phase, a worker's task) found, in the order it found them."""

    problems: list[Problem] = field(default_factory=list)

    def problem(
        self, path: str | Path, message: str, kind: ProblemKind, repository: str | None = None
    ) -> None:
        self.problems.append(Problem(str(path), message, kind, repository))


def unsafe_message(exc: UnsafeEntry) -> str:
    """What an unsafe entry is and what to do, in a problem's message."""
    if isinstance(exc, SymlinkFound):
        return f"symbolic link, {NOT_FOLLOWED}"
    if isinstance(exc, NotRegularFile):
        return f"{exc}; the registry's GC would block or fail on it: remove it"
    return str(exc)


def cannot_read(path: str | Path, exc: OSError) -> str:
    """A StorageError's message for a part of the tree the whole run needs."""
    return (
        f"cannot read {path}: {exc.strerror or exc}; check that retentiond runs as a user that can "
        "read the registry's storage"
    )


def problem_order(problem: Problem) -> tuple[str, str, str, str]:
    """Problems in an order that does not depend on how directories list their entries (a
    copy of the tree lists them in another order): the plan, refusal reasons included, is
    the same for the same tree wherever it is."""
    return (problem.repository or "", problem.path, problem.kind.value, problem.message)
