"""The status page (``GET /`` of ``serve``): one HTML document, rendered from values.

:func:`render_page` is pure: a :class:`StatusPage` in, a string out; no I/O, no clock (the time
the page is for is one of its values). The daemon gathers the values (:meth:`Daemon.status_page`)
from what it keeps of the last plan (:func:`plan_view`), the history of runs
(:func:`runs_of_history`, from ``state_dir/runs.jsonl``) and the window schedule.

The page has no script, no external resource and no front-end build: HTML with inline CSS and
an inline SVG chart. Every value from outside (repository names are whatever was pushed, run
ids and statuses are read from a file, errors quote both) is made printable
(:func:`retentiond.core.names.printable`) and then HTML-escaped, in text and attributes alike;
the daemon also sends a Content-Security-Policy that forbids scripts.

The numbers a program (or the browser test) reads are in ``data-`` attributes, exact, next to
the rounded text people read: each run row ``tr[data-run-id]`` with ``td[data-field]`` cells
whose ``data-value`` is the record's number, each chart bar group ``g[data-run-id]`` with
``data-storage-bytes`` and ``data-bytes-reclaimed``, each repository row
``tr[data-repository]``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retentiond.core.names import printable
from retentiond.core.plan_types import Plan
from retentiond.durations import format_duration
from retentiond.render import human_bytes, iso
from retentiond.run_records import DURATION_PHASES, HistoryEntry, RunStatus

#: runs in the table, newest first
RUNS_SHOWN = 20
#: runs in the chart, the most recent
CHART_RUNS = 30
#: repositories in the plan's table (the most bytes reclaimable first); the rest are counted
REPOSITORIES_SHOWN = 200
#: seconds between reloads of the page by the browser (a meta refresh: no script)
REFRESH_SECONDS = 60

_MARKS = (RunStatus.PURGED.value, RunStatus.UNDONE.value)


# -- the values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryRow:
    """One repository of the last plan."""

    name: str
    tags: int
    tags_deleted: int
    manifests_unlinked: int
    #: bytes freed by blobs only this repository's removals release
    bytes_reclaimed: int
    removed: bool = False
    refused: bool = False


@dataclass(frozen=True)
class PlanView:
    """What the page shows of the last plan ``serve`` made."""

    generated_at: datetime
    repositories: int
    tags: int
    tags_deleted: int
    manifests_unlinked: int
    blobs: int
    blobs_reclaimed: int
    bytes_reclaimed: int
    storage_bytes: int
    refused: int
    gc_blocked: bool
    rows: tuple[RepositoryRow, ...] = ()


@dataclass(frozen=True)
class RunView:
    """One run of ``runs.jsonl`` (its marks folded in: ``purged``, ``undone``)."""

    run_id: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    tags_deleted: int
    manifests_unlinked: int
    repositories_removed: int
    bytes_reclaimed: int
    blobs_deleted: int
    #: the blob store's bytes when the run planned; None in records of earlier versions and
    #: for runs that stopped before their plan
    storage_bytes: int | None
    durations: Mapping[str, float] = field(default_factory=dict)
    read_only_seconds: float = 0.0
    broken: int = 0
    errors: tuple[str, ...] = ()
    undone: bool = False


@dataclass(frozen=True)
class WindowView:
    """The maintenance windows: the one open now (if any) and the next to open."""

    schedule: str
    timezone: str
    length: timedelta
    next_opening: datetime | None
    #: when the window open now closes; None outside a window
    open_until: datetime | None = None
    #: the expected run time of a maintenance on the last plan (retentiond.windows)
    estimate_seconds: float | None = None


@dataclass(frozen=True)
class StatusPage:
    now: datetime
    started_at: datetime
    policies: int
    window: WindowView
    plan: PlanView | None = None
    #: oldest first, as in ``runs.jsonl``
    runs: Sequence[RunView] = ()
    maintenance_running: bool = False
    last_error: str | None = None
    #: why the history could not be read (the page shows it instead of the runs)
    history_error: str | None = None


# -- building the values -------------------------------------------------------------------------


def plan_view(plan: Plan, blobs: int, storage_bytes: int) -> PlanView:
    """The page's view of ``plan``, made on an inventory of ``blobs`` blobs, ``storage_bytes``
    bytes."""
    return PlanView(
        generated_at=plan.generated_at,
        repositories=plan.repositories,
        tags=plan.tags,
        tags_deleted=len(plan.tags_deleted),
        manifests_unlinked=len(plan.manifests_unlinked),
        blobs=blobs,
        blobs_reclaimed=len(plan.reclaimable),
        bytes_reclaimed=plan.bytes_reclaimed,
        storage_bytes=storage_bytes,
        refused=len(plan.refused),
        gc_blocked=plan.gc_blocked,
        rows=tuple(
            RepositoryRow(
                name=r.name,
                tags=r.tags,
                tags_deleted=r.tags_deleted,
                manifests_unlinked=r.manifests_unlinked,
                bytes_reclaimed=r.bytes_reclaimed,
                removed=r.removed,
                refused=r.refused,
            )
            for r in plan.per_repository
        ),
    )


def repositories_json(view: PlanView) -> list[dict[str, Any]]:
    """The per-repository rows as ``last-plan.json``'s ``per_repository`` holds them."""
    return [
        {
            "repository": r.name,
            "tags": r.tags,
            "tags_kept": r.tags - r.tags_deleted,
            "tags_deleted": r.tags_deleted,
            "manifests_unlinked": r.manifests_unlinked,
            "bytes_reclaimed": r.bytes_reclaimed,
            "removed": r.removed,
            "refused": r.refused,
        }
        for r in view.rows
    ]


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def runs_of_history(entries: Sequence[HistoryEntry]) -> list[RunView]:
    """The runs of ``runs.jsonl`` (read by :func:`retentiond.state.read_history`), oldest
    first; a ``purged`` or ``undone`` line marks the run it names instead of being one."""
    undone = {e.run_id for e in entries if e.status == RunStatus.UNDONE.value}
    runs: list[RunView] = []
    for e in entries:
        if e.status in _MARKS:
            continue
        removed = e.removed or {}
        plan = e.plan or {}
        runs.append(
            RunView(
                run_id=e.run_id,
                status=e.status or "unknown",
                started_at=_time(e.started_at),
                finished_at=_time(e.finished_at),
                tags_deleted=removed.get("tags", 0),
                manifests_unlinked=removed.get("manifests", 0),
                repositories_removed=removed.get("repositories", 0),
                bytes_reclaimed=e.bytes_reclaimed or 0,
                blobs_deleted=e.blobs_deleted or 0,
                storage_bytes=_int(plan.get("storage_bytes")),
                durations=dict(e.durations or {}),
                read_only_seconds=e.read_only_seconds or 0.0,
                broken=len(e.broken or []),
                errors=tuple(e.errors or ()),
                undone=e.run_id in undone,
            )
        )
    return runs


