"""The phases of one maintenance run, each a method of :class:`MaintenanceRun`.

A phase does its work, then :meth:`MaintenanceRun.record_phase` saves the journal (``state_dir``)
before the next begins, so that a run killed at any point can be finished or rolled back from
the journal (:mod:`retentiond.recovery`). The order in which phases run, and what happens on a
failure, is :mod:`retentiond.maintenance`'s.

Fault points (tests only): ``RETENTIOND_FAULT=<point>`` makes the process ``kill -9`` itself at
a point, ``RETENTIOND_PAUSE=<point>=<seconds>`` waits there. The points are the phases' names,
right after the journal is saved, and ``removing:<n>`` after the n-th removal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from retentiond.cache import RedisCache
from retentiond.config import CacheKind, Config
from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.errors import RetentiondError, RuntimeControlError, StorageError
from retentiond.held_runs import purge_expired
from retentiond.logs import get_logger
from retentiond.policy.model import OrderBy, Policy
from retentiond.registry import RegistryClient
from retentiond.render import plan_summary
from retentiond.run_records import (
    DeletedTag,
    DurationPhase,
    JournalEntry,
    KeptTag,
    Phase,
    UnlinkedManifest,
)
from retentiond.runtime.base import MaintenanceState, Runtime
from retentiond.state import Journal, drop_removals, save_removals
from retentiond.storage import layout
from retentiond.storage.cleanup import clean_after_gc, repository_names
from retentiond.storage.port import Kind
from retentiond.storage.reader import read_blob_sizes, read_inventory
from retentiond.storage.removal import move_out, open_storage, put_back, run_removals
from retentiond.storage.removal_list import Removal, removals_for
from retentiond.storage.safe_fs import UnsafeEntry

#: environment variable that makes the process SIGKILL itself at a fault point (tests only)
FAULT_ENV = "RETENTIOND_FAULT"
#: environment variable ``<point>=<seconds>``: wait at a fault point (tests only)
PAUSE_ENV = "RETENTIOND_PAUSE"
#: repositories verified in parallel after a run (requests to the registry at once)
VERIFY_WORKERS = 4


class MaintenanceFailed(RetentiondError):
    """The run finished its cleanup but something went wrong; the message says what."""


class Cancelled(RetentiondError):
    """Asked to stop (SIGTERM): the registry is back read-write; the journal, if kept, is
    finished by the next start."""


@dataclass
class MaintenanceServices:
    """What a run works with, built by the CLI or the daemon: the config and policies, the
    registry's runtime and HTTP client, the clock, and the two callbacks."""

    config: Config
    policies: Sequence[Policy]
    runtime: Runtime
    registry: RegistryClient
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: asked with the plan before anything changes; False stops the run (``refused``)
    confirm: Callable[[Plan], bool] | None = None
    #: polled at every phase boundary; True stops the run at the next safe point
    cancelled: Callable[[], bool] = lambda: False


def fault_point(name: str) -> None:
    """Test hooks: ``RETENTIOND_FAULT=<point>`` dies here like ``kill -9``;
    ``RETENTIOND_PAUSE=<point>=<seconds>`` sleeps here (to act while the registry is frozen)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.rpartition("=")[0] == name:
        time.sleep(float(pause.rpartition("=")[2]))


def needs_created(policies: Sequence[Policy]) -> bool:
    """True when a policy orders by the image config's ``created`` time (read it then)."""
    return any(p.order_by is OrderBy.CREATED for p in policies)


