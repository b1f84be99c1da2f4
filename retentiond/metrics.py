"""The Prometheus metrics of ``retentiond serve``, owning their own ``CollectorRegistry``.

Every metric of the contract's table is defined here, with the ``retentiond_`` prefix, and
nowhere else. The daemon never touches a metric object: it calls one ``observe_*`` method per
event, so what a metric means is decided in this module and tested against a fresh registry.

Series that alerts depend on exist from the start (``absent()`` is painful to alert on, and a
counter series that appears already at 1 hides its first increase from ``increase()``):

- ``job_failures_total{task}`` and ``last_success_timestamp_seconds{task}`` for every job in
  :data:`JOBS`; the timestamps start at the daemon's start time, so "no success for two
  windows" fires for a daemon that never succeeds, but not at its first start.
  :meth:`Metrics.observe_history` replaces that with the last successful run on disk.
- ``windows_skipped_total{reason}`` for every reason in :data:`WINDOW_SKIP_REASONS`.
- ``deleted_tags_total{policy}`` and ``unlinked_manifests_total{policy}`` for every policy
  named to :meth:`Metrics.observe_reload`.
- ``maintenance_duration_seconds{phase}`` for every timed part of a run in
  :data:`~retentiond.run_records.DURATION_PHASES` (the keys of a run record's ``durations``;
  not the journal's :class:`~retentiond.run_records.Phase`).

``maintenance_duration_seconds`` has one phase more than the contract lists: ``clean`` (removing
the directories and links the GC leaves behind, after it). It is kept apart from ``gc`` so that
``gc`` is the registry's own ``garbage-collect`` time, the number that decides whether a
maintenance fits its window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from retentiond.core.plan_types import Plan
from retentiond.run_records import DURATION_PHASES, HistoryEntry, RunRecord, RunStatus

PREFIX = "retentiond_"

#: The scheduler's jobs: values of the ``task`` label of ``job_failures_total`` and
#: ``last_success_...``. The label is not called ``job``: Prometheus adds its own ``job`` label
#: (the scrape job) to every series and would store ours as ``exported_job``.
JOBS = ("plan", "maintenance", "verify")

#: Why a maintenance window was skipped: label values of ``windows_skipped_total``.
SKIP_NOT_ENOUGH_TIME = "not_enough_time"  # the estimated run would not end inside the window
SKIP_PLAN_REFUSED = "plan_refused"  # the plan was refused (gc_blocked, mass delete, problems)
SKIP_REGISTRY_UNHEALTHY = "registry_unhealthy"  # the registry did not answer, or runtime check
SKIP_BUSY = "busy"  # another run holds the lock (an `apply` by hand)
SKIP_PROTECTION_UNAVAILABLE = "protection_unavailable"  # a protect: source could not be read
WINDOW_SKIP_REASONS = (
    SKIP_NOT_ENOUGH_TIME,
    SKIP_PLAN_REFUSED,
    SKIP_REGISTRY_UNHEALTHY,
    SKIP_BUSY,
    SKIP_PROTECTION_UNAVAILABLE,
)

#: Label value for unlinked manifests that no policy is credited with (the child manifests of
#: a deleted multi-arch index, for instance).
NO_POLICY = "(none)"

#: Run statuses that count as a successful maintenance (``ok`` includes a GC held for
#: ``safety.grace``; ``nothing-to-do`` is a maintenance that found nothing to remove).
SUCCESS_STATUSES = (RunStatus.OK, RunStatus.NOTHING_TO_DO)

#: Run statuses whose removals were put back, so nothing they list was removed.
ROLLED_BACK_STATUSES = (RunStatus.ROLLED_BACK, RunStatus.CANCELLED)

#: Seconds to hours: a phase takes from under a second (plan on a small tree) to hours (GC of
#: a large filesystem registry).
DURATION_BUCKETS = (
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    28800,
    float("inf"),
)


class Metrics:
    """Every retentiond metric, registered in ``registry`` (a fresh one when not given).

    ``clock`` returns Unix time in seconds; it stamps the start values of the
    ``last_success_timestamp_seconds`` gauges and any event observed without ``now``.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        r = self.registry

        # what maintenance runs removed
        self.reclaimed_bytes = Counter(
            PREFIX + "reclaimed_bytes_total",
            "Bytes of blob data actually removed by maintenance runs.",
            registry=r,
        )
        self.deleted_tags = Counter(
            PREFIX + "deleted_tags_total",
            "Tags deleted by maintenance runs, by the policy that deleted them.",
            ["policy"],
            registry=r,
        )
        self.unlinked_manifests = Counter(
            PREFIX + "unlinked_manifests_total",
            "Manifests unlinked by maintenance runs, by policy "
            f"({NO_POLICY!r}: not credited to one, e.g. children of a deleted index).",
            ["policy"],
            registry=r,
        )
        self.deleted_blobs = Counter(
            PREFIX + "deleted_blobs_total",
            "Blobs the registry's garbage collector deleted during maintenance runs.",
            registry=r,
        )
        self.removed_repositories = Counter(
            PREFIX + "removed_repositories_total",
            "Repositories removed as a whole by maintenance runs (allow_empty).",
            registry=r,
        )

        # jobs
        self.job_failures = Counter(
            PREFIX + "job_failures_total",
            "Scheduled jobs that failed, by task (plan, maintenance, verify).",
            ["task"],
            registry=r,
        )
        self.last_success = Gauge(
            PREFIX + "last_success_timestamp_seconds",
            "Unix time of the last successful job, by task; the daemon's start time until then.",
            ["task"],
            registry=r,
        )
        self.windows_skipped = Counter(
            PREFIX + "windows_skipped_total",
            "Maintenance windows in which no maintenance ran, by reason.",
            ["reason"],
            registry=r,
        )
        self.maintenance_duration = Histogram(
            PREFIX + "maintenance_duration_seconds",
            "Time spent in each phase of a maintenance run "
            "(plan, delete, gc, clean, restart, verify).",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )

        # the latest plan and the tree
        self.planned_reclaimable_bytes = Gauge(
            PREFIX + "planned_reclaimable_bytes",
            "Bytes the registry's GC would free after the removals of the latest plan.",
            registry=r,
        )
        self.planned_tags = Gauge(
            PREFIX + "planned_tags",
            "Tags the latest plan would delete.",
            registry=r,
        )
        self.protected_tags = Gauge(
            PREFIX + "protected_tags",
            "Tags whose image is in use (protect:), never deleted, as of the latest plan.",
            registry=r,
        )
        self.storage_bytes = Gauge(
            PREFIX + "storage_bytes",
            "Bytes of blob data in the registry's storage tree, as last read.",
            registry=r,
        )
        self.storage_blobs = Gauge(
            PREFIX + "storage_blobs",
            "Blobs in the registry's storage tree, as last read.",
            registry=r,
        )
        self.tags = Gauge(
            PREFIX + "tags",
            "Tags in the registry's storage tree, as last read.",
            registry=r,
        )

        # the last maintenance, verification and policies
        self.registry_read_only = Gauge(
            PREFIX + "registry_read_only_seconds",
            "During the last maintenance: seconds the registry refused writes.",
            registry=r,
        )
        self.registry_unavailable = Gauge(
            PREFIX + "registry_unavailable_seconds",
            "During the last maintenance: seconds the registry refused all requests.",
            registry=r,
        )
        self.broken_tags = Gauge(
            PREFIX + "broken_tags",
            "Tags that do not resolve to complete images, as last verified.",
            registry=r,
        )
        self.policies_loaded = Gauge(
            PREFIX + "policies_loaded",
            "Policies in force (a failed reload keeps the last good ones).",
            registry=r,
        )
        self.policy_reload_failures = Counter(
            PREFIX + "policy_reload_failures_total",
            "Policy reloads rejected because a policy file was invalid.",
            registry=r,
        )
        self.notify_failures = Counter(
            PREFIX + "notify_failures_total",
            "Webhooks (notify.webhooks) that failed after a maintenance run: no connection, no"
            " answer in time, or an answer other than 2xx.",
            registry=r,
        )
        # pull tracking (retentiond.pulls)
        self.pull_events = Counter(
            PREFIX + "pull_events_total",
            "Manifest pulls received from the registry's notifications (blob pulls and "
            "retentiond's own requests are not counted).",
            registry=r,
        )

        started = self.clock()
        for job in JOBS:
            self.job_failures.labels(task=job)
            self.last_success.labels(task=job).set(started)
        for reason in WINDOW_SKIP_REASONS:
            self.windows_skipped.labels(reason=reason)
        for phase in DURATION_PHASES:
            self.maintenance_duration.labels(phase=phase)

    # -- events -----------------------------------------------------------------------------------

    def observe_plan(
        self,
        plan: Plan,
        inventory_tags: int,
        storage_bytes: int,
        storage_blobs: int,
        now: float,
    ) -> None:
        """A plan job succeeded: the planned and storage gauges, and the plan's last success."""
        self.planned_reclaimable_bytes.set(plan.bytes_reclaimed)
        self.planned_tags.set(len(plan.tags_deleted))
        self.protected_tags.set(plan.protected_tags)
        self.tags.set(inventory_tags)
        self.storage_bytes.set(storage_bytes)
        self.storage_blobs.set(storage_blobs)
        self.last_success.labels(task="plan").set(now)

    def observe_run(self, record: RunRecord, *, now: float | None = None) -> None:
        """A maintenance run ended, with ``record`` (what it appended to ``runs.jsonl``).

        What it updates:

        - the removal counters, unless the run was rolled back or cancelled (its removals were
          put back) or its removals never completed (no ``delete`` duration in the record);
        - ``reclaimed_bytes_total`` and ``deleted_blobs_total`` by what the GC really deleted;
        - ``maintenance_duration_seconds{phase}`` once per timed part the run went through;
        - the read-only and unavailable gauges;
        - ``broken_tags``, when the run verified the registry;
        - ``last_success_timestamp_seconds{task="maintenance"}`` when the status is one of
          :data:`SUCCESS_STATUSES`, stamped ``now``, else the record's ``finished_at``, else
          the clock.

        It never counts a failure: the daemon calls :meth:`observe_failure` for a run that
        raised or ended ``failed``, so each failure is counted once.
        """
        durations = record.durations
        removed = record.status not in ROLLED_BACK_STATUSES and "delete" in durations
        if removed:
            by_policy = record.removed_by_policy
            for policy, count in by_policy.get("tags", {}).items():
                self.deleted_tags.labels(policy=policy or NO_POLICY).inc(count)
            for policy, count in by_policy.get("manifests", {}).items():
                self.unlinked_manifests.labels(policy=policy or NO_POLICY).inc(count)
            self.removed_repositories.inc(len(record.repositories_removed))
        self.reclaimed_bytes.inc(max(0, record.bytes_reclaimed))
        self.deleted_blobs.inc(max(0, record.blobs_deleted))
        for phase, seconds in durations.items():
            self.maintenance_duration.labels(phase=phase).observe(float(seconds))
        self.registry_read_only.set(float(record.read_only_seconds))
        self.registry_unavailable.set(float(record.unavailable_seconds))
        if "verify" in durations:
            self.broken_tags.set(len(record.broken))
        if record.status in SUCCESS_STATUSES:
            self._maintenance_succeeded(now if now is not None else _timestamp(record.finished_at))

    def observe_nothing_to_do(self, now: float | None = None) -> None:
        """A maintenance found nothing to remove (a success, with no record): stamped ``now``,
        else the clock."""
        self._maintenance_succeeded(now)

    def _maintenance_succeeded(self, when: float | None) -> None:
        self.last_success.labels(task="maintenance").set(when if when is not None else self.clock())

    def observe_history(self, records: Iterable[HistoryEntry]) -> None:
        """At start: the last successful maintenance in the run history (``state.read_history``)
        replaces the start time in ``last_success_timestamp_seconds{task="maintenance"}``, and
        the last run's read-only and unavailable seconds fill their gauges. No counter moves."""
        last_ok: float | None = None
        last_run: HistoryEntry | None = None
        for record in records:
            if record.status in (RunStatus.PURGED, None):
                continue
            last_run = record
            when = _timestamp(record.finished_at)
            if record.status in SUCCESS_STATUSES and when is not None:
                last_ok = when if last_ok is None else max(last_ok, when)
        if last_ok is not None:
            self.last_success.labels(task="maintenance").set(last_ok)
        if last_run is not None:
            self.registry_read_only.set(float(last_run.read_only_seconds or 0.0))
            self.registry_unavailable.set(float(last_run.unavailable_seconds or 0.0))

    def observe_failure(self, job: str) -> None:
        """A job (``plan``, ``maintenance``, ``verify``) failed; the scheduler goes on."""
        self.job_failures.labels(task=job).inc()

    def observe_reload(self, ok: bool, policies: int, names: Iterable[str] = ()) -> None:
        """A policy reload: accepted with ``policies`` policies (``names`` pre-creates their
        per-policy counters), or rejected, in which case the last good policies stay in force
        and ``policies_loaded`` keeps their number."""
        if not ok:
            self.policy_reload_failures.inc()
            return
        self.policies_loaded.set(policies)
        for name in names:
            self.deleted_tags.labels(policy=name)
            self.unlinked_manifests.labels(policy=name)

    def observe_notify_failure(self) -> None:
        """A webhook failed after a maintenance run (logged by the notifier)."""
        self.notify_failures.inc()

    def observe_pull_events(self, events: int) -> None:
        """``events`` manifest pulls received from the registry (queued for the store)."""
        self.pull_events.inc(events)

    def observe_window_skipped(self, reason: str) -> None:
        """A maintenance window passed without a run; ``reason`` is one of
        :data:`WINDOW_SKIP_REASONS` (another value makes a new series)."""
        self.windows_skipped.labels(reason=reason).inc()

    def observe_verify(self, broken: int, now: float) -> None:
        """A verify job finished: ``broken`` tags do not resolve to complete images."""
        self.broken_tags.set(broken)
        self.last_success.labels(task="verify").set(now)

    # -- exposition -------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format of every metric, for ``GET /metrics``
        (served with :attr:`content_type`)."""
        return generate_latest(self.registry)


def _timestamp(value: str | None) -> float | None:
    """Unix time of an ISO 8601 string such as ``2026-11-28T03:00:00Z``, or None."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