# -- formatting ----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """``value`` as HTML text or attribute value: printable, then escaped."""
    return html.escape(printable(str(value)), quote=True)


def _n(count: int, noun: str) -> str:
    """``1 tag``, ``2 tags``, ``3 repositories``."""
    if count == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count:,} {plural}"


def human_seconds(seconds: float) -> str:
    """``0.42 s``, ``12.5 s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def _when(
    value: datetime | None, seconds: bool = True, zone: str | None = None, utc_mark: bool = True
) -> str:
    """A ``<time>`` element in UTC, or a dash; with ``zone``, the time in that zone after it
    (``value`` is in that zone)."""
    if value is None:
        return '<span class="muted">&ndash;</span>'
    utc = value.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    local = (
        f' <span class="muted">({value.strftime("%Y-%m-%d %H:%M")} {_e(zone)})</span>'
        if zone is not None and value.utcoffset() != utc.utcoffset()
        else ""
    )
    mark = "&nbsp;UTC" if utc_mark else ""
    return f'<time datetime="{iso(value)}">{shown}{mark}</time>{local}'


def _relative(when: datetime, now: datetime) -> str:
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    text = human_seconds(abs(seconds)) if abs(seconds) >= 60 else f"{abs(seconds):.0f} s"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _bytes_cell(n: int, name: str) -> str:
    return (
        f'<td class="num" data-field="{name}" data-value="{n}" title="{n} bytes">'
        f"{human_bytes(n)}</td>"
    )


def _count_cell(n: int, name: str) -> str:
    return f'<td class="num" data-field="{name}" data-value="{n}">{n:,}</td>'


def _seconds_cell(seconds: float | None, name: str) -> str:
    if seconds is None:
        return f'<td class="num muted" data-field="{name}">&ndash;</td>'
    return (
        f'<td class="num" data-field="{name}" data-value="{seconds!r}" title="{seconds!r} s">'
        f"{human_seconds(seconds)}</td>"
    )


_STATUS_CLASS = {
    RunStatus.OK.value: "ok",
    RunStatus.NOTHING_TO_DO.value: "ok",
    RunStatus.DRY_RUN.value: "info",
    RunStatus.FAILED.value: "bad",
    RunStatus.ROLLED_BACK.value: "warn",
    RunStatus.CANCELLED.value: "warn",
    RunStatus.REFUSED.value: "warn",
}


def _badge(status: str) -> str:
    kind = _STATUS_CLASS.get(status, "info")
    return f'<span class="badge {kind}">{_e(status)}</span>'


# -- the sections --------------------------------------------------------------------------------


def _card(label: str, value: str, detail: str, ident: str, data: str = "") -> str:
    return (
        f'<div class="card" id="{ident}"{data}><div class="label">{label}</div>'
        f'<div class="value">{value}</div><div class="detail">{detail}</div></div>'
    )


def _cards(page: StatusPage) -> str:
    plan, window, now = page.plan, page.window, page.now
    cards = []
    if plan is not None:
        cards.append(
            _card(
                "Storage",
                human_bytes(plan.storage_bytes),
                f"{_n(plan.blobs, 'blob')}, {_n(plan.repositories, 'repository')}, "
                f"{_n(plan.tags, 'tag')}",
                "card-storage",
                f' data-value="{plan.storage_bytes}"',
            )
        )
        cards.append(
            _card(
                "Reclaimable",
                human_bytes(plan.bytes_reclaimed),
                f"{_n(plan.blobs_reclaimed, 'blob')} the GC would delete",
                "card-reclaimable",
                f' data-value="{plan.bytes_reclaimed}"',
            )
        )
        cards.append(
            _card(
                "Tags to delete",
                f"{plan.tags_deleted:,}",
                f"of {plan.tags:,}; {_n(plan.manifests_unlinked, 'manifest')} unlinked",
                "card-tags",
                f' data-value="{plan.tags_deleted}"',
            )
        )
    if window.open_until is not None:
        value, detail = "open now", f"closes {_relative(window.open_until, now)}"
    elif window.next_opening is not None:
        value = _relative(window.next_opening, now)
        detail = _when(window.next_opening, zone=window.timezone)
    else:
        value, detail = "none", "the schedule never opens again"
    cards.append(_card("Next window", value, detail, "card-window"))
    return '<section class="cards">' + "".join(cards) + "</section>"


def _window(page: StatusPage) -> str:
    w = page.window
    rows = [
        (
            "Schedule",
            f"<code>{_e(w.schedule)}</code> in {_e(w.timezone)}, "
            f"{_e(format_duration(w.length))} long",
        ),
        (
            "Open now",
            f"yes, until {_when(w.open_until, zone=w.timezone)}"
            if w.open_until is not None
            else "no",
        ),
        (
            "Next opening",
            f'<span id="next-window" data-value="{iso(w.next_opening)}">'
            f"{_when(w.next_opening, zone=w.timezone)}</span> "
            f'<span class="muted">({_relative(w.next_opening, page.now)})</span>'
            if w.next_opening is not None
            else '<span id="next-window">none</span>',
        ),
    ]
    if w.estimate_seconds is not None:
        rows.append(
            (
                "Expected run time",
                f"{human_seconds(w.estimate_seconds)} "
                '<span class="muted">(from the last plan and the runs before)</span>',
            )
        )
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section><h2>Maintenance window</h2><table class="kv">{body}</table></section>'


_UNITS = (("B", 1), ("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))


def _axis(top: int) -> tuple[int, int, str, int]:
    """An axis from 0 to at least ``top`` bytes with about three ticks, each a round number
    of a binary unit: (the axis' top, the step, the unit's name, the unit's size)."""
    name, size = _UNITS[-1]
    for unit in _UNITS:
        if top < unit[1] * 1024:
            name, size = unit
            break
    scaled = max(top / size, 1.0)
    units = next(
        (n for n in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500) if scaled / n <= 3), 1000
    )
    step = units * size
    return max(step, -(-top // step) * step), step, name, size


#: the chart's geometry (SVG user units; the SVG scales to the page's width)
_W, _H, _LEFT, _RIGHT = 1080, 300, 84, 16
#: each panel: (title's baseline, plot's top, plot's height)
_STORAGE_PANEL = (16, 26, 130)
_RECLAIMED_PANEL = (186, 196, 72)
_X_LABELS = 288


def _chart(runs: Sequence[RunView]) -> str:
    """Two panels on one time axis, a bar per run: the storage when the run planned (above)
    and the bytes the run reclaimed (below, on its own scale: they are often a sliver of the
    storage)."""
    shown = list(runs)[-CHART_RUNS:]
    if not shown:
        return '<p class="muted" id="chart-empty">No runs yet.</p>'
    plot_w = _W - _LEFT - _RIGHT
    slot = plot_w / len(shown)
    bar = max(min(slot * 0.66, 44.0), 2.0)
    parts = [
        f'<svg id="chart" viewBox="0 0 {_W} {_H}" width="100%" role="img" '
        'aria-label="Storage and bytes reclaimed per run" xmlns="http://www.w3.org/2000/svg">'
    ]
    scales = []
    for (title_y, plot_top, plot_h), css, title, values in (
        (
            _STORAGE_PANEL,
            "storage",
            "Storage when the run planned",
            [r.storage_bytes for r in shown],
        ),
        (
            _RECLAIMED_PANEL,
            "reclaimed",
            "Bytes reclaimed by the run",
            [r.bytes_reclaimed for r in shown],
        ),
    ):
        axis_top, step, unit, size = _axis(max([v or 0 for v in values] + [1]))
        scales.append((plot_top, plot_h, axis_top))
        parts.append(
            f'<rect class="{css}" x="{_LEFT}" y="{title_y - 9}" width="10" height="10" rx="2"/>'
            f'<text class="legend" x="{_LEFT + 16}" y="{title_y}">{title}</text>'
        )
        for tick in range(0, axis_top + 1, step):
            ty = plot_top + plot_h - plot_h * tick / axis_top
            label = "0" if tick == 0 else f"{tick // size:,} {unit}"
            parts.append(
                f'<line class="{"base" if tick == 0 else "grid"}" x1="{_LEFT}" x2="{_W - _RIGHT}" '
                f'y1="{ty:.1f}" y2="{ty:.1f}"/><text class="axis" x="{_LEFT - 8}" '
                f'y="{ty + 4:.1f}" text-anchor="end">{label}</text>'
            )
    label_every = max(1, -(-len(shown) // 8))
    for n, r in enumerate(shown):
        x = _LEFT + slot * n + (slot - bar) / 2
        storage = r.storage_bytes
        title = (
            f"{r.run_id} ({r.status}): "
            + (f"storage {human_bytes(storage)} ({storage} bytes), " if storage is not None else "")
            + f"reclaimed {human_bytes(r.bytes_reclaimed)} ({r.bytes_reclaimed} bytes)"
        )
        group = [
            f'<g class="run" data-run-id="{_e(r.run_id)}" '
            f'data-bytes-reclaimed="{r.bytes_reclaimed}"'
            + (f' data-storage-bytes="{storage}"' if storage is not None else "")
            + f"><title>{_e(title)}</title>"
        ]
        for (plot_top, plot_h, axis_top), css, value in zip(
            scales, ("storage", "reclaimed"), (storage, r.bytes_reclaimed), strict=True
        ):
            if value:  # (a bar of at least a pixel: a run that reclaimed a little shows)
                h = max(plot_h * value / axis_top, 1.0)
                group.append(
                    f'<rect class="{css}" x="{x:.1f}" y="{plot_top + plot_h - h:.1f}" '
                    f'width="{bar:.1f}" height="{h:.1f}"/>'
                )
        group.append("</g>")
        parts.append("".join(group))
        last = n == len(shown) - 1
        if last or (n % label_every == 0 and len(shown) - 1 - n >= label_every):
            when = r.started_at or r.finished_at
            label = when.astimezone(UTC).strftime("%m-%d %H:%M") if when else r.run_id[:8]
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{_X_LABELS}" '
                f'text-anchor="middle">{_e(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _runs(page: StatusPage) -> str:
    if page.history_error is not None:
        return f'<p class="error" id="history-error">{_e(page.history_error)}</p>'
    shown = list(reversed(page.runs))[:RUNS_SHOWN]
    if not shown:
        return '<p class="muted" id="runs-empty">No maintenance has run yet.</p>'
    head = (
        "<tr><th>Run</th><th>Status</th><th>Started (UTC)</th><th class=num>Tags deleted</th>"
        "<th class=num>Manifests</th><th class=num>Reclaimed</th>"
        + "".join(f"<th class=num>{p}</th>" for p in DURATION_PHASES)
        + "<th class=num>Read-only</th><th class=num>Broken</th></tr>"
    )
    rows = []
    for r in shown:
        status = _badge(r.status) + (' <span class="badge warn">undone</span>' if r.undone else "")
        errors = (
            f'<div class="errors">{"<br>".join(_e(e) for e in r.errors[:3])}</div>'
            if r.errors
            else ""
        )
        rows.append(
            f'<tr data-run-id="{_e(r.run_id)}" data-status="{_e(r.status)}">'
            f'<td><code class="nowrap">{_e(r.run_id)}</code>{errors}</td><td>{status}</td>'
            f'<td class="nowrap">{_when(r.started_at, seconds=False, utc_mark=False)}</td>'
            + _count_cell(r.tags_deleted, "tags_deleted")
            + _count_cell(r.manifests_unlinked, "manifests_unlinked")
            + _bytes_cell(r.bytes_reclaimed, "bytes_reclaimed")
            + "".join(_seconds_cell(r.durations.get(p), f"duration_{p}") for p in DURATION_PHASES)
            + _seconds_cell(r.read_only_seconds, "read_only_seconds")
            + _count_cell(r.broken, "broken")
            + "</tr>"
        )
    more = len(page.runs) - len(shown)
    note = f'<p class="muted">{_n(more, "earlier run")} in runs.jsonl.</p>' if more > 0 else ""
    return (
        '<div class="scroll"><table id="runs"><thead>'
        + head
        + "</thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        + note
    )


def _plan(plan: PlanView | None) -> str:
    if plan is None:
        return (
            '<p class="muted" id="plan-empty">No plan yet: the first comes shortly after start.</p>'
        )
    rows = sorted(plan.rows, key=lambda r: (-r.bytes_reclaimed, -r.tags_deleted, r.name))
    shown = rows[:REPOSITORIES_SHOWN]
    body = []
    for r in shown:
        note = (
            '<span class="badge warn">refused</span>'
            if r.refused
            else '<span class="badge info">removed</span>'
            if r.removed
            else ""
        )
        body.append(
            f'<tr data-repository="{_e(r.name)}"><td class="name">{_e(r.name)}</td>'
            + _count_cell(r.tags, "tags")
            + _count_cell(r.tags - r.tags_deleted, "tags_kept")
            + _count_cell(r.tags_deleted, "tags_deleted")
            + _count_cell(r.manifests_unlinked, "manifests_unlinked")
            + _bytes_cell(r.bytes_reclaimed, "bytes_reclaimed")
            + f"<td>{note}</td></tr>"
        )
    more = len(rows) - len(shown)
    summary = (
        f'<p id="plan-summary" data-generated-at="{_e(iso(plan.generated_at))}">'
        f"Made {_when(plan.generated_at)}: {plan.tags_deleted:,} of {_n(plan.tags, 'tag')} "
        f"deleted, {_n(plan.manifests_unlinked, 'manifest')} unlinked; the GC would reclaim "
        f"{_n(plan.blobs_reclaimed, 'blob')}, <strong>{human_bytes(plan.bytes_reclaimed)}</strong>"
        f' <span class="muted">({plan.bytes_reclaimed:,} bytes)</span>.'
        + (f" {_n(plan.refused, 'repository')} refused." if plan.refused else "")
        + "</p>"
    )
    blocked = (
        '<p class="error" id="gc-blocked">GC blocked: the registry\'s garbage collector would '
        "abort or destroy data on this tree; <code>retentiond plan</code> lists the problems.</p>"
        if plan.gc_blocked
        else ""
    )
    table = (
        '<div class="scroll"><table id="plan"><thead><tr><th>Repository</th><th class=num>Tags</th>'
        "<th class=num>Kept</th><th class=num>Deleted</th><th class=num>Manifests unlinked</th>"
        "<th class=num>Reclaimable</th><th></th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )
    note = (
        f'<p class="muted">{_n(more, "more repository")} (the full list: '
        "<code>state_dir/last-plan.json</code>).</p>"
        if more > 0
        else ""
    )
    shared = (
        '<p class="muted">A repository\'s bytes are those only its removals free; blobs shared '
        "between repositories count in the total only.</p>"
    )
    return summary + blocked + table + note + shared


_CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--storage:#8fb3d9;
--reclaimed:#e8833a;--ok:#1f7a3f;--okbg:#e2f3e7;--warn:#8a5a00;--warnbg:#fdf0d5;--bad:#a11d2b;
--badbg:#fbe2e4;--info:#34506e;--infobg:#e4ecf5}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#1d2330;color:#fff;padding:14px 28px;display:flex;flex-wrap:wrap;gap:6px 24px;
align-items:baseline}
header h1{font-size:18px;margin:0;font-weight:600}
header .meta{color:#c5cbd6;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:20px 28px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;
margin:0 0 18px}
section.cards{background:none;border:0;padding:0;display:grid;
grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:600;margin:2px 0}
.card .detail{color:var(--muted);font-size:12px}
h2{font-size:15px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{color:var(--muted);font-weight:600;font-size:12px;white-space:nowrap}
tbody tr:hover{background:#fafbfc}
.num{text-align:right;white-space:nowrap}
table.kv{width:auto} table.kv th{color:var(--muted);font-weight:500;padding-right:24px}
td.name{word-break:break-all}
.scroll{overflow-x:auto}
.muted{color:var(--muted)} .nowrap{white-space:nowrap}
.error{color:var(--bad);background:var(--badbg);padding:8px 12px;border-radius:6px}
.errors{color:var(--bad);font-size:12px;margin-top:2px}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600}
.badge.ok{color:var(--ok);background:var(--okbg)}
.badge.warn{color:var(--warn);background:var(--warnbg)}
.badge.bad{color:var(--bad);background:var(--badbg)}
.badge.info{color:var(--info);background:var(--infobg)}
svg .grid{stroke:var(--line)} svg .base{stroke:#9aa2b1}
svg .axis,svg .legend{fill:var(--muted);font-size:11px}
svg .storage{fill:var(--storage)} svg .reclaimed{fill:var(--reclaimed)}
svg g.run:hover rect{opacity:.8}
"""


def render_page(page: StatusPage) -> str:
    """The status page's HTML."""
    running = (
        '<span class="badge warn" id="maintenance-running">maintenance running</span>'
        if page.maintenance_running
        else ""
    )
    error = (
        f'<p class="error" id="last-error">Last error: {_e(page.last_error)}</p>'
        if page.last_error
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>retentiond status</title>"
        f"<style>{_CSS}</style></head><body>"
        "<header><h1>retentiond</h1>"
        f'<span class="meta">as of {_when(page.now)}</span>'
        f'<span class="meta">up since {_when(page.started_at)}</span>'
        f'<span class="meta" id="policies" data-value="{page.policies}">{page.policies} '
        f"{'policy' if page.policies == 1 else 'policies'}</span>"
        f"{running}</header><main>"
        + error
        + _cards(page)
        + '<section id="history"><h2>Storage and bytes reclaimed per run</h2>'
        + (_chart(page.runs) if page.history_error is None else "")
        + "</section>"
        + "<section><h2>Last runs</h2>"
        + _runs(page)
        + "</section>"
        + _window(page)
        + "<section><h2>Last plan, per repository</h2>"
        + _plan(page.plan)
        + "</section>"
        + "</main></body></html>\n"
    )
