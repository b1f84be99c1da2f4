"""What a run removes: a list of :class:`Removal`, each one directory of the registry's layout.

The list is made from a plan (:func:`removals_for`), saved in ``state_dir`` before the first
move, and read back from there to recover or undo a run (:func:`parse_removals`). It is the
only source of what :mod:`retentiond.storage.removal` moves; ``state_dir`` is out of the
registry's reach, and the list is checked anyway, whole, before anything moves: a known kind,
a ``live`` path of the registry layout's shape for that kind (:func:`live_path`), a
non-negative index, no index twice. A list with one bad entry is refused whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import count
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from retentiond.core.plan_types import Plan
from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.layout import PARTS

KINDS = ("tag", "revision", "repository", "repository-part")
FIELDS = frozenset(("index", "kind", "repository", "name", "live"))
DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


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
        """Its name in the run's quarantine."""
        return layout.held_name(self.index)

    def to_json(self) -> dict[str, Any]:
        # (not dataclasses.asdict, which deep-copies: a run saves a million of these in its
        # window)
        return {
            "index": self.index,
            "kind": self.kind,
            "repository": self.repository,
            "name": self.name,
            "live": self.live,
        }

    def json_line(self) -> str:
        """:meth:`to_json` as one line of compact JSON, the same text ``json`` writes (made
        directly: a run writes a million of these in its window)."""
        return (
            f'{{"index":{int(self.index)},"kind":{_string(self.kind)},'
            f'"repository":{_string(self.repository)},"name":{_string(self.name)},'
            f'"live":{_string(self.live)}}}'
        )

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
    if kind == "tag":
        return layout.tag_dir(repository, name)
    if kind == "revision":
        return layout.revision_dir(repository, name)
    if kind == "repository-part":
        return layout.repository_part(repository, name)
    return layout.repository(repository)


def _plain(part: str) -> bool:
    return part not in ("", ".", "..") and "/" not in part and "\0" not in part


@lru_cache(maxsize=1024)  # a run removes many directories of each repository
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


def removals_for(plan: Plan, nested: Iterable[str] = ()) -> Iterator[Removal]:
    """The directories a plan removes, in a safe order: tags, then revisions, then repositories,
    made one at a time (a plan of a million tags removes a million directories).

    A repository that has other repositories nested below it loses only its own ``_layers``,
    ``_manifests`` and ``_uploads``.
    """
    has_nested = set(nested)
    index = count()

    def made(kind: str, repository: str, name: str) -> Removal:
        return Removal(next(index), kind, repository, name, live_path(kind, repository, name))

    for t in plan.tags_deleted:
        yield made("tag", t.repository, t.tag)
    for m in plan.manifests_unlinked:
        yield made("revision", m.repository, m.digest)
    for name in plan.repositories_removed:
        if name in has_nested:
            for part in PARTS:
                yield made("repository-part", name, part)
        else:
            yield made("repository", name, "")
