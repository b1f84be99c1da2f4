"""One maintenance run: freeze, re-plan, remove, one GC, clean, restart, verify, record.

Each phase is written to the journal in ``state_dir`` before the next begins, so a run killed
at any point is finished (removals done: GC, clean, restart, verify) or rolled back (removals
not all done: everything put back) by the next ``apply`` or ``serve``. Removals are renames
into a quarantine (:mod:`retentiond.storage.removal`); the quarantine is purged once the GC has
run, or held for ``safety.grace`` so that ``undo`` can put it back.

What a run moves is saved in ``state_dir/removals/<run_id>.json`` before the first move;
recovery and ``undo`` read it from there only (never from the quarantine, which is under the
storage root), and a journal, list or history of the wrong shape stops the run with an error
before anything changes.

Phases, in order: started → maintenance → planned → removing → removed → gc → gc-done →
cleaned → left → verified.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
import yaml

from retentiond.cache import RedisCache
from retentiond.config import CacheKind, Config, RuntimeKind
from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.errors import RegistryError, RetentiondError, RuntimeControlError, StorageError
from retentiond.logs import get_logger
from retentiond.policy.model import OrderBy, Policy
from retentiond.registry import RegistryClient
from retentiond.render import iso, plan_summary
from retentiond.runtime.base import MaintenanceState, Runtime
from retentiond.state import (
    Journal,
    append_history,
    drop_removals,
    new_run_id,
    read_history,
    save_removals,
)
from retentiond.storage.cleanup import clean_after_gc, repository_names
from retentiond.storage.reader import read_blob_sizes, read_inventory
from retentiond.storage.removal import (
    Removal,
    check_writable,
    move_out,
    opened_v2,
    purge,
    put_back,
    removals_for,
    run_removals,
)
from retentiond.storage.safe_fs import UnsafeEntry, lstat_below, opened_dir

__all__ = ["new_run_id"]  # made in retentiond.state, where its format is checked

PHASES = (
    "started",
    "maintenance",
    "planned",
    "removing",
    "removed",
    "gc",
    "gc-done",
    "cleaned",
    "left",
    "verified",
)
#: environment variable that makes the process SIGKILL itself at a phase (tests only)
FAULT_ENV = "RETENTIOND_FAULT"
PAUSE_ENV = "RETENTIOND_PAUSE"
#: repositories verified in parallel after a run (requests to the registry at once)
VERIFY_WORKERS = 4


def _after(phase: str, other: str) -> bool:
    return PHASES.index(phase) >= PHASES.index(other)


class MaintenanceFailed(RetentiondError):
    """The run finished its cleanup but something went wrong; the message says what."""


class Cancelled(RetentiondError):
    """Asked to stop (SIGTERM): the registry is back read-write; the journal, if kept, is
    finished by the next start."""


@dataclass
class Deps:
    """What a run needs from outside; built by the CLI or the daemon."""

    config: Config
    policies: Sequence[Policy]
    runtime: Runtime
    registry: RegistryClient
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    confirm: Callable[[Plan], bool] | None = None
    #: polled at every phase boundary; True stops the run at the next safe point
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class RunResult:
    run_id: str
    status: str  # ok | failed | rolled-back | dry-run | nothing-to-do | refused
    record: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    broken: list[str] = field(default_factory=list)


def fault_point(name: str) -> None:
    """Test hooks: ``RETENTIOND_FAULT=<point>`` dies here like ``kill -9``;
    ``RETENTIOND_PAUSE=<point>=<seconds>`` sleeps here (to act while the registry is frozen)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.rpartition("=")[0] == name:
        time.sleep(float(pause.rpartition("=")[2]))


def _needs_created(policies: Sequence[Policy]) -> bool:
    return any(p.order_by is OrderBy.CREATED for p in policies)


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


