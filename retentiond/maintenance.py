"""One maintenance run: freeze, re-plan, remove, one GC, clean, restart, verify, record.

Each phase (:mod:`retentiond.run_phases`) is written to the journal in ``state_dir`` before the
next begins, so a run killed at any point is finished (removals done: GC, clean, restart,
verify) or rolled back (removals not all done: everything put back) by the next ``apply`` or
``serve`` (:mod:`retentiond.recovery`). Removals are renames into a quarantine
(:mod:`retentiond.storage.removal`); the quarantine is purged once the GC has run, or held for
``safety.grace`` so that ``undo`` can put it back (:mod:`retentiond.held_runs`).

What a run moves, keeps and expects the GC to delete is saved in ``state_dir/runs/<run_id>/``
before the first move (:mod:`retentiond.run_files`; the journal itself stays small); recovery
and ``undo`` read it from there only (never from the quarantine, which is under the storage
root), and a journal, list or history of the wrong shape stops the run with an error before
anything changes.

Inside the read-only window only what must be: the re-plan on the frozen tree, the moves, the
GC, and the tidying of what the GC touched (known from its output). The quarantine's deletion
and the removal of dangling ``_layers`` links happen once the run is verified and recorded
(phase ``recorded``: a crash then leaves only that to the next start).

Phases, in order (:class:`~retentiond.run_records.Phase`): started → maintenance → planned →
removing → removed → gc → gc-done → cleaned → left → verified → recorded (after a GC). Whatever
happens, the registry is brought back read-write and the run ends with one line in
``runs.jsonl`` (:class:`~retentiond.run_records.RunRecord`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
import yaml

from retentiond.cache import RedisCache
from retentiond.config import CacheKind, RuntimeKind
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.errors import (
    ProtectionUnavailable,
    RegistryError,
    RetentiondError,
    RuntimeControlError,
    StorageError,
)
from retentiond.held_runs import gc_allowed, held_runs, purge_expired
from retentiond.logs import get_logger
from retentiond.preview import (
    FrozenRead,
    Preview,
    PreviewChild,
    PreviewRequest,
    make_preview,
    read_frozen,
)
from retentiond.pulls.store import read_pull_times
from retentiond.render import iso, plan_summary
from retentiond.run_files import finish_files
from retentiond.run_phases import (
    Cancelled,
    MaintenanceFailed,
    MaintenanceRun,
    MaintenanceServices,
    needs_created,
)
from retentiond.run_records import JournalEntry, Phase, RunRecord, RunStatus, new_run_id
from retentiond.state import append_history, read_history
from retentiond.storage.reader import read_inventory
from retentiond.storage.removal import check_writable


@dataclass
class RunResult:
    """How a run ended: ``record`` when it started (froze the registry or tried to), else
    None (``dry-run``, ``nothing-to-do``, ``refused``: ``summary`` says what it would have
    done, :func:`retentiond.render.plan_summary`; ``plan`` is the whole plan of a dry run. A
    run that started has neither, its plan is in ``record``)."""

    run_id: str
    status: RunStatus
    record: RunRecord | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    broken: list[str] = field(default_factory=list)


def registry_delete_disabled(config_text: str | None) -> bool:
    """True when the registry's config says ``storage.delete.enabled: false``."""
    if not config_text:
        return False
    try:
        doc = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return False
    delete = ((doc or {}).get("storage") or {}).get("delete") if isinstance(doc, dict) else None
    return isinstance(delete, dict) and delete.get("enabled") is False


def finish_record(run: MaintenanceRun, status: RunStatus, *, tidy: bool = False) -> RunRecord:
    """End the run: append its record to the history, then delete its journal (with ``tidy``:
    save it at phase ``recorded`` instead, for :func:`close_run` after the tidying), then notify
    (``services.notify``: the webhooks)."""
    record = RunRecord.of_run(run.entry, status, iso(run.services.clock()))
    state_dir = run.services.config.state_dir
    append_history(state_dir, record.to_json())
    if tidy:
        run.record_phase(Phase.RECORDED)  # a crash from here is tidied by the next start
    else:
        close_run(run)
    structlog.contextvars.unbind_contextvars("run_id")
    try:  # every caller has brought the registry back (or tried to) before ending the run
        run.services.notify(record)
    except Exception:  # a notification never changes how the run ended
        run.log.exception("notifying the run's end failed (a bug; please report it)")
    return record


def close_run(run: MaintenanceRun) -> None:
    """Delete a recorded run's journal, then its files in ``state_dir``."""
    run.journal.clear()
    try:
        finish_files(run.services.config.state_dir, run.run_id)
    except StorageError as exc:  # the run is over: leftovers are reported, not fatal
        run.log.warning("could not tidy the run's files", error=str(exc))


