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
import re
import signal
import time
from array import array
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

import structlog

from retentiond.config import Config
from retentiond.core.blob_table import BlobTable
from retentiond.core.gc_output import GcDeletions
from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.core.protection import NO_PROTECTION, Protection
from retentiond.core.run_lists import deleted_rows, kept_rows
from retentiond.errors import (
    ProtectionUnavailable,
    RetentiondError,
    RuntimeControlError,
    StorageError,
)
from retentiond.held_runs import purge_expired
from retentiond.logs import get_logger
from retentiond.policy.model import OrderBy, Policy
from retentiond.preview import FrozenRead
from retentiond.pulls.store import read_pull_times
from retentiond.registry import RegistryClient
from retentiond.render import plan_summary
from retentiond.run_cleaning import clean_in_window, tidy_after_run
from retentiond.run_files import (
    drop_removals,
    read_deleted_tags,
    read_kept,
    read_reclaimable,
    removal_batches,
    save_removals,
    write_deleted,
    write_kept,
    write_reclaimable,
)
from retentiond.run_records import DurationPhase, JournalEntry, Phase, RunRecord
from retentiond.runtime.base import MaintenanceState, Runtime
from retentiond.state import Journal
from retentiond.storage import layout
from retentiond.storage.location import Location
from retentiond.storage.port import Kind
from retentiond.storage.reader import data_sizes, read_blob_sizes
from retentiond.storage.removal import (
    move_out,
    open_storage,
    put_back,
    quarantine_exists,
    run_removals,
)
from retentiond.storage.removal_list import Removal, removals_for
from retentiond.storage.safe_fs import UnsafeEntry
from retentiond.verification import verify_instances

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: removals read and moved at a time (about 0.7 KiB each in memory: 10,000 are some 7 MiB;
#: 50,000 made the delete phase the run's peak at 50k tags)
MOVE_BATCH = 10_000

#: environment variable that makes the process SIGKILL itself at a fault point (tests only)
FAULT_ENV = "RETENTIOND_FAULT"
#: environment variable ``<point>=<seconds>``: wait at a fault point (tests only)
PAUSE_ENV = "RETENTIOND_PAUSE"


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
    #: told every finished run's record, once it is in the history (``notify.webhooks``);
    #: must not raise, and returns within a bounded time
    notify: Callable[[RunRecord], object] = lambda record: None
    #: reads the images in use (``protect:``), before the run and again on the frozen tree
    protection: Callable[[], Protection] = lambda: NO_PROTECTION


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
        self.root = services.config.registry.location
        self.log = get_logger(run_id=entry.run_id, job="maintenance")
        # every line logged while this run is in progress (runtime, registry) carries its id
        structlog.contextvars.bind_contextvars(run_id=entry.run_id)
        #: the frozen tree, kept through the run (None in a run resumed after a crash)
        self.inventory: Inventory | None = None
        #: the blobs the GC is expected to delete, with their data's sizes
        self.reclaimable: BlobTable | None = None
        #: what this run moves, read back from ``state_dir`` when a rollback needs it
        self.planned_removals: list[Removal] | None = None
        #: the list of removals is saved: from here a failure puts back what moved
        self.removals_saved = entry.phase.reached(Phase.PLANNED)
        #: False when the registry is known to be v3, whose GC aborts on a schema1 manifest
        self.gc_reads_schema1 = True

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
        started, called = time.monotonic(), time.time()
        self.entry.maintenance_entered_at = called
        state = runtime.enter_maintenance()
        took = time.monotonic() - started
        # clients see the switch from the moment the registry is asked to stop taking writes
        # (making the read-only twin before that changes nothing for them)
        switched = runtime.switched_at()
        if switched is not None and 0 <= switched - called <= took:
            self.entry.maintenance_entered_at = switched
            took -= switched - called
        self.entry.maintenance_state = state
        self.entry.enter_seconds = took
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
            raise MaintenanceFailed(gc_failure(outcome.returncode, outcome.output))
        after = read_blob_sizes(self.root)
        gone = [d for d in before if d not in after]
        self.entry.pre_gc_bytes = sum(before[d] for d in gone)
        self.entry.pre_gc_blobs = len(gone)
        self.entry.gc_before_removals = True
        purge_expired(self.services.config)
        self.log.info("collected held runs", blobs=len(gone), bytes=self.entry.pre_gc_bytes)

    def plan_frozen_tree(self, sizes: BlobTable | None, read: Callable[[], FrozenRead]) -> Plan:
        """Read the frozen tree and plan on it; the inventory is kept for :meth:`record_plan`
        and the cleaning after the GC. ``sizes``: the sizes of blob data stat'ed before the
        freeze (the preview's reclaimable blobs); the plan's reclaimable blobs not among them
        are stat'ed now, so that what the run reports is counted from the data on disk.
        ``read``: the read of the frozen tree (the preview's child, or
        :func:`retentiond.preview.read_frozen`), which takes the manifests the preview parsed
        where their bytes are the same (:mod:`retentiond.storage.reading.reuse`; the inventory
        is the same either way)."""
        started = time.monotonic()
        services = self.services
        # the images in use read again: a container may have started since the preview
        protection = services.protection()
        if not protection.available:
            raise ProtectionUnavailable(
                "in-use protection could not be read on the frozen tree, so nothing was "
                "removed: " + "; ".join(protection.problems)
            )
        try:
            frozen = read()
        except RetentiondError:
            if services.cancelled():  # a stop (SIGTERM to the service) ended the child too
                raise Cancelled("stopped during the read of the frozen tree") from None
            raise
        inventory = frozen.inventory
        self.log.debug(
            "frozen tree read",
            seconds=round(time.monotonic() - started, 3),
            manifests_from_preview=frozen.offered,
            manifests_reused=frozen.reused,
        )
        del frozen
        plan = make_plan(
            inventory,
            services.policies,
            services.config.safety,
            services.clock(),
            gc_reads_schema1=self.gc_reads_schema1,
            pulls=read_pull_times(services.config.pulls, services.config.state_dir),
            protected=protection,
        )
        self.reclaimable = _with_data_sizes(self.root, plan.reclaimable, sizes or BlobTable())
        self.inventory = inventory
        self.timed("plan", time.monotonic() - started)
        return plan

    def record_plan(self, plan: Plan) -> None:
        """Save what the plan removes, keeps and reclaims, each in a file of its own in
        ``state_dir`` (:mod:`retentiond.run_files`, before the first move), and its counts in
        the journal."""
        assert self.inventory is not None and self.reclaimable is not None
        entry, state_dir = self.entry, self.services.config.state_dir
        nested = {r.name for r in self.inventory.repositories if r.has_nested}
        save_removals(state_dir, self.run_id, removals_for(plan, nested))
        self.removals_saved = True
        by_policy: dict[str, dict[str, int]] = {"tags": {}, "manifests": {}}
        write_deleted(state_dir, self.run_id, deleted_rows(plan, by_policy))
        write_kept(state_dir, self.run_id, kept_rows(self.inventory, plan))
        write_reclaimable(state_dir, self.run_id, self.reclaimable)
        entry.plan = plan_summary(plan)
        entry.plan["blobs_reclaimed"] = len(self.reclaimable)
        entry.plan["bytes_reclaimed"] = sum(self.reclaimable.values())
        entry.plan["storage_bytes"] = self.inventory.storage_bytes  # (the status page's chart)
        entry.removed = {
            "tags": len(plan.tags_deleted),
            "manifests": len(plan.manifests_unlinked),
            "repositories": len(plan.repositories_removed),
        }
        entry.removed_by_policy = by_policy
        entry.repositories_removed = list(plan.repositories_removed)
        entry.blob_count_before = len(self.inventory.blobs)
        self.record_phase(Phase.PLANNED)

    def reclaimable_blobs(self) -> BlobTable:
        """The blobs the GC is expected to delete: from the plan, or (a resumed run) from
        ``state_dir``; none when the run saved none."""
        if self.reclaimable is None:
            found = read_reclaimable(self.services.config.state_dir, self.run_id)
            self.reclaimable = found if found is not None else BlobTable()
        return self.reclaimable

    def remove(self) -> None:
        started = time.monotonic()
        self.record_phase(Phase.REMOVING)
        count = 0
        hooked = FAULT_ENV in os.environ or PAUSE_ENV in os.environ  # (read once, not per move)

        def done(removal: Removal) -> None:
            nonlocal count
            count += 1
            if hooked:
                fault_point(f"removing:{count}")

        # in batches read from state_dir as they are moved: a million removals are never in
        # memory at once (each batch is checked whole before its first move; a failure in a
        # later batch puts back what earlier ones moved)
        # whether an earlier attempt may have held some already is known before the first
        # batch: later batches' names (their own indexes) cannot be held by this attempt
        resumed = quarantine_exists(self.root, self.run_id)
        for batch in removal_batches(self.services.config.state_dir, self.run_id, MOVE_BATCH):
            move_out(self.root, self.run_id, batch, done, resumed=resumed, prechecked=True)
        self.timed("delete", time.monotonic() - started)
        self.record_phase(Phase.REMOVED)

    def gc(self) -> None:
        """Run the registry's GC once; what it deleted is read from its output as it runs."""
        self.record_phase(Phase.GC)
        started = time.monotonic()
        deletions = GcDeletions(self.reclaimable_blobs())
        outcome = self.services.runtime.run_gc(on_line=deletions.feed)
        self.timed("gc", time.monotonic() - started)
        entry = self.entry
        entry.gc_output_tail = outcome.output.strip().splitlines()[-3:]
        # recorded even when the GC failed: the links it printed before failing may be gone
        entry.gc_unlinked_repositories = sorted(deletions.unlinked_repositories) or None
        if not outcome.ok:
            raise MaintenanceFailed(gc_failure(outcome.returncode, outcome.output))
        entry.gc_ran = True
        entry.gc_understood = deletions.understood
        if deletions.understood:
            entry.gc_eligible = deletions.eligible
            entry.gc_prefixes = sorted(deletions.prefixes)
            entry.blobs_deleted = deletions.blobs + (entry.pre_gc_blobs or 0)
            entry.bytes_reclaimed = deletions.bytes + (entry.pre_gc_bytes or 0)
            if deletions.unexpected_count:
                self.errors.append(
                    f"the GC deleted {deletions.unexpected_count} blobs the plan did not expect "
                    f"to be reclaimed (first: {', '.join(deletions.unexpected[:5])})"
                )
        else:
            self.log.warning(
                "the GC's output was not understood; cleaning walks the whole tree",
                output=entry.gc_output_tail,
            )
        self.record_phase(Phase.GC_DONE)

    def clean(self) -> None:
        """Inside the window, after the GC: :func:`retentiond.run_cleaning.clean_in_window`."""
        started = time.monotonic()
        clean_in_window(self)
        self.timed("clean", time.monotonic() - started)
        self.record_phase(Phase.CLEANED)

    def tidy(self) -> None:
        """Once the run is recorded: :func:`retentiond.run_cleaning.tidy_after_run`."""
        tidy_after_run(self)

    def leave(self) -> None:
        started = time.monotonic()
        self.services.runtime.leave_maintenance()
        self.services.registry.wait_answering(timeout=120)
        took = time.monotonic() - started
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
        """Ask the registry for every kept tag, child manifest and blob, and every deleted tag
        (:func:`~retentiond.verification.verify_run`), streamed from the run's files."""
        started = time.monotonic()
        state_dir = self.services.config.state_dir
        result = verify_instances(  # through each instance of runtime.containers, if any
            self.services.registry,
            self.services.runtime.instances(),
            lambda: read_kept(state_dir, self.run_id),
            lambda: read_deleted_tags(state_dir, self.run_id),
            reappeared=self._tag_present,
        )
        self.entry.broken = result.broken
        self.timed("verify", time.monotonic() - started)
        self.record_phase(Phase.VERIFIED)
        return result.broken

    def _tag_present(self, repository: str, tag: str) -> bool:
        """Whether a tag directory is there again (looked at without following a link)."""
        try:
            with open_storage(self.root) as storage:
                storage.stat(layout.tag_dir(repository, tag))
        except (StorageError, UnsafeEntry, OSError):
            return False
        return True


def gc_failure(returncode: int, output: str) -> str:
    """Why a run failed when the registry's GC did: its exit code and last lines, and what to
    do when the cause is known."""
    tail = output.strip().splitlines()[-3:]
    message = f"the registry's garbage-collect exited {returncode}: {' / '.join(tail)}"
    if "Path not found" in output and layout.REPOSITORIES in output:
        message += (
            "; the registry's GC (distribution 2.8) cannot run on a storage without any "
            "repository (on S3 there is no empty repositories/ directory once the last one is "
            "removed): the blobs are collected by the first GC after the next push"
        )
    return message


def _with_data_sizes(root: Location, reclaimable: Collection[str], known: BlobTable) -> BlobTable:
    """The reclaimable blobs with the sizes of their data: from ``known`` (stat'ed before the
    freeze), the others stat'ed now; a blob without data is left out (nothing to reclaim).
    Looked up a chunk at a time (a million digests are never a list), once: the ids found are
    kept (8 bytes a digest) for the second pass. ``known`` itself when it is the answer."""
    ids = array("q")
    digests = iter(reclaimable)
    while chunk := list(islice(digests, 65536)):
        ids.extend(known.ids_of(chunk))
    missing = data_sizes(root, (d for d, i in zip(reclaimable, ids, strict=True) if i < 0))
    found = len(ids) - ids.count(-1)
    if not missing and found == len(known):  # the usual run: the tree did not change since
        return known  # (every blob of ``known`` is reclaimable): no second table of them all
    table_sizes = known.sizes

    def sized() -> Iterator[tuple[str, int]]:
        for digest, blob_id in zip(reclaimable, ids, strict=True):
            if blob_id >= 0:
                yield digest, table_sizes[blob_id]
            elif digest in missing:
                yield digest, missing[digest]

    return BlobTable.from_sorted(sized())