class MaintenanceRun:
    """One run, driven phase by phase from its journal entry."""

    def __init__(self, deps: Deps, entry: dict[str, Any]) -> None:
        self.deps = deps
        self.entry = entry
        self.journal = Journal(deps.config.state_dir)
        self.root = Path(deps.config.registry.root)
        self.log = get_logger(run_id=entry["run_id"], job="maintenance")
        # every line logged while this run is in progress (runtime, registry) carries its id
        structlog.contextvars.bind_contextvars(run_id=entry["run_id"])
        self.timings: dict[str, float] = entry.setdefault("durations", {})
        self.state: MaintenanceState | None = None
        self.inventory: Inventory | None = None
        self.errors: list[str] = entry.setdefault("errors", [])
        #: what this run moves: from its plan, or (a run resumed) from ``state_dir``
        self.planned_removals: list[Removal] | None = None

    # -- bookkeeping ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return str(self.entry["run_id"])

    def reach(self, phase: str) -> None:
        self.entry["phase"] = phase
        self.journal.save(self.entry)
        self.log.debug("phase", phase=phase)
        fault_point(phase)
        if self.deps.cancelled() and not _after(phase, "left"):
            raise Cancelled(f"stopped at phase {phase} on request")

    def timed(self, phase: str, seconds: float) -> None:
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 3)

    def removals(self) -> list[Removal]:
        """What this run moves, read from ``state_dir`` only (never from the quarantine)."""
        if self.planned_removals is None:
            found = run_removals(
                self.deps.config.state_dir, self.root, self.run_id, self.entry.get("removals")
            )
            self.planned_removals = found or []
        return self.planned_removals

    def roll_back(self) -> None:
        """Put back whatever this run moved; a failure is recorded in the run's errors."""
        try:
            result = put_back(self.root, self.run_id, self.removals())
        except StorageError as exc:
            self.errors.append(f"putting the removals back failed: {exc}")
            return
        self.errors.extend(result.conflicts)
        if not result.conflicts:
            drop_removals(self.deps.config.state_dir, self.run_id)

    # -- phases -----------------------------------------------------------------------------------

    def enter(self, *, record: bool = True) -> None:
        """Enter maintenance and prove writes are refused; ``record`` saves the phase."""
        runtime, registry = self.deps.runtime, self.deps.registry
        started = time.monotonic()
        self.entry["maintenance_entered_at"] = time.time()
        self.state = runtime.enter_maintenance()
        self.entry["maintenance_state"] = self.state.value
        self.entry["enter_seconds"] = time.monotonic() - started
        if self.state is MaintenanceState.READ_ONLY:
            registry.wait_answering(timeout=120)
            probe = self._probe_repository()
            if not registry.writes_refused(probe):
                raise RuntimeControlError(
                    f"the registry still accepts uploads to {probe} after entering read-only "
                    "mode; the GC would race with pushes. Check that "
                    "REGISTRY_STORAGE_MAINTENANCE_READONLY reaches the registry process"
                )
        elif self.state is MaintenanceState.STOPPED and registry.answering():
            raise RuntimeControlError(
                f"the registry at {registry.url} still answers after it was stopped; is "
                "registry.url the registry that runtime controls?"
            )
        if record:
            self.reach("maintenance")

    def _probe_repository(self) -> str:
        """A repository to try an upload to (its name only: no link is followed to find it)."""
        try:
            with (
                opened_v2(self.root) as v2_fd,
                opened_dir("repositories", v2_fd) as fd,
                os.scandir(fd) as entries,
            ):
                names = sorted(
                    e.name
                    for e in entries
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith("_")
                )
        except (StorageError, UnsafeEntry, OSError):
            names = []
        return names[0] if names else "retentiond-probe"

    def gc_first(self) -> None:
        """With ``safety.grace``: collect what earlier held runs removed, before this run's
        removals (which are then held in turn)."""
        started = time.monotonic()
        before = read_blob_sizes(self.root)
        outcome = self.deps.runtime.run_gc()
        self.timed("gc", time.monotonic() - started)
        if not outcome.ok:
            raise MaintenanceFailed(
                f"the registry's garbage-collect exited {outcome.returncode}: "
                f"{' / '.join(outcome.output.strip().splitlines()[-3:])}"
            )
        after = read_blob_sizes(self.root)
        gone = [d for d in before if d not in after]
        self.entry["pre_gc_bytes"] = sum(before[d] for d in gone)
        self.entry["pre_gc_blobs"] = len(gone)
        self.entry["gc_before_removals"] = True
        _purge_expired(self.deps)
        self.log.info("collected held runs", blobs=len(gone), bytes=self.entry["pre_gc_bytes"])

    def make_the_plan(self) -> Plan:
        started = time.monotonic()
        # what is deleted and reported is counted from every blob's data as on disk
        inventory = read_inventory(
            self.root, read_created=_needs_created(self.deps.policies), stat_blobs=True
        )
        plan = make_plan(inventory, self.deps.policies, self.deps.config.safety, self.deps.clock())
        self.inventory = inventory
        self.timed("plan", time.monotonic() - started)
        return plan

    def record_plan(self, plan: Plan) -> None:
        assert self.inventory is not None
        nested = {r.name for r in self.inventory.repositories if r.has_nested}
        self.entry["plan"] = plan_summary(plan)
        self.planned_removals = removals_for(plan, nested)
        # before the first move, in retentiond's own directory: what undo and recovery trust
        save_removals(
            self.deps.config.state_dir, self.run_id, [r.to_json() for r in self.planned_removals]
        )
        self.entry["reclaimable"] = dict(plan.reclaimable)
        deleted_tags = [[t.repository, t.tag, t.policy] for t in plan.tags_deleted]
        self.entry["deleted_tags"] = deleted_tags
        self.entry["unlinked"] = [
            [m.repository, m.digest, m.policy] for m in plan.manifests_unlinked
        ]
        self.entry["repositories_removed"] = list(plan.repositories_removed)
        deleted = {(repository, tag) for repository, tag, _ in deleted_tags}
        self.entry["kept_tags"] = sorted(
            [r.name, t.name, t.digest]
            for r in self.inventory.repositories
            for t in r.materialize()[0]
            if (r.name, t.name) not in deleted
        )
        self.entry["blob_count_before"] = len(self.inventory.blobs)
        self.reach("planned")

    def remove(self) -> None:
        started = time.monotonic()
        self.reach("removing")
        count = 0

        def done(removal: Removal) -> None:
            nonlocal count
            count += 1
            fault_point(f"removing:{count}")

        move_out(self.root, self.run_id, self.removals(), done)
        self.timed("delete", time.monotonic() - started)
        self.reach("removed")

    def gc(self) -> None:
        self.reach("gc")
        started = time.monotonic()
        outcome = self.deps.runtime.run_gc()
        self.timed("gc", time.monotonic() - started)
        self.entry["gc_output_tail"] = outcome.output.strip().splitlines()[-3:]
        if not outcome.ok:
            raise MaintenanceFailed(
                f"the registry's garbage-collect exited {outcome.returncode}: "
                f"{' / '.join(outcome.output.strip().splitlines()[-3:])}"
            )
        self.entry["gc_ran"] = True
        self.reach("gc-done")

    def clean(self) -> None:
        started = time.monotonic()
        blobs_after = read_blob_sizes(self.root)
        reclaimable: dict[str, int] = self.entry.get("reclaimable", {})
        gone = {d: s for d, s in reclaimable.items() if d not in blobs_after}
        self.entry["bytes_reclaimed"] = sum(gone.values()) + self.entry.get("pre_gc_bytes", 0)
        self.entry["blobs_deleted"] = len(gone) + self.entry.get("pre_gc_blobs", 0)
        lost = self.entry.get("blob_count_before", 0) - len(blobs_after) - len(gone)
        if lost > 0:
            self.errors.append(
                f"{lost} blobs vanished that the plan did not expect to be reclaimed"
            )
        repos = repository_names(self.root)
        self.entry["blobs_gone"] = sorted(gone)
        self.forget_cached(repos)
        cleaned = clean_after_gc(self.root, repos, blobs_after)
        if cleaned.skipped:
            self.log.warning("cleaning left links alone", paths=list(cleaned.skipped[:20]))
        self.entry["cleaned"] = {
            "blob_prefix_dirs": cleaned.blob_prefix_dirs,
            "revision_dirs": cleaned.revision_dirs,
            "layer_links": cleaned.layer_links,
            "namespace_dirs": cleaned.namespace_dirs,
        }
        self.timed("clean", time.monotonic() - started)
        self.reach("cleaned")

    def forget_cached(self, repositories: list[str] | None = None) -> None:
        """With ``cache: redis``, delete the entries of the blobs the GC removed."""
        registry = self.deps.config.registry
        if registry.cache is not CacheKind.REDIS or not registry.redis_url:
            return
        sent = RedisCache(registry.redis_url).forget(
            self.entry.get("blobs_gone", []),
            repositories if repositories is not None else repository_names(self.root),
        )
        self.log.info(
            "redis cache cleaned", blobs=len(self.entry.get("blobs_gone", [])), commands=sent
        )

    def leave(self) -> None:
        started = time.monotonic()
        self.deps.runtime.leave_maintenance()
        self.deps.registry.wait_answering(timeout=120)
        took = time.monotonic() - started
        self.forget_cached()  # the twin may have cached descriptors while the GC ran
        self.timed("restart", took)
        # what clients saw: writes refused / nothing answering, from the start of the switch
        state = self.entry.get("maintenance_state")
        since = time.time() - float(self.entry.get("maintenance_entered_at", time.time()))
        if state == MaintenanceState.ONLINE.value:  # only the restart
            read_only = unavailable = took
        elif state == MaintenanceState.STOPPED.value:  # the whole maintenance
            read_only = unavailable = since
        else:  # read-only twin: writes refused throughout, nothing answers during the switches
            read_only = since
            unavailable = float(self.entry.get("enter_seconds", 0.0)) + took
        self.entry["read_only_seconds"] = round(read_only, 3)
        self.entry["unavailable_seconds"] = round(unavailable, 3)
        self.reach("left")

    def verify(self) -> list[str]:
        started = time.monotonic()
        registry = self.deps.registry
        broken: list[str] = []
        by_repo: dict[str, list[tuple[str, str]]] = {}
        for repo, tag, digest in self.entry.get("kept_tags", []):
            by_repo.setdefault(repo, []).append((tag, digest))
        with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
            for checks in pool.map(lambda item: registry.check_tags(*item), by_repo.items()):
                broken += [f"{c.repository}:{c.tag}: {c.reason}" for c in checks if not c.ok]
        for repo, tag, _ in self.entry.get("deleted_tags", []):
            if self._tag_present(repo, tag):
                continue  # pushed again since the run left maintenance
            status = registry.tag_status(repo, tag)
            if status != 404:
                broken.append(f"{repo}:{tag} was deleted but answers {status}")
        self.entry["broken"] = broken
        self.timed("verify", time.monotonic() - started)
        self.reach("verified")
        return broken

    def _tag_present(self, repository: str, tag: str) -> bool:
        """Whether a tag directory is there again (looked at without following a link)."""
        try:
            with opened_v2(self.root) as v2_fd:
                lstat_below(f"repositories/{repository}/_manifests/tags/{tag}", v2_fd)
        except (StorageError, UnsafeEntry, OSError):
            return False
        return True


