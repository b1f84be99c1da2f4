"""Plans and verification results as text for people and JSON for machines.

Names and messages in text output go through :func:`text`: a tag or repository name with a
newline or a terminal escape (the tree is written by whoever can push) cannot break the table,
forge a line or colour the terminal. JSON output is escaped by ``json`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from retentiond.core.names import printable
from retentiond.core.plan_types import Plan
from retentiond.policy.selectors import Selector


def text(value: str) -> str:
    """``value`` as one line of text: control characters and backslashes escaped."""
    return printable(value)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The contract's ``summary`` object, plus ``refused`` (repositories refused)."""
    return {
        "repositories": plan.repositories,
        "tags": plan.tags,
        "tags_deleted": len(plan.tags_deleted),
        "manifests_unlinked": len(plan.manifests_unlinked),
        "repositories_removed": len(plan.repositories_removed),
        "blobs_reclaimed": len(plan.reclaimable),
        "bytes_reclaimed": plan.bytes_reclaimed,
        "refused": len(plan.refused),
    }


def plan_json(plan: Plan, only: Selector | None = None) -> dict[str, Any]:
    """The contract's ``plan --json`` document; ``only`` filters the lists, not the summary."""

    def keep(repository: str) -> bool:
        return only is None or only.matches(repository)

    return {
        "generated_at": iso(plan.generated_at),
        "root": plan.root,
        "summary": {
            **plan_summary(plan),
            "bytes_already_unreferenced": sum(plan.already_unreferenced.values()),
            "gc_blocked": plan.gc_blocked,
            "schema1_tags": sum(len(r.schema1_tags) for r in plan.per_repository),
            "protected_tags": plan.protected_tags,
            "protected_kept": len(plan.protected),
        },
        "tags": [
            {
                "repository": t.repository,
                "tag": t.tag,
                "digest": t.digest,
                "pushed_at": iso(t.pushed_at),
                "policy": t.policy,
                "reason": t.reason,
                **({"pulled_at": iso(t.pulled_at)} if t.pulled_at is not None else {}),
            }
            for t in plan.tags_deleted
            if keep(t.repository)
        ],
        "manifests": [
            {"repository": m.repository, "digest": m.digest, "reason": m.reason}
            for m in plan.manifests_unlinked
            if keep(m.repository)
        ],
        "repositories": [r for r in plan.repositories_removed if keep(r)],
        "refused": [
            {"repository": r.repository, "reason": r.reason}
            for r in plan.refused
            if keep(r.repository)
        ],
        "problems": [
            {"path": p.path, "kind": p.kind.value, "repository": p.repository, "message": p.message}
            for p in plan.problems
            if p.repository is None or keep(p.repository)
        ],
        "schema1_tags": [
            {"repository": r.name, "tags": list(r.schema1_tags)}
            for r in plan.per_repository
            if r.schema1_tags and keep(r.name)
        ],
        **protection_json(plan, keep),
    }


def protection_json(plan: Plan, keep: Callable[[str], bool]) -> dict[str, Any]:
    """The plan JSON's additions for in-use protection (``protect:``): ``protected``, what it
    kept that a policy would have removed (``tag`` null for a manifest), and ``protection``,
    each source read and whether all were (``available``)."""
    return {
        "protected": [
            {
                "repository": p.repository,
                "tag": p.tag,
                "digest": p.digest,
                "policy": p.policy,
                "would_delete": p.would_delete,
                "reason": p.reason,
            }
            for p in plan.protected
            if keep(p.repository)
        ],
        "protection": {
            "available": not plan.protection_problems,
            "protected_tags": plan.protected_tags,
            "sources": [
                {"kind": s.kind, "source": s.source, "references": s.references, "error": s.error}
                for s in plan.protection_sources
            ],
        },
    }


