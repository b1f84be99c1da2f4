"""``retentiond serve``: plan on a schedule, maintain inside windows, serve metrics and status.

Threads: the main thread waits for signals; an apscheduler ``BackgroundScheduler`` with one
worker runs the jobs one at a time (plan, maintenance, policy watch); a small HTTP server
answers ``/`` (the status page, :mod:`retentiond.status_page`), ``/metrics``, ``/healthz``,
``/readyz`` and ``/status``.

A window is a cron time plus ``window_length``. A maintenance starts only inside a window, and
only when the run is expected to finish inside it (estimated from earlier runs, scaled by the
number of blobs its preview counted: the daemon reads no tree of its own for it, in its own
process); a window missed while the daemon was down is not run late, except when the daemon
starts inside it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from retentiond.config import Config, RuntimeKind, split_listen
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.errors import ConfigError, ProtectionUnavailable, RetentiondError, StorageError
from retentiond.logs import get_logger
from retentiond.maintenance import RunResult, WindowSkipped, run_maintenance
from retentiond.metrics import (
    SKIP_BUSY,
    SKIP_NOT_ENOUGH_TIME,
    SKIP_PLAN_REFUSED,
    SKIP_PROTECTION_UNAVAILABLE,
    SKIP_REGISTRY_UNHEALTHY,
    Metrics,
)
from retentiond.notify.webhooks import WebhookNotifier
from retentiond.policy.loader import expand_paths, load_policies
from retentiond.policy.model import OrderBy, Policy
from retentiond.preview import Preview
from retentiond.protection import protection_reader
from retentiond.pulls.listener import PullListener, pull_listener
from retentiond.pulls.store import read_pull_times
from retentiond.recovery import recover_interrupted
from retentiond.registry import RegistryClient
from retentiond.render import iso, plan_summary
from retentiond.run_phases import Cancelled, MaintenanceServices
from retentiond.run_records import RunRecord, RunStatus
from retentiond.runtime.base import Runtime
from retentiond.state import Busy, read_history, run_lock, write_atomic
from retentiond.status_page import (
    PlanView,
    StatusPage,
    WindowView,
    plan_view,
    render_page,
    repositories_json,
    runs_of_history,
)
from retentiond.storage.reader import check_storage, read_inventory
from retentiond.windows import estimate_seconds, next_opening, seconds_left, window_bounds

#: what the status page may load: its own inline style, nothing else (no script at all)
STATUS_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


@dataclass
class DaemonState:
    """What /status and /readyz report; written by jobs, read by the HTTP threads."""

    started_at: datetime
    last_plan: dict[str, Any] | None = None
    last_run: RunRecord | None = None
    last_error: str | None = None
    maintenance_running: bool = False
    policies: int = 0
    policy_files: dict[str, float] = field(default_factory=dict)
    #: the last plan as the status page shows it (with its repositories)
    plan_view: PlanView | None = None


class Daemon:
    def __init__(
        self,
        config: Config,
        policies: list[Policy],
        runtime: Runtime,
        registry: RegistryClient,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.policies = policies
        self.runtime = runtime
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.log = get_logger(job="serve")
        self.state = DaemonState(started_at=clock(), policies=len(policies))
        self.state.policy_files = self._policy_mtimes()
        self.stop_requested = threading.Event()
        self.jobs_lock = threading.Lock()
        self.tz = ZoneInfo(config.schedule.timezone)
        self.window = CronTrigger.from_crontab(config.schedule.window, timezone=self.tz)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone=self.tz,
        )
        self.http: ThreadingHTTPServer | None = None
        self.pulls: PullListener | None = None  # pulls.listen: the registry's notifications
        #: reads the images in use (protect:) each time it is called
        self.read_protection = protection_reader(config.protect)
        metrics.observe_reload(True, len(policies), [p.name for p in policies])
        metrics.observe_history(read_history(config.state_dir))

    # -- policies ---------------------------------------------------------------------------

    def _policy_mtimes(self) -> dict[str, float]:
        files, _, _ = expand_paths(list(self.config.policies))
        out: dict[str, float] = {}
        for path in files:
            try:
                out[str(path)] = path.stat().st_mtime
            except OSError:
                out[str(path)] = -1.0
        return out

    def reload_policies(self, reason: str) -> bool:
        """Load the policies again; an invalid edit keeps the last good ones in force."""
        try:
            policies = load_policies(list(self.config.policies))
        except ConfigError as exc:
            self.metrics.observe_reload(False, len(self.policies))
            self.log.error(
                "policy reload rejected; the last good policies stay in force",
                reason=reason,
                problems=[str(p) for p in exc.problems],
            )
            return False
        self.policies = policies
        self.state.policies = len(policies)
        self.metrics.observe_reload(True, len(policies), [p.name for p in policies])
        self.log.info("policies reloaded", reason=reason, policies=len(policies))
        return True

    def watch_policies(self) -> None:
        mtimes = self._policy_mtimes()
        if mtimes != self.state.policy_files:
            self.state.policy_files = mtimes
            self.reload_policies("files changed")

    # -- jobs ---------------------------------------------------------------------------------

    def services(self) -> MaintenanceServices:
        """What a maintenance run works with, the policies in force now."""
        return MaintenanceServices(
            self.config,
            self.policies,
            self.runtime,
            self.registry,
            clock=self.clock,
            cancelled=self.stop_requested.is_set,
            notify=WebhookNotifier(
                self.config.notify.webhooks,
                registry_url=self.config.registry.url,
                on_failure=self.metrics.observe_notify_failure,
            ),
            protection=self.read_protection,
        )

    def guarded(self, job: str, fn: Callable[[], object]) -> Callable[[], None]:
        """A job that logs and counts an unexpected error instead of losing it in apscheduler."""

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                self.metrics.observe_failure(job)
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                self.log.exception("internal error in a job (a bug; please report it)", job=job)

        return run

    def plan_job(self) -> Plan | None:
        with self.jobs_lock:
            started = time.monotonic()
            try:
                inventory = read_inventory(
                    self.config.registry.location,
                    read_created=any(p.order_by is OrderBy.CREATED for p in self.policies),
                )
                protection = self.read_protection()
                plan = make_plan(
                    inventory,
                    self.policies,
                    self.config.safety,
                    self.clock(),
                    gc_reads_schema1=self.runtime.registry_major() != 3,
                    pulls=read_pull_times(self.config.pulls, self.config.state_dir),
                    protected=protection,
                )
            except RetentiondError as exc:
                self.metrics.observe_failure("plan")
                self.state.last_error = str(exc)
                self.log.error("plan failed", error=str(exc))
                return None
            tags = sum(len(r.tags) for r in inventory.repositories)
            self.metrics.observe_plan(
                plan, tags, inventory.storage_bytes, len(inventory.blobs), time.time()
            )
            summary = {
                **plan_summary(plan),
                "generated_at": iso(plan.generated_at),
                "gc_blocked": plan.gc_blocked,
                "blobs": len(inventory.blobs),
                "storage_bytes": inventory.storage_bytes,
                "protected_tags": plan.protected_tags,
                "protection_problems": list(plan.protection_problems),
            }
            self.state.last_plan = summary
            view = self.state.plan_view = plan_view(
                plan, len(inventory.blobs), inventory.storage_bytes
            )
            saved = {**summary, "per_repository": repositories_json(view)}
            try:
                write_atomic(self.config.state_dir / "last-plan.json", json.dumps(saved).encode())
            except RetentiondError as exc:
                self.log.warning("cannot save the last plan", error=str(exc))
            self.log.info("plan", seconds=round(time.monotonic() - started, 3), **summary)
            return plan

    def window_bounds(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The window ``now`` falls in, as (opened, closes), or None (see retentiond.windows)."""
        return window_bounds(self.window, self.config.schedule.window_length, self.tz, now)

    def maintenance_job(self) -> None:
        now = self.clock()
        bounds = self.window_bounds(now)
        if bounds is None:
            self.log.info("no maintenance window open now")
            return
        closes = bounds[1]
        with self.jobs_lock:
            self._maintain(closes)

    def _skip(self, reason: str, **fields: Any) -> None:
        self.metrics.observe_window_skipped(reason)
        self.log.warning("maintenance window skipped", reason=reason, **fields)

    def _maintain(self, closes: datetime) -> None:
        if not self.registry.answering():
            self._skip(SKIP_REGISTRY_UNHEALTHY, url=self.registry.url)
            return
        protection = self.read_protection()
        if not protection.available:
            self._skip(SKIP_PROTECTION_UNAVAILABLE, problems=list(protection.problems))
            return
        self.state.maintenance_running = True
        try:
            with run_lock(self.config.state_dir):
                services = self.services()
                self._observe(recover_interrupted(services))
                result = run_maintenance(services, admit=lambda p: self._admit(p, closes))
            if result.record is not None:
                self.metrics.observe_run(result.record)
                self.state.last_run = result.record
                self.metrics.observe_verify(len(result.broken), time.time())
            else:
                self.metrics.observe_nothing_to_do()
            if result.status not in (RunStatus.OK, RunStatus.NOTHING_TO_DO):
                self.metrics.observe_failure("maintenance")
        except WindowSkipped as exc:
            self._skip(exc.reason, **exc.fields)
        except Cancelled:
            self.log.warning("maintenance stopped by signal; the registry is read-write")
        except Busy as exc:
            self._skip(SKIP_BUSY, error=str(exc))
        except ProtectionUnavailable as exc:  # a source failed between the check and the run
            self._skip(SKIP_PROTECTION_UNAVAILABLE, error=str(exc))
        except RetentiondError as exc:
            self.metrics.observe_failure("maintenance")
            self.state.last_error = str(exc)
            self.log.error("maintenance failed", error=str(exc))
        finally:
            self.state.maintenance_running = False

    def _admit(self, preview: Preview, closes: datetime) -> None:
        """Whether the run the preview describes may start now (raises
        :class:`WindowSkipped` if not): the registry's GC would not abort on the tree, and
        the run is expected to end before the window ``closes``. Called by
        :func:`run_maintenance` after its preview (a child process), before the freeze: the
        daemon reads no tree of its own for this."""
        if preview.gc_blocked:
            raise WindowSkipped(SKIP_PLAN_REFUSED, problems=list(preview.gc_problems)[:5])
        reclaimable = int(preview.summary["blobs_reclaimed"])
        estimate = estimate_seconds(read_history(self.config.state_dir), preview.blobs, reclaimable)
        left = seconds_left(closes, self.clock())
        if estimate > left:
            raise WindowSkipped(
                SKIP_NOT_ENOUGH_TIME,
                estimate_seconds=round(estimate, 1),
                seconds_left=round(left, 1),
                blobs=preview.blobs,
                reclaimable=reclaimable,
            )

    def _observe(self, resumed: RunResult | None) -> None:
        """Count the run that recovery finished or rolled back, if there was one."""
        if resumed is not None and resumed.record is not None:
            self.metrics.observe_run(resumed.record)

    # -- HTTP ---------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "config": True,
            "policies": self.state.policies > 0,
            "storage": self._storage_readable(),
            "registry": self.registry.answering(),
        }
        return all(checks.values()), checks

    def _storage_readable(self) -> bool:
        """The top of the tree opens as a plan would open it (no link below the root)."""
        try:
            check_storage(self.config.registry.location)
        except StorageError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        next_window = next_opening(self.window, self.tz, self.clock())
        return {
            "started_at": iso(self.state.started_at),
            "policies": self.state.policies,
            "last_plan": self.state.last_plan,
            "last_run": self.state.last_run.to_json() if self.state.last_run is not None else None,
            "last_error": self.state.last_error,
            "maintenance_running": self.state.maintenance_running,
            "next_window": iso(next_window) if next_window else None,
        }

    def status_page(self) -> str:
        """The status page (``GET /``): the values gathered here, rendered by
        :func:`retentiond.status_page.render_page`."""
        now = self.clock()
        history_error = None
        try:
            history = read_history(self.config.state_dir)
        except RetentiondError as exc:
            history, history_error = [], str(exc)
        plan = self.state.plan_view
        bounds = self.window_bounds(now)
        schedule = self.config.schedule
        window = WindowView(
            schedule=schedule.window,
            timezone=schedule.timezone,
            length=schedule.window_length,
            next_opening=next_opening(self.window, self.tz, now),
            open_until=bounds[1] if bounds is not None else None,
            estimate_seconds=(
                estimate_seconds(history, plan.blobs, plan.blobs_reclaimed) if plan else None
            ),
        )
        return render_page(
            StatusPage(
                now=now,
                started_at=self.state.started_at,
                policies=self.state.policies,
                window=window,
                plan=plan,
                runs=runs_of_history(history),
                maintenance_running=self.state.maintenance_running,
                last_error=self.state.last_error,
                history_error=history_error,
            )
        )

    def serve_http(self) -> None:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                if ctype.startswith("text/html"):  # the status page: no script, nothing fetched
                    self.send_header("Content-Security-Policy", STATUS_PAGE_CSP)
                    self.send_header("X-Content-Type-Options", "nosniff")
                    self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/":
                    page = daemon.status_page().encode()
                    self._send(200, page, "text/html; charset=utf-8")
                elif path == "/metrics":
                    self._send(
                        200, daemon.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
                    )
                elif path == "/healthz":
                    alive = daemon.scheduler.running
                    self._send(
                        200 if alive else 503,
                        b"ok\n" if alive else b"scheduler stopped\n",
                        "text/plain",
                    )
                elif path == "/readyz":
                    ok, checks = daemon.ready()
                    self._send(200 if ok else 503, json.dumps(checks).encode(), "application/json")
                elif path == "/status":
                    self._send(
                        200, json.dumps(daemon.status(), indent=1).encode(), "application/json"
                    )
                else:
                    self._send(
                        404, b"not found: / /metrics /healthz /readyz /status\n", "text/plain"
                    )

        host, port = split_listen(self.config.metrics.listen)
        try:
            self.http = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise RetentiondError(
                f"cannot listen on {self.config.metrics.listen}: {exc.strerror}; change "
                "metrics.listen"
            ) from exc
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Finish an interrupted run, then start the HTTP server and the scheduler."""
        self.serve_http()
        self.pulls = pull_listener(self.config, self.metrics.observe_pull_events)
        if self.pulls is not None:
            self.pulls.start()
        if self.config.runtime.kind is not RuntimeKind.NONE:
            with self.jobs_lock, run_lock(self.config.state_dir):
                try:
                    self._observe(recover_interrupted(self.services()))
                except RetentiondError as exc:
                    self.metrics.observe_failure("maintenance")
                    self.log.error("could not finish the interrupted run", error=str(exc))
        schedule = self.config.schedule
        self.scheduler.add_job(
            self.guarded("plan", self.plan_job),
            IntervalTrigger(seconds=schedule.plan_every.total_seconds()),
            id="plan",
            next_run_time=self.clock(),
        )
        self.scheduler.add_job(
            self.guarded("maintenance", self.maintenance_job),
            self.window,
            id="maintenance",
            misfire_grace_time=int(schedule.window_length.total_seconds()),
        )
        self.scheduler.add_job(self.watch_policies, IntervalTrigger(seconds=2), id="watch")
        if self.window_bounds(self.clock()) is not None:
            self.log.info("started inside a maintenance window")
            self.scheduler.add_job(
                self.guarded("maintenance", self.maintenance_job), id="window-at-start"
            )
        self.scheduler.start()
        self.log.info(
            "serving",
            listen=self.config.metrics.listen,
            window=schedule.window,
            timezone=schedule.timezone,
            policies=len(self.policies),
        )

    def stop(self, wait: bool = True) -> None:
        """Stop the jobs: a maintenance in progress stops at its next safe point (registry
        read-write again); anything else is abandoned."""
        self.stop_requested.set()
        self.scheduler.shutdown(wait=wait)
        if self.http is not None:
            self.http.shutdown()
        if self.pulls is not None:
            self.pulls.stop()
        self.log.info("stopped")

    def run_forever(self) -> int:
        signal.signal(
            signal.SIGHUP, lambda *_: self.scheduler.add_job(self.reload_policies, args=("SIGHUP",))
        )
        stopping = threading.Event()

        def on_term(*_: object) -> None:
            self.stop_requested.set()
            stopping.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.start()
        while not stopping.wait(1.0):
            pass
        if self.state.maintenance_running:
            self.log.warning("SIGTERM during a maintenance: bringing the registry back first")
        self.stop(wait=self.state.maintenance_running)
        return 0