def _finish_record(run: MaintenanceRun, status: str) -> dict[str, Any]:
    entry = run.entry
    record = {
        "run_id": run.run_id,
        "status": status,
        "started_at": entry.get("started_at"),
        "finished_at": iso(run.deps.clock()),
        "gc_mode": entry.get("gc_mode"),
        "plan": entry.get("plan"),
        "removed": {
            "tags": len(entry.get("deleted_tags", [])),
            "manifests": len(entry.get("unlinked", [])),
            "repositories": len(entry.get("repositories_removed", [])),
        },
        "deleted_tags": entry.get("deleted_tags", []),
        "unlinked": entry.get("unlinked", []),
        "repositories_removed": entry.get("repositories_removed", []),
        "bytes_reclaimed": entry.get("bytes_reclaimed", 0),
        "blobs_deleted": entry.get("blobs_deleted", 0),
        "durations": entry.get("durations", {}),
        "read_only_seconds": entry.get("read_only_seconds", 0.0),
        "unavailable_seconds": entry.get("unavailable_seconds", 0.0),
        "broken": entry.get("broken", []),
        "errors": entry.get("errors", []),
        "gc_ran": bool(entry.get("gc_ran")),
        "gc_before_removals": bool(entry.get("gc_before_removals")),
        "held_until": entry.get("held_until"),
        "resumed": bool(entry.get("resumed")),
        "cleaned": entry.get("cleaned", {}),
        "blob_count_before": entry.get("blob_count_before", 0),
    }
    append_history(run.deps.config.state_dir, record)
    run.journal.clear()
    structlog.contextvars.unbind_contextvars("run_id")
    return record


