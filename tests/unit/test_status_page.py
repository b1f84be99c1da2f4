"""The status page's rendering (retentiond/status_page.py): values in, HTML out.

The runs come from real run records (``RunRecord.to_json`` read back by ``read_history``), the
plan from ``make_plan`` on an inventory. The HTML is parsed by tests/harness/browser.py (which
fails on a page that is not well nested) and its numbers are read from the data attributes the
browser test reads too (tests/integration/test_status_page_browser.py shows the page in chromium).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from retentiond.core.plan import make_plan
from retentiond.core.values import MEDIA_DOCKER_MANIFEST, Manifest, Tag
from retentiond.policy.model import KeepRules, Policy, Safety
from retentiond.policy.selectors import Selector
from retentiond.run_records import HistoryMark, RunRecord, RunStatus
from retentiond.state import append_history, read_history
from retentiond.status_page import (
    CHART_RUNS,
    REPOSITORIES_SHOWN,
    RUNS_SHOWN,
    PlanView,
    RepositoryRow,
    RunView,
    StatusPage,
    WindowView,
    _axis,
    human_seconds,
    plan_view,
    render_page,
    repositories_json,
    runs_of_history,
)
from tests.builders import InventoryBuilder
from tests.harness.browser import parse

NOW = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
HOSTILE = '<script>alert("x")</script>\x1b[31m&amp;'


def record(n: int, **fields: object) -> RunRecord:
    started = NOW - timedelta(days=30 - n)
    values: dict[str, object] = {
        "run_id": started.strftime("%Y%m%dT%H%M%SZ") + f"-{n:06x}",
        "status": RunStatus.OK,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": (started + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan": {"bytes_reclaimed": 1000 * n, "storage_bytes": 10**9 + 10**6 * n},
        "removed": {"tags": n, "manifests": 2 * n, "repositories": 0},
        "bytes_reclaimed": 1000 * n + 7,
        "blobs_deleted": 3 * n,
        "durations": {"plan": 0.5, "delete": 0.1 * n, "gc": 10.0 + n, "verify": 1.25},
        "read_only_seconds": 12.5 + n,
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


def history(tmp_path: Path, *lines: RunRecord | HistoryMark) -> list[RunView]:
    """The runs as the daemon reads them: appended to runs.jsonl, read back."""
    for line in lines:
        append_history(tmp_path, line.to_json())
    return runs_of_history(read_history(tmp_path))


def window(**fields: object) -> WindowView:
    values: dict[str, object] = {
        "schedule": "0 3 * * *",
        "timezone": "Europe/Paris",
        "length": timedelta(hours=2),
        "next_opening": datetime(2026, 12, 3, 3, 0, tzinfo=PARIS),
    }
    values.update(fields)
    return WindowView(**values)  # type: ignore[arg-type]


def page(**fields: object) -> StatusPage:
    values: dict[str, object] = {
        "now": NOW,
        "started_at": NOW - timedelta(hours=1),
        "policies": 2,
        "window": window(),
    }
    values.update(fields)
    return StatusPage(**values)  # type: ignore[arg-type]


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def a_plan() -> PlanView:
    """app: old (deleted) and latest (kept), each an image of its own layer; other: one tag."""
    built = InventoryBuilder("/r")
    for n, size in ((1, 5000), (2, 300), (3, 40)):
        built.manifest(
            Manifest(d(n), MEDIA_DOCKER_MANIFEST, blobs=(d(10 + n), d(20 + n)), config=d(10 + n)),
            size=100,
        )
        built.blob(d(10 + n), 10).blob(d(20 + n), size)
    built.repository(
        "app",
        [Tag("old", d(1), NOW - timedelta(days=9)), Tag("latest", d(2), NOW)],
        {d(1): NOW - timedelta(days=9), d(2): NOW},
    )
    built.repository(HOSTILE, [Tag("v1", d(3), NOW)], {d(3): NOW})
    inventory = built.build()
    policy = Policy(
        name="p",
        repositories=Selector.parse(["**"]),
        tags=Selector.parse(["*"]),
        keep=KeepRules(tags=Selector.parse(["latest", "v1"])),
    )
    plan = make_plan(inventory, [policy], Safety(), NOW)
    return plan_view(plan, len(inventory.blobs), inventory.storage_bytes)


# -- the runs ------------------------------------------------------------------------------------


def test_each_runs_numbers_are_those_of_its_record(tmp_path: Path) -> None:
    records = [record(n) for n in range(1, 4)]
    html = render_page(page(runs=history(tmp_path, *records)))
    doc = parse(html)
    rows = doc.one("table", id="runs").find_all("tr", data_run_id="*")
    assert [r.attrs["data-run-id"] for r in rows] == [r.run_id for r in reversed(records)]
    for row, rec in zip(rows, reversed(records), strict=True):
        cells = {
            c.attrs["data-field"]: c.attrs.get("data-value")
            for c in row.find_all("td")
            if "data-field" in c.attrs
        }
        assert row.attrs["data-status"] == "ok"
        assert int(cells["tags_deleted"] or -1) == rec.removed["tags"]
        assert int(cells["manifests_unlinked"] or -1) == rec.removed["manifests"]
        assert int(cells["bytes_reclaimed"] or -1) == rec.bytes_reclaimed
        assert float(cells["read_only_seconds"] or -1) == rec.read_only_seconds
        for phase in ("plan", "delete", "gc", "clean", "restart", "verify"):
            expected = rec.durations.get(phase)
            got = cells[f"duration_{phase}"]
            assert (float(got) if got is not None else None) == expected, phase


def test_the_chart_has_a_bar_group_per_run_with_its_bytes(tmp_path: Path) -> None:
    records = [record(n) for n in range(1, 5)]
    doc = parse(render_page(page(runs=history(tmp_path, *records))))
    groups = doc.one("svg", id="chart").find_all("g", data_run_id="*")
    assert [
        (g.attrs["data-run-id"], g.attrs["data-storage-bytes"], g.attrs["data-bytes-reclaimed"])
        for g in groups
    ] == [(r.run_id, str((r.plan or {})["storage_bytes"]), str(r.bytes_reclaimed)) for r in records]
    # the bars: the highest storage fills a round axis, heights in proportion
    storage = [float(g.one("rect", **{"class": "storage"}).attrs["height"] or 0) for g in groups]
    reclaimed = [
        float(g.one("rect", **{"class": "reclaimed"}).attrs["height"] or 0) for g in groups
    ]
    assert storage == sorted(storage) and reclaimed == sorted(reclaimed)
    assert (
        abs(reclaimed[3] / reclaimed[0] - records[3].bytes_reclaimed / records[0].bytes_reclaimed)
        < 0.02
    )


def test_the_chart_shows_the_last_runs_and_a_run_without_storage_has_no_storage_bar(
    tmp_path: Path,
) -> None:
    records = [record(n) for n in range(CHART_RUNS + 5)]
    records[-1] = replace(records[-1], plan=None, bytes_reclaimed=0)  # stopped before its plan
    doc = parse(render_page(page(runs=history(tmp_path, *records))))
    groups = doc.one("svg", id="chart").find_all("g", data_run_id="*")
    assert [g.attrs["data-run-id"] for g in groups] == [r.run_id for r in records[-CHART_RUNS:]]
    assert "data-storage-bytes" not in groups[-1].attrs
    assert groups[-1].find_all("rect") == []
    table = doc.one("table", id="runs").find_all("tr", data_run_id="*")
    assert len(table) == RUNS_SHOWN


def test_marks_are_not_runs_and_an_undone_run_says_so(tmp_path: Path) -> None:
    first, second = record(1), record(2)
    runs = history(
        tmp_path,
        first,
        second,
        HistoryMark(first.run_id, RunStatus.PURGED),
        HistoryMark(second.run_id, RunStatus.UNDONE, conflicts=[]),
    )
    assert [(r.run_id, r.undone) for r in runs] == [(first.run_id, False), (second.run_id, True)]
    row = parse(render_page(page(runs=runs))).one("tr", data_run_id=second.run_id)
    assert "undone" in row.all_text()


def test_a_line_with_few_fields_shows_what_it_has(tmp_path: Path) -> None:
    """Only the required run id and a few fields: no plan, no storage, no times."""
    run_id = "20261101T030000Z-abcdef"
    line = {"run_id": run_id, "status": "failed", "errors": ["GC <failed>"]}
    (tmp_path / "runs.jsonl").write_text(json.dumps(line) + "\n")
    [run] = runs_of_history(read_history(tmp_path))
    assert run.storage_bytes is None and run.bytes_reclaimed == 0 and run.started_at is None
    html = render_page(page(runs=[run]))
    row = parse(html).one("tr", data_run_id=run_id)
    assert "GC <failed>" in row.all_text() and "GC <failed>" not in html


def test_no_runs_and_no_plan_yet() -> None:
    doc = parse(render_page(page()))
    assert doc.find_all(id="chart-empty") and doc.find_all(id="runs-empty")
    assert doc.find_all(id="plan-empty")
    assert doc.find_all("svg") == []


def test_an_unreadable_history_is_said_instead_of_the_runs() -> None:
    doc = parse(render_page(page(history_error="/s/runs.jsonl line 3 is not <a run record>")))
    assert doc.one(id="history-error").all_text() == "/s/runs.jsonl line 3 is not <a run record>"
    assert doc.find_all("svg") == [] and doc.find_all(id="runs") == []


# -- the plan ------------------------------------------------------------------------------------


def test_the_plan_per_repository_kept_deleted_and_bytes() -> None:
    view = a_plan()
    doc = parse(render_page(page(plan=view)))
    rows = doc.one("table", id="plan").find_all("tr", data_repository="*")
    got = {
        r.attrs["data-repository"]: {
            c.attrs["data-field"]: int(c.attrs["data-value"] or -1)
            for c in r.find_all("td")
            if "data-field" in c.attrs
        }
        for r in rows
    }
    hostile = HOSTILE.replace("\x1b", "\\x1b")  # printable, as on every page retentiond writes
    assert got == {
        "app": {
            "tags": 2,
            "tags_kept": 1,
            "tags_deleted": 1,
            "manifests_unlinked": 1,
            "bytes_reclaimed": 100 + 10 + 5000,
        },
        hostile: {
            "tags": 1,
            "tags_kept": 1,
            "tags_deleted": 0,
            "manifests_unlinked": 0,
            "bytes_reclaimed": 0,
        },
    }
    # the most bytes first
    assert [r.attrs["data-repository"] for r in rows] == ["app", hostile]
    assert doc.one(id="card-reclaimable").attrs["data-value"] == str(view.bytes_reclaimed)
    assert doc.one(id="card-storage").attrs["data-value"] == str(view.storage_bytes)
    assert view.storage_bytes == 3 * 100 + 3 * 10 + 5000 + 300 + 40


def test_last_plan_json_lists_every_repository() -> None:
    rows = {r["repository"]: r for r in repositories_json(a_plan())}
    assert len(rows) == 2
    assert rows["app"] == {
        "repository": "app",
        "tags": 2,
        "tags_kept": 1,
        "tags_deleted": 1,
        "manifests_unlinked": 1,
        "bytes_reclaimed": 5110,
        "removed": False,
        "refused": False,
    }


def test_many_repositories_show_the_largest_and_count_the_rest() -> None:
    rows = tuple(
        RepositoryRow(f"r{n:04d}", tags=3, tags_deleted=1, manifests_unlinked=1, bytes_reclaimed=n)
        for n in range(REPOSITORIES_SHOWN + 25)
    )
    view = replace(a_plan(), rows=rows)
    doc = parse(render_page(page(plan=view)))
    shown = doc.one("table", id="plan").find_all("tr", data_repository="*")
    assert len(shown) == REPOSITORIES_SHOWN
    assert shown[0].attrs["data-repository"] == f"r{REPOSITORIES_SHOWN + 24:04d}"
    assert "25 more repositories" in doc.all_text()


# -- escaping ------------------------------------------------------------------------------------


def test_user_data_cannot_add_markup_anywhere() -> None:
    """A repository name, a run id and status, errors: all text, in text and attributes."""
    view = a_plan()
    run = RunView(
        run_id='x" onmouseover="alert(1)',
        status="<b>ok</b>",
        started_at=None,
        finished_at=None,
        tags_deleted=0,
        manifests_unlinked=0,
        repositories_removed=0,
        bytes_reclaimed=5,
        blobs_deleted=0,
        storage_bytes=None,
        errors=(HOSTILE,),
    )
    html = render_page(page(plan=view, runs=[run], last_error=HOSTILE))
    doc = parse(html)
    assert "<script" not in html and "\x1b" not in html and '" onmouseover' not in html
    assert doc.find_all("script") == [] and doc.find_all("b") == []
    [row] = doc.find_all("tr", data_run_id='x" onmouseover="alert(1)')
    assert row.attrs["data-status"] == "<b>ok</b>"
    assert set(row.attrs) == {"data-run-id", "data-status"}
    assert doc.one(id="last-error").all_text().endswith('<script>alert("x")</script>\\x1b[31m&amp;')


# -- the window and the rest ---------------------------------------------------------------------


def test_the_next_window_in_utc_and_in_its_zone() -> None:
    doc = parse(render_page(page()))
    next_window = doc.one(id="next-window")
    assert next_window.attrs["data-value"] == "2026-12-03T02:00:00Z"
    assert "2026-12-03 02:00:00\xa0UTC" in next_window.all_text()
    assert "2026-12-03 03:00 Europe/Paris" in next_window.all_text()
    assert "in 18h 30m" in doc.one(id="card-window").all_text()


def test_a_window_open_now_says_when_it_closes() -> None:
    open_page = page(window=window(open_until=NOW + timedelta(minutes=20)))
    assert "closes in 20m 00s" in parse(render_page(open_page)).one(id="card-window").all_text()
    closed = page(window=window(next_opening=None))
    assert "never opens again" in parse(render_page(closed)).one(id="card-window").all_text()


def test_running_maintenance_and_estimate_are_shown() -> None:
    doc = parse(render_page(page(maintenance_running=True, window=window(estimate_seconds=125))))
    assert doc.find_all(id="maintenance-running")
    assert "2m 05s" in doc.all_text()


def test_axis_steps_are_round_in_a_binary_unit() -> None:
    assert _axis(1) == (1, 1, "B", 1)
    assert _axis(3 * 1024**3 + 5) == (4 * 1024**3, 2 * 1024**3, "GiB", 1024**3)
    assert _axis(1000) == (1000, 500, "B", 1)
    top, step, unit, _ = _axis(57 * 1024**3)
    assert (top, step, unit) == (60 * 1024**3, 20 * 1024**3, "GiB")
    assert top >= 57 * 1024**3 and top // step <= 4


def test_seconds_for_people() -> None:
    assert [human_seconds(s) for s in (0.42, 12.5, 185, 7800, 90000)] == [
        "0.42 s",
        "12.5 s",
        "3m 05s",
        "2h 10m",
        "1d 1h",
    ]
