"""Which tags do not resolve to a complete image on disk. Pure: reads an inventory."""

from __future__ import annotations

from dataclasses import dataclass

from retentiond.core.inventory import Inventory, Repository
from retentiond.storage import layout

#: in a problem's path, before a tag's name
_TAGS = f"/{layout.TAGS}/"


@dataclass(frozen=True, slots=True)
class BrokenTag:
    repository: str
    tag: str
    digest: str
    reason: str


def _check_manifest(
    inventory: Inventory, repo: Repository, digest: str, seen: set[str]
) -> str | None:
    if digest in seen:
        return None
    seen.add(digest)
    if digest not in inventory.blobs:
        return f"manifest {digest} has no blob"
    if digest not in repo.revisions:
        return f"manifest {digest} is not linked in the repository (the registry answers 404)"
    manifest = inventory.manifests.get(digest)
    if manifest is None:
        return f"manifest {digest} does not parse"
    for blob in manifest.blobs:
        if blob not in inventory.blobs:
            return f"blob {blob} of {digest} is missing"
        if repo.layers is not None and blob not in repo.layers:
            return f"blob {blob} of {digest} is not linked in _layers (the registry answers 404)"
    for child in manifest.children:
        problem = _check_manifest(inventory, repo, child, seen)
        if problem:
            return problem
    return None


def broken_tags(inventory: Inventory) -> list[BrokenTag]:
    """Every tag whose manifest, child manifests or blobs are not all on disk and linked."""
    broken: list[BrokenTag] = []
    for repo in inventory.repositories:
        for tag in repo.tags:
            reason = _check_manifest(inventory, repo, tag.digest, set())
            if reason:
                broken.append(BrokenTag(repo.name, tag.name, tag.digest, reason))
    for problem in inventory.problems:
        if problem.repository and "tag " in problem.message and layout.CURRENT_LINK in problem.path:
            tag_name = problem.path.rsplit(_TAGS, 1)[-1].split("/", 1)[0]
            broken.append(BrokenTag(problem.repository, tag_name, "", problem.message))
    return broken