def _gc_allowed(deps: Deps, now: datetime) -> tuple[bool, str]:
    """GC reclaims every quarantined run's blobs: wait until no held run is inside its grace."""
    held = set(_held_runs(deps))
    for record in read_history(deps.config.state_dir):
        until = record.get("held_until")
        expires = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else None
        if record.get("run_id") in held and expires is not None and expires > now:
            return False, f"run {record['run_id']} is held for undo until {until}"
    return True, ""


def _held_runs(deps: Deps) -> list[str]:
    """Runs whose quarantine still waits for a GC."""
    purged = {r["run_id"] for r in read_history(deps.config.state_dir) if r.get("purged")}
    return [
        r["run_id"]
        for r in read_history(deps.config.state_dir)
        if r.get("held_until") and r["run_id"] not in purged
    ]


def _purge_expired(deps: Deps) -> list[str]:
    """After a GC, quarantines of earlier held runs are garbage: their blobs are gone."""
    purged = _held_runs(deps)
    for run_id in purged:
        _forget_quarantine(deps, run_id)
    for run_id in purged:
        append_history(
            deps.config.state_dir, {"run_id": run_id, "status": "purged", "purged": True}
        )
    return purged


def _forget_quarantine(deps: Deps, run_id: str) -> None:
    """Delete a run's quarantine, then its list of removals (undo is over for it)."""
    purge(Path(deps.config.registry.root), run_id)
    drop_removals(deps.config.state_dir, run_id)


