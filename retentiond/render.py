"""Plans and verification results as text for people and JSON for machines.

Names and messages in text output go through :func:`text`: a tag or repository name with a
newline or a terminal escape (the tree is written by whoever can push) cannot break the table,
forge a line or colour the terminal. JSON output is escaped by ``json`` itself.
"""

from __future__ import annotations

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
        },
        "tags": [
            {
                "repository": t.repository,
                "tag": t.tag,
                "digest": t.digest,
                "pushed_at": iso(t.pushed_at),
                "policy": t.policy,
                "reason": t.reason,
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
    }


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
    if plan.gc_blocked:
        lines.append(
            "GC blocked: the registry's garbage collector would abort or destroy data on "
            "this tree; fix the problems above first"
        )
    return "\n".join(lines)