class MaintenanceRun:
    """One run, driven phase by phase from its journal entry."""

    def __init__(self, services: MaintenanceServices, entry: JournalEntry) -> None:
        self.services = services
        self.entry = entry
        self.journal = Journal(services.config.state_dir)
        self.root = Path(services.config.registry.root)
        self.log = get_logger(run_id=entry.run_id, job="maintenance")
        # every line logged while this run is in progress (runtime, registry) carries its id
        structlog.contextvars.bind_contextvars(run_id=entry.run_id)
        self.inventory: Inventory | None = None
        #: what this run moves: from its plan, or (a run resumed) from ``state_dir``
        self.planned_removals: list[Removal] | None = None

    # -- bookkeeping ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.entry.run_id

    @property
    def errors(self) -> list[str]:
        """What went wrong so far (the journal's, then the record's ``errors``)."""
        return self.entry.errors

    def record_phase(self, phase: Phase) -> None:
        """Save the journal at ``phase``, then pass the fault point of that name (a test may
        kill the process there), then raise :class:`Cancelled` when asked to stop and the
        registry is not yet back read-write."""
        self.entry.phase = phase
        self.journal.save(self.entry)
        self.log.debug("phase", phase=phase.value)
        fault_point(phase)
        if self.services.cancelled() and not phase.reached(Phase.LEFT):
            raise Cancelled(f"stopped at phase {phase} on request")

    def timed(self, part: DurationPhase, seconds: float) -> None:
        """Add ``seconds`` to the run's time for ``part`` (the record's ``durations``)."""
        durations = self.entry.durations
        durations[part] = round(durations.get(part, 0.0) + seconds, 3)

    def removals(self) -> list[Removal]:
        """What this run moves, read from ``state_dir`` only (never from the quarantine)."""
        if self.planned_removals is None:
            found = run_removals(
                self.services.config.state_dir, self.root, self.run_id, self.entry.removals
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
            drop_removals(self.services.config.state_dir, self.run_id)

    # -- phases -----------------------------------------------------------------------------------

    def enter_maintenance(self, *, record: bool = True) -> None:
        """Enter maintenance and prove writes are refused; ``record`` saves the phase."""
        runtime, registry = self.services.runtime, self.services.registry
        started = time.monotonic()
        self.entry.maintenance_entered_at = time.time()
        state = runtime.enter_maintenance()
        self.entry.maintenance_state = state
        self.entry.enter_seconds = time.monotonic() - started
        if state is MaintenanceState.READ_ONLY:
            registry.wait_answering(timeout=120)
            probe = self._probe_repository()
            if not registry.writes_refused(probe):
                raise RuntimeControlError(
                    f"the registry still accepts uploads to {probe} after entering read-only "
                    "mode; the GC would race with pushes. Check that "
                    "REGISTRY_STORAGE_MAINTENANCE_READONLY reaches the registry process"
                )
        elif state is MaintenanceState.STOPPED and registry.answering():
            raise RuntimeControlError(
                f"the registry at {registry.url} still answers after it was stopped; is "
                "registry.url the registry that runtime controls?"
            )
        if record:
            self.record_phase(Phase.MAINTENANCE)

    def _probe_repository(self) -> str:
        """A repository to try an upload to (its name only: no link is followed to find it)."""
        try:
            with open_storage(self.root) as storage:
                names = sorted(
                    e.name
                    for e in storage.list(layout.REPOSITORIES)
                    if e.kind is Kind.DIR and not e.name.startswith("_")
                )
        except (StorageError, UnsafeEntry, OSError):
            names = []
        return names[0] if names else "retentiond-probe"

    def gc_first(self) -> None:
        """With ``safety.grace``: collect what earlier held runs removed, before this run's
        removals (which are then held in turn)."""
        started = time.monotonic()
        before = read_blob_sizes(self.root)
        outcome = self.services.runtime.run_gc()
        self.timed("gc", time.monotonic() - started)
        if not outcome.ok:
            raise MaintenanceFailed(
                f"the registry's garbage-collect exited {outcome.returncode}: "
                f"{' / '.join(outcome.output.strip().splitlines()[-3:])}"
            )
        after = read_blob_sizes(self.root)
        gone = [d for d in before if d not in after]
        self.entry.pre_gc_bytes = sum(before[d] for d in gone)
        self.entry.pre_gc_blobs = len(gone)
        self.entry.gc_before_removals = True
        purge_expired(self.services.config)
        self.log.info("collected held runs", blobs=len(gone), bytes=self.entry.pre_gc_bytes)

    def plan_frozen_tree(self) -> Plan:
        """Read the frozen tree (every blob's size from its data, as on disk: what is deleted
        and reported is counted from it) and plan on it; the inventory is kept for
        :meth:`record_plan`."""
        started = time.monotonic()
        services = self.services
        inventory = read_inventory(
            self.root, read_created=needs_created(services.policies), stat_blobs=True
        )
        plan = make_plan(inventory, services.policies, services.config.safety, services.clock())
        self.inventory = inventory
        self.timed("plan", time.monotonic() - started)
        return plan

    def record_plan(self, plan: Plan) -> None:
        """Save what the plan removes (in ``state_dir``, before the first move) and what to
        verify afterwards."""
        assert self.inventory is not None
        entry = self.entry
        nested = {r.name for r in self.inventory.repositories if r.has_nested}
        entry.plan = plan_summary(plan)
        self.planned_removals = removals_for(plan, nested)
        # before the first move, in retentiond's own directory: what undo and recovery trust
        save_removals(
            self.services.config.state_dir,
            self.run_id,
            [r.to_json() for r in self.planned_removals],
        )
        entry.reclaimable = dict(plan.reclaimable)
        entry.deleted_tags = [DeletedTag(t.repository, t.tag, t.policy) for t in plan.tags_deleted]
        entry.unlinked = [
            UnlinkedManifest(m.repository, m.digest, m.policy) for m in plan.manifests_unlinked
        ]
        entry.repositories_removed = list(plan.repositories_removed)
        deleted = {(t.repository, t.tag) for t in entry.deleted_tags}
        entry.kept_tags = sorted(
            KeptTag(r.name, t.name, t.digest)
            for r in self.inventory.repositories
            for t in r.materialize()[0]
            if (r.name, t.name) not in deleted
        )
        entry.blob_count_before = len(self.inventory.blobs)
        self.record_phase(Phase.PLANNED)

    def remove(self) -> None:
        started = time.monotonic()
        self.record_phase(Phase.REMOVING)
        count = 0

        def done(removal: Removal) -> None:
            nonlocal count
            count += 1
            fault_point(f"removing:{count}")

        move_out(self.root, self.run_id, self.removals(), done)
        self.timed("delete", time.monotonic() - started)
        self.record_phase(Phase.REMOVED)

    def gc(self) -> None:
        self.record_phase(Phase.GC)
        started = time.monotonic()
        outcome = self.services.runtime.run_gc()
        self.timed("gc", time.monotonic() - started)
        self.entry.gc_output_tail = outcome.output.strip().splitlines()[-3:]
        if not outcome.ok:
            raise MaintenanceFailed(
                f"the registry's garbage-collect exited {outcome.returncode}: "
                f"{' / '.join(outcome.output.strip().splitlines()[-3:])}"
            )
        self.entry.gc_ran = True
        self.record_phase(Phase.GC_DONE)

    def clean(self) -> None:
        started = time.monotonic()
        entry = self.entry
        blobs_after = read_blob_sizes(self.root)
        reclaimable = entry.reclaimable or {}
        gone = {d: s for d, s in reclaimable.items() if d not in blobs_after}
        entry.bytes_reclaimed = sum(gone.values()) + (entry.pre_gc_bytes or 0)
        entry.blobs_deleted = len(gone) + (entry.pre_gc_blobs or 0)
        lost = (entry.blob_count_before or 0) - len(blobs_after) - len(gone)
        if lost > 0:
            self.errors.append(
                f"{lost} blobs vanished that the plan did not expect to be reclaimed"
            )
        repos = repository_names(self.root)
        entry.blobs_gone = sorted(gone)
        self.forget_cached(repos)
        cleaned = clean_after_gc(self.root, repos, blobs_after)
        if cleaned.skipped:
            self.log.warning("cleaning left links alone", paths=list(cleaned.skipped[:20]))
        entry.cleaned = {
            "blob_prefix_dirs": cleaned.blob_prefix_dirs,
            "revision_dirs": cleaned.revision_dirs,
            "layer_links": cleaned.layer_links,
            "namespace_dirs": cleaned.namespace_dirs,
        }
        self.timed("clean", time.monotonic() - started)
        self.record_phase(Phase.CLEANED)

    def forget_cached(self, repositories: list[str] | None = None) -> None:
        """With ``cache: redis``, delete the entries of the blobs the GC removed."""
        registry = self.services.config.registry
        if registry.cache is not CacheKind.REDIS or not registry.redis_url:
            return
        gone = self.entry.blobs_gone or []
        sent = RedisCache(registry.redis_url).forget(
            gone, repositories if repositories is not None else repository_names(self.root)
        )
        self.log.info("redis cache cleaned", blobs=len(gone), commands=sent)

    def leave(self) -> None:
        started = time.monotonic()
        self.services.runtime.leave_maintenance()
        self.services.registry.wait_answering(timeout=120)
        took = time.monotonic() - started
        self.forget_cached()  # the twin may have cached descriptors while the GC ran
        self.timed("restart", took)
        # what clients saw: writes refused / nothing answering, from the start of the switch
        entry = self.entry
        entered = entry.maintenance_entered_at
        since = time.time() - (entered if entered is not None else time.time())
        if entry.maintenance_state is MaintenanceState.ONLINE:  # only the restart
            read_only = unavailable = took
        elif entry.maintenance_state is MaintenanceState.STOPPED:  # the whole maintenance
            read_only = unavailable = since
        else:  # read-only twin: writes refused throughout, nothing answers during the switches
            read_only = since
            unavailable = (entry.enter_seconds or 0.0) + took
        entry.read_only_seconds = round(read_only, 3)
        entry.unavailable_seconds = round(unavailable, 3)
        self.record_phase(Phase.LEFT)

    def verify(self) -> list[str]:
        started = time.monotonic()
        registry = self.services.registry
        broken: list[str] = []
        by_repo: dict[str, list[tuple[str, str]]] = {}
        for repo, tag, digest in self.entry.kept_tags or []:
            by_repo.setdefault(repo, []).append((tag, digest))
        with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
            for checks in pool.map(lambda item: registry.check_tags(*item), by_repo.items()):
                broken += [f"{c.repository}:{c.tag}: {c.reason}" for c in checks if not c.ok]
        for repo, tag, _ in self.entry.deleted_tags or []:
            if self._tag_present(repo, tag):
                continue  # pushed again since the run left maintenance
            status = registry.tag_status(repo, tag)
            if status != 404:
                broken.append(f"{repo}:{tag} was deleted but answers {status}")
        self.entry.broken = broken
        self.timed("verify", time.monotonic() - started)
        self.record_phase(Phase.VERIFIED)
        return broken

    def _tag_present(self, repository: str, tag: str) -> bool:
        """Whether a tag directory is there again (looked at without following a link)."""
        try:
            with open_storage(self.root) as storage:
                storage.stat(layout.tag_dir(repository, tag))
        except (StorageError, UnsafeEntry, OSError):
            return False
        return True