def drive(run: MaintenanceRun, *, no_gc: bool) -> RunResult:
    """Take a run from its journal phase to the end; always bring the registry back."""
    deps = run.deps
    phase = run.entry["phase"]
    failure: BaseException | None = None
    try:
        if not _after(phase, "removed"):
            raise AssertionError("drive() starts after the removals")
        if not _after(phase, "gc-done"):
            allowed, why = _gc_allowed(deps, deps.clock())
            held = deps.config.safety.grace > timedelta(0)
            if no_gc or held or deps.config.runtime.kind is RuntimeKind.NONE or not allowed:
                reason = (
                    "--no-gc"
                    if no_gc
                    else "safety.grace"
                    if held
                    else "runtime.kind none"
                    if deps.config.runtime.kind is RuntimeKind.NONE
                    else why
                )
                run.log.info("gc skipped", reason=reason)
                run.entry["gc_skipped"] = reason
                run.entry["held_until"] = iso(deps.clock() + deps.config.safety.grace)
                run.reach("gc-done")
            else:
                run.gc()
                _purge_expired(deps)
        if not _after(run.entry["phase"], "cleaned"):
            run.clean()
    except Cancelled:
        # keep the journal: the next start freezes the registry again and finishes the run
        if not _after(run.entry["phase"], "left"):
            deps.runtime.leave_maintenance()
            deps.registry.wait_answering(timeout=120)
        run.log.warning(
            "maintenance interrupted; the next start finishes it", phase=run.entry["phase"]
        )
        raise
    except BaseException as exc:  # the registry must come back whatever happened
        failure = exc
    if not _after(run.entry["phase"], "left"):
        try:
            run.leave()
        except Exception as exc:
            if failure is None:
                failure = exc
            else:
                run.errors.append(f"leaving maintenance failed too: {exc}")
    if failure is not None:
        run.errors.append(str(failure))
        record = _finish_record(run, "failed")
        run.log.error("maintenance failed", error=str(failure), **_summary_fields(record))
        if isinstance(failure, RetentiondError | KeyboardInterrupt):
            raise failure
        raise MaintenanceFailed(str(failure)) from failure
    if run.entry.get("gc_ran"):
        # the GC has collected what the quarantine held: drop it, outside the maintenance window
        started = time.monotonic()
        try:
            _forget_quarantine(deps, run.run_id)
        except StorageError as exc:  # the run is done; what is left is reported, not fatal
            run.errors.append(str(exc))
        run.timed("clean", time.monotonic() - started)
    broken = run.verify()
    status = "failed" if broken or run.errors else "ok"
    record = _finish_record(run, status)
    (run.log.error if status == "failed" else run.log.info)(
        "maintenance", **_summary_fields(record)
    )
    return RunResult(run.run_id, status, record, broken=broken)