def protection_lines(plan: Plan, only: Selector | None = None, verbose: bool = True) -> list[str]:
    """What :func:`plan_table` says about in-use protection."""
    lines = []
    if verbose:
        for p in plan.protected:
            if only is None or only.matches(p.repository):
                what = (
                    f"{p.repository}:{p.tag}" if p.tag is not None else f"{p.repository}@{p.digest}"
                )
                lines.append(
                    text(f"  keep {what} ({p.reason}; {p.policy or 'untagged'}: {p.would_delete})")
                )
    if plan.protection_sources:
        lines.append(
            f"protection: {plan.protected_tags} tags in use, {len(plan.protected)} kept "
            "against the policies"
        )
    for problem in plan.protection_problems:
        lines.append(text(f"PROTECTION UNAVAILABLE {problem}"))
    if plan.protection_problems:
        lines.append(
            "a protection source could not be read: no maintenance deletes anything until it "
            "can be (apply refuses, serve skips its windows)"
        )
    return lines


#: the tag names a text line about schema1 names before "and N more"
SCHEMA1_NAMED = 5


def schema1_lines(plan: Plan, only: Selector | None = None) -> list[str]:
    """A line per repository with tags on schema1 manifests, and what it means, for
    :func:`plan_table`."""
    lines = []
    total = 0
    for r in plan.per_repository:
        if not r.schema1_tags or (only is not None and not only.matches(r.name)):
            continue
        total += len(r.schema1_tags)
        named = ", ".join(r.schema1_tags[:SCHEMA1_NAMED])
        more = len(r.schema1_tags) - SCHEMA1_NAMED
        if more > 0:
            named += f" and {more} more"
        noun = "tag" if len(r.schema1_tags) == 1 else "tags"
        lines.append(text(f"schema1 {r.name}: {len(r.schema1_tags)} {noun} ({named})"))
    if total:
        lines.append(
            f"{total} {'tag points' if total == 1 else 'tags point'} at schema1 manifests, which "
            "registry:3 (distribution v3) cannot serve: push them again as schema2 or OCI "
            "(e.g. skopeo copy --format v2s2) before moving to registry:3"
        )
    return lines


def plan_table(plan: Plan, only: Selector | None = None, verbose: bool = True) -> str:
    rows = [r for r in plan.per_repository if only is None or only.matches(r.name)]
    header = ("REPOSITORY", "TAGS", "KEPT", "DELETED", "UNLINKED", "FREED", "NOTE")
    table: list[tuple[str, ...]] = [header]
    for r in rows:
        note = "refused" if r.refused else ("removed" if r.removed else "")
        table.append(
            (
                text(r.name),
                str(r.tags),
                str(r.tags - r.tags_deleted),
                str(r.tags_deleted),
                str(r.manifests_unlinked),
                human_bytes(r.bytes_reclaimed),
                note,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    already = sum(plan.already_unreferenced.values())
    lines.append("")
    lines.append(
        f"{len(plan.tags_deleted)} of {plan.tags} tags deleted, {len(plan.manifests_unlinked)} "
        f"manifests unlinked, {len(plan.repositories_removed)} repositories removed; GC would "
        f"reclaim {len(plan.reclaimable)} blobs, {human_bytes(plan.bytes_reclaimed)} "
        f"({plan.bytes_reclaimed} bytes"
        + (f", of which {already} already unreferenced" if already else "")
        + ")"
    )
    if verbose:
        for t in plan.tags_deleted:
            if only is None or only.matches(t.repository):
                # escaped as a whole: one check a line (a million at a million tags)
                lines.append(text(f"  delete {t.repository}:{t.tag} ({t.policy}: {t.reason})"))
    for refusal in plan.refused:
        if only is None or only.matches(refusal.repository):
            lines.append(text(f"refused {refusal.repository}: {refusal.reason}"))
    for problem in plan.problems:
        lines.append(text(f"problem {problem}"))
    lines.extend(schema1_lines(plan, only))
    lines.extend(protection_lines(plan, only, verbose))
    if plan.gc_blocked:
        lines.append(
            "GC blocked: the registry's garbage collector would abort or destroy data on "
            "this tree; fix the problems above first"
        )
    return "\n".join(lines)