def drive(run: MaintenanceRun, *, no_gc: bool) -> RunResult:
    """Take a run from its journal phase to the end; always bring the registry back."""
    services = run.services
    config = services.config
    failure: BaseException | None = None
    try:
        if not run.entry.phase.reached(Phase.REMOVED):
            raise AssertionError("drive() starts after the removals")
        if not run.entry.phase.reached(Phase.GC_DONE):
            allowed, why = gc_allowed(config, services.clock())
            held = config.safety.grace > timedelta(0)
            if no_gc or held or config.runtime.kind is RuntimeKind.NONE or not allowed:
                reason = (
                    "--no-gc"
                    if no_gc
                    else "safety.grace"
                    if held
                    else "runtime.kind none"
                    if config.runtime.kind is RuntimeKind.NONE
                    else why
                )
                run.log.info("gc skipped", reason=reason)
                run.entry.gc_skipped = reason
                run.entry.held_until = iso(services.clock() + config.safety.grace)
                run.record_phase(Phase.GC_DONE)
            else:
                run.gc()
                purge_expired(config)
        if not run.entry.phase.reached(Phase.CLEANED):
            run.clean()
    except Cancelled:
        # keep the journal: the next start freezes the registry again and finishes the run
        if not run.entry.phase.reached(Phase.LEFT):
            services.runtime.leave_maintenance()
            services.registry.wait_answering(timeout=120)
        run.log.warning(
            "maintenance interrupted; the next start finishes it", phase=run.entry.phase.value
        )
        raise
    except BaseException as exc:  # the registry must come back whatever happened
        failure = exc
    if not run.entry.phase.reached(Phase.LEFT):
        try:
            run.leave()
        except Exception as exc:
            if failure is None:
                failure = exc
            else:
                run.errors.append(f"leaving maintenance failed too: {exc}")
    if failure is not None:
        run.errors.append(str(failure))
        record = finish_record(run, RunStatus.FAILED)
        run.log.error("maintenance failed", error=str(failure), **summary_fields(record))
        if isinstance(failure, RetentiondError | KeyboardInterrupt):
            raise failure
        raise MaintenanceFailed(str(failure)) from failure
    broken = run.verify()
    status = RunStatus.FAILED if broken or run.errors else RunStatus.OK
    # after a GC, the quarantine is garbage: deleted once the run is recorded
    tidy = run.entry.gc_ran
    record = finish_record(run, status, tidy=tidy)
    (run.log.error if status is RunStatus.FAILED else run.log.info)(
        "maintenance", **summary_fields(record)
    )
    if tidy:
        run.tidy()
        close_run(run)
    return RunResult(run.run_id, status, record, broken=broken)


def summary_fields(record: RunRecord) -> dict[str, Any]:
    """The fields of a run's one summary log line."""
    return {
        "status": record.status.value,
        "tags_deleted": record.removed.get("tags", 0),
        "manifests_unlinked": record.removed.get("manifests", 0),
        "repositories_removed": record.removed.get("repositories", 0),
        "bytes_reclaimed": record.bytes_reclaimed,
        "bytes_planned": (record.plan or {}).get("bytes_reclaimed", 0),
        "read_only_seconds": record.read_only_seconds,
        "unavailable_seconds": record.unavailable_seconds,
        "broken": len(record.broken),
        **{f"{k}_seconds": v for k, v in record.durations.items()},
    }


class WindowSkipped(Exception):
    """Raised by the ``admit`` of :func:`run_maintenance` (the daemon's): this window is not
    used; nothing was changed. ``reason`` is the ``windows_skipped_total`` label, ``fields``
    what the log line says of it."""

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


def run_maintenance(
    services: MaintenanceServices,
    *,
    dry_run: bool = False,
    no_gc: bool = False,
    admit: Callable[[Preview], None] | None = None,
) -> RunResult:
    """One maintenance run, start to end. Call with the run lock held, after
    :func:`retentiond.recovery.recover_interrupted`.

    ``admit``: called with the preview, when there is something to do, before the registry
    is frozen; it raises :class:`WindowSkipped` to leave the registry as it is (the daemon:
    the GC would abort, or the run would not fit in what is left of the window)."""
    with ExitStack() as children:  # the preview's child ended however the run ends
        return _run_maintenance(services, children, dry_run=dry_run, no_gc=no_gc, admit=admit)