def _summary_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": record["status"],
        "tags_deleted": record["removed"]["tags"],
        "manifests_unlinked": record["removed"]["manifests"],
        "repositories_removed": record["removed"]["repositories"],
        "bytes_reclaimed": record["bytes_reclaimed"],
        "bytes_planned": (record.get("plan") or {}).get("bytes_reclaimed", 0),
        "read_only_seconds": record["read_only_seconds"],
        "unavailable_seconds": record["unavailable_seconds"],
        "broken": len(record["broken"]),
        **{f"{k}_seconds": v for k, v in record["durations"].items()},
    }


def load_journal(journal: Journal) -> dict[str, Any] | None:
    """The run in progress, checked: a journal of the wrong shape is an error, never acted on."""
    entry = journal.load()
    if entry is None:
        return None
    if entry["phase"] not in PHASES:
        raise journal.malformed(f"has the phase {entry['phase'][:40]!r}, not one of {PHASES}")
    state = entry.get("maintenance_state")
    if state is not None and state not in {s.value for s in MaintenanceState}:
        raise journal.malformed(f"has the maintenance_state {state[:40]!r}")
    return entry


def recover_interrupted(deps: Deps) -> RunResult | None:
    """Finish or roll back a run that a crash interrupted. Call with the run lock held.

    Before the removals were all made, the run is rolled back: everything is put back. After,
    it is finished: frozen again for the GC and the cleaning, then restarted and verified.
    """
    read_history(deps.config.state_dir)  # checked before anything changes
    journal = Journal(deps.config.state_dir)
    entry = load_journal(journal)
    runtime = deps.runtime
    if entry is None:
        if runtime.recover():
            get_logger(job="maintenance").warning(
                "restored a registry that an earlier run left in maintenance"
            )
        return None
    run = MaintenanceRun(deps, entry)
    phase = entry["phase"]
    rolling_back = not _after(phase, "removed")
    if rolling_back:
        run.removals()  # read and checked before anything changes
    mark = getattr(runtime, "mark_interrupted", None)
    if callable(mark):
        mark()
    runtime.recover()
    entry["resumed"] = True
    if rolling_back:
        errors = len(run.errors)
        run.roll_back()
        deps.registry.wait_answering(timeout=120)
        record = _finish_record(run, "rolled-back")
        run.log.warning(
            "rolled back an interrupted run", phase=phase, conflicts=len(run.errors) - errors
        )
        return RunResult(run.run_id, "rolled-back", record)
    run.log.warning("finishing an interrupted run", phase=phase)
    if phase == "gc":
        entry["phase"] = "removed"  # the GC did not finish: run it again, frozen
    if not _after(entry["phase"], "cleaned"):
        run.enter(record=False)
    return drive(run, no_gc=False)


