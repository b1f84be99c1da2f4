"""The status page (`GET /` of `retentiond serve`) in a real browser: Debian's chromium,
headless, against `serve` running a real maintenance on a real registry, with a runs.jsonl that
already holds earlier runs.

What chromium built from the page is compared with the files it was made from: every run of
runs.jsonl (its table row and its chart bars), the last plan per repository (last-plan.json,
and the total against `retentiond plan --json` on the same tree), the next window (from the
schedule, computed here). A screenshot is taken too (tmp_path/status.png): the page as people
see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retentiond.run_records import DURATION_PHASES, HistoryMark, RunRecord, RunStatus
from retentiond.state import append_history
from tests.harness.browser import Element, dump_dom, parse, screenshot
from tests.harness.images import push_oci_image
from tests.harness.registry import RunningRegistry
from tests.harness.tree import set_pushed_at
from tests.integration.test_serve import REPO_ROOT, Served, old_and_latest, wait_for
from tests.integration.test_serve import served as served  # the fixture

EVERY_REPOSITORY_KEEPS_LATEST = """
    policies:
      - name: latest-only
        repositories: ["**"]
        keep: {tags: ["latest"]}
"""


def earlier_runs(now: datetime) -> list[RunRecord]:
    """Three runs before this test's, as an earlier serve appended them."""
    records = []
    for n in range(3):
        started = now - timedelta(days=3 - n)
        records.append(
            RunRecord(
                run_id=started.strftime("%Y%m%dT%H%M%SZ") + f"-00000{n}",
                status=RunStatus.OK if n != 1 else RunStatus.FAILED,
                started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                finished_at=(started + timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                plan={"bytes_reclaimed": 4096 * (n + 1), "storage_bytes": 90_000 - 5_000 * n},
                removed={"tags": 2 + n, "manifests": 1, "repositories": 0},
                bytes_reclaimed=4096 * (n + 1) if n != 1 else 0,
                blobs_deleted=3,
                durations={"plan": 0.25, "delete": 0.05, "gc": 1.5 + n, "restart": 2.0},
                read_only_seconds=4.75 + n,
                errors=["the GC exited with 1"] if n == 1 else [],
                gc_ran=n != 1,
                blob_count_before=40,
            )
        )
    return records


def cells(row: Element) -> dict[str, str | None]:
    return {
        c.attr("data-field"): c.attrs.get("data-value")
        for c in row.find_all("td")
        if "data-field" in c.attrs
    }


def plan_json(s: Served) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(s.config), "plan", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_status_page_in_chromium_shows_what_runs_jsonl_and_the_plan_say(
    registry: RunningRegistry, served: Callable[..., Served], tmp_path: Path
) -> None:
    old_and_latest(registry)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # a window that opened this minute (so the maintenance runs at start) and opens next
    # tomorrow at the same time: no other maintenance during the test
    s = served(
        window=f"{now.minute} {now.hour} * * *",
        window_length="10m",
        policy=EVERY_REPOSITORY_KEEPS_LATEST,
    )
    earlier = earlier_runs(now)
    for record in earlier:
        append_history(s.state, record.to_json())
    append_history(s.state, HistoryMark(earlier[0].run_id, RunStatus.PURGED).to_json())
    s.start()
    wait_for("this test's maintenance run", lambda: len(s.history()) > len(earlier) + 1)
    [this_run] = s.history()[len(earlier) + 1 :]
    assert this_run["status"] == "ok", this_run
    assert this_run["plan"]["storage_bytes"] > 0 and this_run["bytes_reclaimed"] > 0

    # after the run: a repository with a tag to delete, for the plan's table
    push_oci_image(registry, "web", "latest", layers=[b"web latest"], seed="web-latest")
    push_oci_image(registry, "web", "stale", layers=[b"web stale" * 3000], seed="web-stale")
    set_pushed_at(registry.root, "web", "stale", now - timedelta(days=5))

    def plan_with_web() -> dict[str, Any] | None:
        path = s.state / "last-plan.json"
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        web = [r for r in saved.get("per_repository", []) if r["repository"] == "web"]
        return saved if web and web[0]["tags"] == 2 and web[0]["tags_deleted"] == 1 else None

    last_plan = wait_for("a plan that sees web:stale", plan_with_web, 60)

    url = f"http://127.0.0.1:{s.port}/"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src" not in response.headers["Content-Security-Policy"]
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    doc = parse(dump_dom(url))
    assert doc.one("head").one("title").all_text() == "retentiond status"

    # every run of runs.jsonl, newest first; the purged mark is not a run
    history = [r for r in s.history() if r["status"] != "purged"]
    assert len(history) == 4
    rows = doc.one("table", id="runs").find_all("tr", data_run_id="*")
    assert [r.attr("data-run-id") for r in rows] == [r["run_id"] for r in reversed(history)]
    for row, run in zip(rows, reversed(history), strict=True):
        got = cells(row)
        assert row.attr("data-status") == run["status"]
        assert int(got["tags_deleted"] or -1) == run["removed"]["tags"]
        assert int(got["manifests_unlinked"] or -1) == run["removed"]["manifests"]
        assert int(got["bytes_reclaimed"] or -1) == run["bytes_reclaimed"]
        assert float(got["read_only_seconds"] or -1) == run["read_only_seconds"]
        for phase in DURATION_PHASES:
            value = got[f"duration_{phase}"]
            assert (float(value) if value is not None else None) == run["durations"].get(phase)
    assert "the GC exited with 1" in rows[2].all_text()
    # this run timed every phase
    assert all(cells(rows[0])[f"duration_{p}"] is not None for p in DURATION_PHASES)

    # the chart: a bar group per run, oldest first, with its storage and reclaimed bytes
    groups = doc.one("svg", id="chart").find_all("g", data_run_id="*")
    assert [
        (
            g.attr("data-run-id"),
            int(g.attr("data-storage-bytes")),
            int(g.attr("data-bytes-reclaimed")),
        )
        for g in groups
    ] == [(r["run_id"], r["plan"]["storage_bytes"], r["bytes_reclaimed"]) for r in history]
    assert all(g.find_all("rect", **{"class": "storage"}) for g in groups)

    # the last plan, per repository, as last-plan.json has it
    plan_rows = doc.one("table", id="plan").find_all("tr", data_repository="*")
    shown = {
        r.attr("data-repository"): {k: int(v or -1) for k, v in cells(r).items()} for r in plan_rows
    }
    fields = ("tags", "tags_kept", "tags_deleted", "manifests_unlinked", "bytes_reclaimed")
    assert shown == {
        r["repository"]: {k: r[k] for k in fields} for r in last_plan["per_repository"]
    }
    assert set(shown) == {"app", "web"}
    assert shown["app"]["tags"] == 1 and shown["app"]["tags_deleted"] == 0
    assert shown["web"]["tags_kept"] == 1 and shown["web"]["bytes_reclaimed"] > 3 * 9000
    # and the totals as `retentiond plan --json` computes them on the same tree
    summary = plan_json(s)["summary"]
    assert int(doc.one(id="card-reclaimable").attr("data-value")) == summary["bytes_reclaimed"]
    assert int(doc.one(id="card-tags").attr("data-value")) == summary["tags_deleted"] == 1
    assert int(doc.one(id="card-storage").attr("data-value")) == last_plan["storage_bytes"]

    # the window: open now (the test's), the next one tomorrow at the same time
    assert "open now" in doc.one(id="card-window").all_text()
    next_opening = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc.one(id="next-window").attr("data-value") == next_opening
    assert int(doc.one(id="policies").attr("data-value")) == 1

    shot = screenshot(url, tmp_path / "status.png")
    assert shot.stat().st_size > 20_000  # a page, not a blank window
    print(f"screenshot: {shot}")
    assert s.stop() == 0
