"""The rows of a run's files (:mod:`retentiond.run_files`), made from its plan as they are
written: what it deletes and why, and what it keeps. Pure; a plan of a million tags is never
turned into a list of rows."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

from retentiond.core.inventory import Inventory
from retentiond.core.plan_types import Plan


def deleted_rows(plan: Plan, by_policy: dict[str, dict[str, int]]) -> Iterator[list[Any]]:
    """The rows of ``deleted.jsonl``; counts each policy's tags and manifests on the way."""
    tags, manifests = by_policy["tags"], by_policy["manifests"]
    for t in plan.tags_deleted:
        tags[t.policy or ""] = tags.get(t.policy or "", 0) + 1
        yield ["tag", t.repository, t.tag, t.policy]
    for m in plan.manifests_unlinked:
        manifests[m.policy or ""] = manifests.get(m.policy or "", 0) + 1
        yield ["manifest", m.repository, m.digest, m.policy]
    for name in plan.repositories_removed:
        yield ["repository", name, "", None]


def kept_rows(inventory: Inventory, plan: Plan) -> Iterator[tuple[str, str, str]]:
    """(repository, tag, digest) of every tag the plan keeps, a repository at a time: the
    plan's deletions come a repository at a time too, so only one repository's names are
    held at once."""
    deleted = groupby(plan.tags_deleted, key=lambda t: t.repository)
    pending: dict[str, set[str]] = {}
    for repo in inventory.repositories:
        if repo.name not in pending:
            for name, group in deleted:  # until this repository's group (or the end)
                pending[name] = {t.tag for t in group}
                if name == repo.name:
                    break
        gone = pending.pop(repo.name, set())
        for tag in repo.materialize()[0]:
            if tag.name not in gone:
                yield repo.name, tag.name, tag.digest