def run_maintenance(deps: Deps, *, dry_run: bool = False, no_gc: bool = False) -> RunResult:
    """One maintenance run, start to end. Call with the run lock held, after
    :func:`recover_interrupted`."""
    config = deps.config
    now = deps.clock()
    run_id = new_run_id(now)
    log = get_logger(run_id=run_id, job="maintenance", dry_run=dry_run)
    read_history(config.state_dir)  # checked before anything changes
    deps.registry.check_health()
    problems = deps.runtime.check() if config.runtime.kind is not RuntimeKind.NONE else []
    if problems:
        raise RuntimeControlError("; ".join(problems))
    if registry_delete_disabled(deps.runtime.registry_config_text()):
        log.warning(
            "registry config has storage.delete.enabled: false; clients cannot delete through "
            "the API, but retentiond deletes through the filesystem and the GC still reclaims"
        )
    if dry_run:
        inventory = read_inventory(config.registry.root, read_created=_needs_created(deps.policies))
        plan = make_plan(inventory, deps.policies, config.safety, now)
        log.info("dry run: nothing changed", **plan_summary(plan))
        return RunResult(run_id, "dry-run", {"plan": plan_summary(plan)}, plan=plan)
    check_writable(Path(config.registry.root))
    preview = make_plan(
        read_inventory(config.registry.root, read_created=_needs_created(deps.policies)),
        deps.policies,
        config.safety,
        now,
    )
    if not preview.tags_deleted and not preview.manifests_unlinked and not preview.reclaimable:
        log.info("nothing to do", **plan_summary(preview))
        return RunResult(run_id, "nothing-to-do", {"plan": plan_summary(preview)}, plan=preview)
    if preview.gc_blocked and not no_gc:
        raise StorageError(
            "the registry's GC would abort or destroy data on this tree: "
            + "; ".join(str(p) for p in preview.problems if p.kind.value.startswith("gc-"))
            + "; fix these first (retentiond plan lists them)"
        )
    if deps.confirm is not None and not deps.confirm(preview):
        return RunResult(run_id, "refused", {"plan": plan_summary(preview)}, plan=preview)

    entry: dict[str, Any] = {
        "run_id": run_id,
        "phase": "started",
        "started_at": iso(now),
        "gc_mode": config.runtime.gc_mode.value,
    }
    run = MaintenanceRun(deps, entry)
    run.reach("started")
    try:
        run.enter()
        grace = config.safety.grace > timedelta(0)
        if grace and not no_gc and config.runtime.kind is not RuntimeKind.NONE:
            allowed, _ = _gc_allowed(deps, now)
            if allowed and _held_runs(deps):
                run.gc_first()
        plan = run.make_the_plan()
        confirmed = {(t.repository, t.tag) for t in preview.tags_deleted}
        now_deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
        if deps.confirm is not None and not now_deleted <= confirmed:
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
        run.remove()
    except BaseException as exc:
        # nothing or not all removed: put back whatever moved, bring the registry back
        if run.planned_removals is not None:
            run.roll_back()
        try:
            if run.entry.get("maintenance_state") is not None:
                deps.runtime.leave_maintenance()
                deps.registry.wait_answering(timeout=120)
            else:  # entering maintenance itself failed: undo whatever half of it happened
                mark = getattr(deps.runtime, "mark_interrupted", None)
                if callable(mark):
                    mark()
                deps.runtime.recover()
        finally:
            run.errors.append(str(exc))
            _finish_record(run, "cancelled" if isinstance(exc, Cancelled) else "failed")
        if isinstance(exc, RetentiondError | KeyboardInterrupt):
            raise
        if isinstance(exc, RegistryError | OSError):
            raise MaintenanceFailed(str(exc)) from exc
        raise
    result = drive(run, no_gc=no_gc)
    result.plan = plan
    return result
