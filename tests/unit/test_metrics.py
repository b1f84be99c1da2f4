"""Metrics: every metric of the contract exists with its type and labels, and each ``observe_*``
moves exactly the series it should. Each test reads a fresh ``CollectorRegistry`` back."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from retentiond.core.plan_types import ManifestUnlink, Plan, TagDeletion
from retentiond.metrics import (
    JOBS,
    NO_POLICY,
    WINDOW_SKIP_REASONS,
    Metrics,
)
from retentiond.run_records import (
    DURATION_PHASES,
    HistoryEntry,
    HistoryMark,
    RunRecord,
    RunStatus,
)

#: The contract's table ("Metrics" in the contract): name (without prefix) -> (type, labels).
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "reclaimed_bytes_total": ("counter", ()),
    "deleted_tags_total": ("counter", ("policy",)),
    "unlinked_manifests_total": ("counter", ("policy",)),
    "deleted_blobs_total": ("counter", ()),
    "removed_repositories_total": ("counter", ()),
    "job_failures_total": ("counter", ("task",)),
    "policy_reload_failures_total": ("counter", ()),
    "notify_failures_total": ("counter", ()),
    "pull_events_total": ("counter", ()),
    "windows_skipped_total": ("counter", ("reason",)),
    "planned_reclaimable_bytes": ("gauge", ()),
    "planned_tags": ("gauge", ()),
    "protected_tags": ("gauge", ()),
    "storage_bytes": ("gauge", ()),
    "storage_blobs": ("gauge", ()),
    "tags": ("gauge", ()),
    "last_success_timestamp_seconds": ("gauge", ("task",)),
    "registry_read_only_seconds": ("gauge", ()),
    "registry_unavailable_seconds": ("gauge", ()),
    "broken_tags": ("gauge", ()),
    "policies_loaded": ("gauge", ()),
    "maintenance_duration_seconds": ("histogram", ("phase",)),
}

START = 1_800_000_000.0
WHEN = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, clock=lambda: START)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value("retentiond_" + name, labels)


#: A run record as ``maintenance.finish_record`` writes it, for a run that went through.
RECORD = RunRecord(
    run_id="20261128T030000Z-abcdef",
    status=RunStatus.OK,
    started_at="2026-11-28T03:00:00Z",
    finished_at="2026-11-28T03:10:00Z",
    gc_mode="readonly",
    plan={"bytes_reclaimed": 3000},
    removed={"tags": 3, "manifests": 3, "repositories": 1},
    removed_by_policy={
        "tags": {"ci-builds": 2, "releases": 1},
        "manifests": {"ci-builds": 1, "": 1, "releases": 1},
    },
    repositories_removed=["ci/old"],
    bytes_reclaimed=3000,
    blobs_deleted=4,
    durations={"plan": 0.4, "delete": 0.1, "gc": 42.0, "clean": 0.2, "restart": 3.0, "verify": 1.5},
    read_only_seconds=47.5,
    unavailable_seconds=2.25,
    broken=[],
    errors=[],
    gc_ran=True,
    held_until=None,
    resumed=False,
    cleaned={},
)


def record(**changes: Any) -> RunRecord:
    """:data:`RECORD` with ``changes`` (a ``status`` given as its string)."""
    if "status" in changes:
        changes["status"] = RunStatus(changes["status"])
    return dataclasses.replace(RECORD, **changes)


def read_back(line: RunRecord | HistoryMark) -> HistoryEntry:
    """A history line as ``state.read_history`` reads it back from ``runs.jsonl``."""
    return HistoryEntry.from_json(json.loads(json.dumps(line.to_json(), sort_keys=True)))


def test_every_contract_metric_has_its_type_and_labels(registry: CollectorRegistry) -> None:
    """The exposition of a fresh Metrics, with one child per labelled metric, is the table."""
    metrics = Metrics(registry)
    metrics.observe_reload(True, 1, names=["p"])  # the policy-labelled counters get a child
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if not family.name.startswith("retentiond_") or family.name.endswith("_created"):
            continue  # *_created: prometheus_client's creation time of each counter/histogram
        name = family.name.removeprefix("retentiond_")
        if family.type == "counter":
            name += "_total"
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        found[name] = (family.type, tuple(sorted(labels)))
    assert found == EXPECTED


def test_series_alerts_need_exist_from_the_start(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    for job in JOBS:
        assert value(registry, "job_failures_total", task=job) == 0
        assert value(registry, "last_success_timestamp_seconds", task=job) == START
    for reason in WINDOW_SKIP_REASONS:
        assert value(registry, "windows_skipped_total", reason=reason) == 0
    for phase in DURATION_PHASES:
        assert value(registry, "maintenance_duration_seconds_count", phase=phase) == 0
    for name in (
        "reclaimed_bytes_total",
        "deleted_blobs_total",
        "removed_repositories_total",
        "policy_reload_failures_total",
        "notify_failures_total",
        "pull_events_total",
    ):
        assert value(registry, name) == 0
    for name in (
        "planned_reclaimable_bytes",
        "planned_tags",
        "storage_bytes",
        "storage_blobs",
        "tags",
        "registry_read_only_seconds",
        "registry_unavailable_seconds",
        "broken_tags",
        "policies_loaded",
    ):
        assert value(registry, name) == 0
    assert set(DURATION_PHASES) >= {"plan", "delete", "gc", "restart", "verify"}


def test_observe_plan_sets_the_planned_and_storage_gauges(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    plan = Plan(
        generated_at=WHEN,
        root="/var/lib/registry",
        repositories=2,
        tags=7,
        tags_deleted=(
            TagDeletion("ci/app", "pr-1", "sha256:aa", WHEN, "ci-builds", "old"),
            TagDeletion("ci/app", "pr-2", "sha256:bb", WHEN, "ci-builds", "old"),
        ),
        manifests_unlinked=(ManifestUnlink("ci/app", "sha256:aa", "unreachable", "ci-builds"),),
        repositories_removed=(),
        refused=(),
        reclaimable={"sha256:11": 1000, "sha256:22": 234},
    )
    metrics.observe_plan(plan, inventory_tags=7, storage_bytes=10_000, storage_blobs=12, now=99.0)
    assert value(registry, "planned_reclaimable_bytes") == 1234
    assert value(registry, "planned_tags") == 2
    assert value(registry, "tags") == 7
    assert value(registry, "storage_bytes") == 10_000
    assert value(registry, "storage_blobs") == 12
    assert value(registry, "last_success_timestamp_seconds", task="plan") == 99.0
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == START


def test_observe_run_counts_what_a_run_removed(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_run(record(), now=500.0)
    assert value(registry, "reclaimed_bytes_total") == 3000
    assert value(registry, "deleted_blobs_total") == 4
    assert value(registry, "removed_repositories_total") == 1
    assert value(registry, "deleted_tags_total", policy="ci-builds") == 2
    assert value(registry, "deleted_tags_total", policy="releases") == 1
    assert value(registry, "unlinked_manifests_total", policy="ci-builds") == 1
    assert value(registry, "unlinked_manifests_total", policy="releases") == 1
    assert value(registry, "unlinked_manifests_total", policy=NO_POLICY) == 1
    assert value(registry, "registry_read_only_seconds") == 47.5
    assert value(registry, "registry_unavailable_seconds") == 2.25
    assert value(registry, "broken_tags") == 0
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == 500.0
    assert value(registry, "job_failures_total", task="maintenance") == 0

    metrics.observe_run(record(), now=600.0)  # counters add up
    assert value(registry, "reclaimed_bytes_total") == 6000
    assert value(registry, "deleted_tags_total", policy="ci-builds") == 4


def test_observe_run_maps_each_duration_to_its_phase(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_run(record())
    for phase, seconds in record().durations.items():
        assert value(registry, "maintenance_duration_seconds_count", phase=phase) == 1
        assert value(registry, "maintenance_duration_seconds_sum", phase=phase) == seconds
    # 42 s of GC fall in the 60 s bucket, not the 30 s one
    assert value(registry, "maintenance_duration_seconds_bucket", phase="gc", le="30.0") == 0
    assert value(registry, "maintenance_duration_seconds_bucket", phase="gc", le="60.0") == 1
    # and hours are distinguished from each other
    assert value(registry, "maintenance_duration_seconds_bucket", phase="gc", le="7200.0") == 1


def test_observe_run_stamps_success_from_the_record_without_now(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_run(record(finished_at="2026-11-28T03:10:00Z"))
    expected = datetime(2026, 11, 28, 3, 10, tzinfo=UTC).timestamp()
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == expected


def test_a_failed_run_after_its_removals_counts_them_but_is_no_success(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    broken = ["ci/app:main: manifest blob missing", "ci/app:v1: layer missing"]
    metrics.observe_run(record(status="failed", broken=broken), now=700.0)
    assert value(registry, "deleted_tags_total", policy="ci-builds") == 2
    assert value(registry, "broken_tags") == 2
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == START
    # counting the failure is the daemon's call, once
    assert value(registry, "job_failures_total", task="maintenance") == 0


@pytest.mark.parametrize("status", ["rolled-back", "cancelled"])
def test_removals_that_were_put_back_are_not_counted(
    metrics: Metrics, registry: CollectorRegistry, status: str
) -> None:
    metrics.observe_run(record(status=status, bytes_reclaimed=0, blobs_deleted=0))
    assert value(registry, "deleted_tags_total", policy="ci-builds") is None
    assert value(registry, "removed_repositories_total") == 0
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == START


def test_a_run_that_failed_before_its_removals_completed_counts_none(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """The plan's removals are in the record once planned; without a ``delete`` duration they
    were not all made and were put back."""
    metrics.observe_run(
        record(
            status="failed",
            durations={"plan": 0.3},
            bytes_reclaimed=0,
            blobs_deleted=0,
            read_only_seconds=1.0,
            unavailable_seconds=0.5,
        )
    )
    assert value(registry, "deleted_tags_total", policy="ci-builds") is None
    assert value(registry, "unlinked_manifests_total", policy="ci-builds") is None
    assert value(registry, "removed_repositories_total") == 0
    assert value(registry, "maintenance_duration_seconds_count", phase="plan") == 1
    assert value(registry, "maintenance_duration_seconds_count", phase="gc") == 0
    assert value(registry, "registry_read_only_seconds") == 1.0


def test_nothing_to_do_is_a_success(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_nothing_to_do(now=800.0)
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == 800.0
    assert value(registry, "reclaimed_bytes_total") == 0
    assert value(registry, "broken_tags") == 0


def test_observe_history_restores_the_last_success(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_history(
        [
            read_back(record(finished_at="2026-11-01T03:10:00Z")),
            read_back(
                record(
                    status="failed",
                    finished_at="2026-11-08T03:10:00Z",
                    read_only_seconds=9.0,
                    unavailable_seconds=1.0,
                )
            ),
            read_back(HistoryMark("20261101T030000Z-abcdef", RunStatus.PURGED)),
        ]
    )
    expected = datetime(2026, 11, 1, 3, 10, tzinfo=UTC).timestamp()
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == expected
    assert value(registry, "registry_read_only_seconds") == 9.0
    assert value(registry, "registry_unavailable_seconds") == 1.0
    assert value(registry, "reclaimed_bytes_total") == 0  # no counter moves


def test_observe_history_without_a_success_keeps_the_start_time(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_history([read_back(record(status="failed"))])
    assert value(registry, "last_success_timestamp_seconds", task="maintenance") == START


def test_observe_failure_counts_per_job(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_failure("maintenance")
    metrics.observe_failure("maintenance")
    metrics.observe_failure("plan")
    assert value(registry, "job_failures_total", task="maintenance") == 2
    assert value(registry, "job_failures_total", task="plan") == 1
    assert value(registry, "job_failures_total", task="verify") == 0


def test_observe_reload(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_reload(True, 3, names=["ci-builds", "releases", "base-images"])
    assert value(registry, "policies_loaded") == 3
    assert value(registry, "deleted_tags_total", policy="base-images") == 0
    assert value(registry, "unlinked_manifests_total", policy="releases") == 0
    metrics.observe_reload(False, 0)  # rejected: the last good policies stay in force
    assert value(registry, "policies_loaded") == 3
    assert value(registry, "policy_reload_failures_total") == 1


def test_observe_window_skipped(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_window_skipped("not_enough_time")
    metrics.observe_window_skipped("something new")
    assert value(registry, "windows_skipped_total", reason="not_enough_time") == 1
    assert value(registry, "windows_skipped_total", reason="plan_refused") == 0
    assert value(registry, "windows_skipped_total", reason="something new") == 1


def test_observe_notify_failure(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_notify_failure()
    metrics.observe_notify_failure()
    assert value(registry, "notify_failures_total") == 2


def test_observe_verify(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_verify(3, now=900.0)
    assert value(registry, "broken_tags") == 3
    assert value(registry, "last_success_timestamp_seconds", task="verify") == 900.0
    metrics.observe_verify(0, now=950.0)
    assert value(registry, "broken_tags") == 0


def test_render_is_the_exposition_format(metrics: Metrics) -> None:
    metrics.observe_run(record(), now=500.0)
    text = metrics.render().decode()
    assert "# TYPE retentiond_reclaimed_bytes_total counter" in text
    assert "retentiond_reclaimed_bytes_total 3000.0" in text
    assert 'retentiond_deleted_tags_total{policy="ci-builds"} 2.0' in text
    assert metrics.content_type.startswith("text/plain")
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert "retentiond_maintenance_duration_seconds" in parsed


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_failure("plan")
    assert second.registry.get_sample_value("retentiond_job_failures_total", {"task": "plan"}) == 0
