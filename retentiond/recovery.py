"""Crash recovery: finish or roll back the run a crash (or ``kill -9``) interrupted.

The journal (``state_dir/journal.json``) says which phase the run reached. Before all its
removals were made, the run is rolled back: everything it moved is put back from the list in
``state_dir``. After, it is finished: frozen again for the GC and the cleaning, then restarted
and verified (:func:`retentiond.maintenance.drive`). Either way it ends with its record in
``runs.jsonl``, marked ``resumed``.
"""

from __future__ import annotations

from retentiond.logs import get_logger
from retentiond.maintenance import RunResult, close_run, drive, finish_record
from retentiond.run_files import migrate_legacy
from retentiond.run_phases import MaintenanceRun, MaintenanceServices
from retentiond.run_records import Phase, RunStatus
from retentiond.state import Journal, read_history


def recover_interrupted(services: MaintenanceServices) -> RunResult | None:
    """Finish or roll back a run that a crash interrupted. Call with the run lock held.

    Before the removals were all made, the run is rolled back: everything is put back. After,
    it is finished: frozen again for the GC and the cleaning, then restarted and verified.
    A journal of the wrong shape is an error, and nothing is done.
    """
    read_history(services.config.state_dir)  # checked before anything changes
    entry = Journal(services.config.state_dir).load()
    runtime = services.runtime
    if entry is None:
        if runtime.recover():
            get_logger(job="maintenance").warning(
                "restored a registry that an earlier run left in maintenance"
            )
        return None
    if migrate_legacy(services.config.state_dir, entry):
        Journal(services.config.state_dir).save(entry)
    run = MaintenanceRun(services, entry)
    phase = entry.phase
    rolling_back = not phase.reached(Phase.REMOVED)
    if rolling_back:
        run.removals()  # read and checked before anything changes
    mark = getattr(runtime, "mark_interrupted", None)
    if callable(mark):
        mark()
    runtime.recover()
    entry.resumed = True
    if phase is Phase.RECORDED:  # in the history already: only its tidying was left
        run.log.warning("tidying after an interrupted run")
        run.tidy()
        close_run(run)
        return None
    if rolling_back:
        errors = len(run.errors)
        run.roll_back()
        services.registry.wait_answering(timeout=120)
        record = finish_record(run, RunStatus.ROLLED_BACK)
        run.log.warning(
            "rolled back an interrupted run",
            phase=phase.value,
            conflicts=len(run.errors) - errors,
        )
        return RunResult(run.run_id, RunStatus.ROLLED_BACK, record)
    run.log.warning("finishing an interrupted run", phase=phase.value)
    if phase is Phase.GC:
        entry.phase = Phase.REMOVED  # the GC did not finish: run it again, frozen
    if not entry.phase.reached(Phase.CLEANED):
        run.enter_maintenance(record=False)
    return drive(run, no_gc=False)