def _run_maintenance(
    services: MaintenanceServices,
    children: ExitStack,
    *,
    dry_run: bool,
    no_gc: bool,
    admit: Callable[[Preview], None] | None,
) -> RunResult:
    config = services.config
    now = services.clock()
    run_id = new_run_id(now)
    log = get_logger(run_id=run_id, job="maintenance", dry_run=dry_run)
    read_history(config.state_dir)  # checked before anything changes
    services.registry.check_health()
    problems = services.runtime.check() if config.runtime.kind is not RuntimeKind.NONE else []
    if problems:
        raise RuntimeControlError("; ".join(problems))
    # v3's GC aborts on a schema1 manifest: asked while the registry runs, before any change
    gc_reads_schema1 = services.runtime.registry_major() != 3
    if registry_delete_disabled(services.runtime.registry_config_text()):
        log.warning(
            "registry config has storage.delete.enabled: false; clients cannot delete through "
            "the API, but retentiond deletes through the filesystem and the GC still reclaims"
        )
    read_created = needs_created(services.policies)
    protection = services.protection()  # before anything changes; read again when frozen
    if not protection.available:
        raise ProtectionUnavailable(
            "in-use protection could not be read, so nothing is deleted: "
            + "; ".join(protection.problems)
            + ". Fix the source (or remove it from protect: in the config) and run again"
        )
    if dry_run:
        inventory = read_inventory(config.registry.location, read_created=read_created)
        plan = make_plan(
            inventory,
            services.policies,
            config.safety,
            now,
            gc_reads_schema1=gc_reads_schema1,
            pulls=read_pull_times(config.pulls, config.state_dir),
            protected=protection,
        )
        log.info("dry run: nothing changed", **plan_summary(plan))
        return RunResult(run_id, RunStatus.DRY_RUN, summary=plan_summary(plan), plan=plan)
    check_writable(config.registry.location)
    if config.registry.cache is CacheKind.REDIS and config.registry.redis_url and not no_gc:
        # before anything changes: after the GC, an unreachable cache would stay stale
        RedisCache(config.registry.redis_url).check()
    request = PreviewRequest(
        location=config.registry.location,
        policies=tuple(services.policies),
        safety=config.safety,
        now=now,
        read_created=read_created,
        gc_reads_schema1=gc_reads_schema1,
        pulls=config.pulls,
        state_dir=config.state_dir,
        protection=protection,
    )
    confirmed: set[tuple[str, str]] | None = None
    read: Callable[[], FrozenRead]
    if services.confirm is None:  # in a child, which reads the frozen tree too when asked
        try:
            child = children.enter_context(PreviewChild(request))
        except RetentiondError:
            if services.cancelled():  # a stop (SIGTERM to the service) ended the child too
                raise Cancelled("stopped during the preview; nothing was changed") from None
            raise
        preview, read = child.preview, child.read_frozen
    else:  # the prompt shows the whole plan
        preview, shown = make_preview(request)
        read = partial(read_frozen, request.location, read_created, preview.parsed)
        if preview.to_do and (no_gc or not preview.gc_blocked):
            if not services.confirm(shown):
                return RunResult(run_id, RunStatus.REFUSED, summary=preview.summary)
            confirmed = {(t.repository, t.tag) for t in shown.tags_deleted}
        del shown
    if not preview.to_do:
        log.info("nothing to do", **preview.summary)
        return RunResult(run_id, RunStatus.NOTHING_TO_DO, summary=preview.summary)
    if admit is not None:
        admit(preview)
    if preview.gc_blocked and not no_gc:
        raise StorageError(
            "the registry's GC would abort or destroy data on this tree: "
            + "; ".join(preview.gc_problems)
            + "; fix these first (retentiond plan lists them)"
        )
    sizes = preview.sizes
    del preview

    entry = JournalEntry(
        run_id=run_id,
        phase=Phase.STARTED,
        started_at=iso(now),
        gc_mode=config.runtime.gc_mode.value,
    )
    run = MaintenanceRun(services, entry)
    run.gc_reads_schema1 = gc_reads_schema1
    run.record_phase(Phase.STARTED)
    try:
        run.enter_maintenance()
        grace = config.safety.grace > timedelta(0)
        if grace and not no_gc and config.runtime.kind is not RuntimeKind.NONE:
            allowed, _ = gc_allowed(config, now)
            if allowed and held_runs(config):
                run.gc_first()
        plan = run.plan_frozen_tree(sizes, read)
        del sizes, read
        if (
            confirmed is not None
            and not {(t.repository, t.tag) for t in plan.tags_deleted} <= confirmed
        ):
            raise MaintenanceFailed(
                "the tree changed between the confirmation and the freeze; nothing was removed. "
                "Run apply again"
            )
        if plan.gc_blocked and not no_gc:
            raise StorageError(
                "the frozen tree holds something the registry's GC would abort on; "
                "nothing was removed (retentiond plan lists it)"
            )
        run.record_plan(plan)
        # from here the run works from its files and journal: the plan is not kept through the
        # GC and the verification (the frozen inventory is, for the layer links' cleaning)
        del plan
        run.remove()
    except BaseException as exc:
        # nothing or not all removed: put back whatever moved, bring the registry back
        if run.removals_saved:
            run.roll_back()
        try:
            if run.entry.maintenance_state is not None:
                services.runtime.leave_maintenance()
                services.registry.wait_answering(timeout=120)
            else:  # entering maintenance itself failed: undo whatever half of it happened
                mark = getattr(services.runtime, "mark_interrupted", None)
                if callable(mark):
                    mark()
                services.runtime.recover()
        finally:
            run.errors.append(str(exc))
            finish_record(
                run, RunStatus.CANCELLED if isinstance(exc, Cancelled) else RunStatus.FAILED
            )
        if isinstance(exc, RetentiondError | KeyboardInterrupt):
            raise
        if isinstance(exc, RegistryError | OSError):
            raise MaintenanceFailed(str(exc)) from exc
        raise
    return drive(run, no_gc=no_gc)
