"""The journal and the run history as typed values: the files retentiond wrote before they were
typed are read, and written back byte for byte; what is of the wrong shape is refused as it
always was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retentiond.errors import StorageError
from retentiond.run_files import migrate_legacy
from retentiond.run_records import (
    PHASE_NAMES,
    DeletedTag,
    HistoryEntry,
    HistoryMark,
    JournalEntry,
    KeptTag,
    Phase,
    RunRecord,
    RunStatus,
    UnlinkedManifest,
)
from retentiond.runtime.base import MaintenanceState
from retentiond.state import Journal, append_history, read_history

RUN = "20261201T030000Z-1a2b3c"

#: A journal as the untyped code (``dict[str, Any]``) saved it at ``left``, with every field a
#: run can set: a run with safety.grace whose GC was skipped after collecting earlier runs.
JOURNAL: dict[str, Any] = {
    "run_id": RUN,
    "phase": "left",
    "started_at": "2026-12-01T03:00:00Z",
    "gc_mode": "readonly",
    "durations": {"gc": 12.5, "plan": 0.42, "delete": 0.1, "clean": 0.3, "restart": 2.0},
    "errors": [],
    "maintenance_entered_at": 1796094000.25,
    "maintenance_state": "read-only",
    "enter_seconds": 1.5,
    "pre_gc_bytes": 2048,
    "pre_gc_blobs": 2,
    "gc_before_removals": True,
    "plan": {
        "repositories": 2,
        "tags": 4,
        "tags_deleted": 1,
        "manifests_unlinked": 1,
        "repositories_removed": 0,
        "blobs_reclaimed": 2,
        "bytes_reclaimed": 3000,
        "refused": 0,
    },
    "reclaimable": {"sha256:" + "a" * 64: 1000, "sha256:" + "b" * 64: 2000},
    "deleted_tags": [["ci/app", "pr-1", "ci-builds"]],
    "unlinked": [["ci/app", "sha256:" + "c" * 64, None]],
    "repositories_removed": [],
    "kept_tags": [
        ["ci/app", "main", "sha256:" + "d" * 64],
        ["rel/app", "v1", "sha256:" + "e" * 64],
    ],
    "blob_count_before": 10,
    "gc_skipped": "safety.grace",
    "held_until": "2026-12-08T03:00:00Z",
    "bytes_reclaimed": 2048,
    "blobs_deleted": 2,
    "blobs_gone": [],
    "cleaned": {"blob_prefix_dirs": 0, "revision_dirs": 1, "layer_links": 2, "namespace_dirs": 0},
    "read_only_seconds": 20.123,
    "unavailable_seconds": 3.5,
    "resumed": True,
}

#: The line of ``runs.jsonl`` the untyped code appended for that run once it had verified
#: (``status`` ok), as ``json.dumps(record, sort_keys=True)`` wrote it.
RUNS_LINE = json.dumps(
    {
        "run_id": RUN,
        "status": "ok",
        "started_at": "2026-12-01T03:00:00Z",
        "finished_at": "2026-12-01T03:05:00Z",
        "gc_mode": "readonly",
        "plan": JOURNAL["plan"],
        "removed": {"tags": 1, "manifests": 1, "repositories": 0},
        "deleted_tags": [["ci/app", "pr-1", "ci-builds"]],
        "unlinked": [["ci/app", "sha256:" + "c" * 64, None]],
        "repositories_removed": [],
        "bytes_reclaimed": 2048,
        "blobs_deleted": 2,
        "durations": {
            "gc": 12.5,
            "plan": 0.42,
            "delete": 0.1,
            "clean": 0.3,
            "restart": 2.0,
            "verify": 0.7,
        },
        "read_only_seconds": 20.123,
        "unavailable_seconds": 3.5,
        "broken": [],
        "errors": [],
        "gc_ran": False,
        "gc_before_removals": True,
        "held_until": "2026-12-08T03:00:00Z",
        "resumed": True,
        "cleaned": JOURNAL["cleaned"],
        "blob_count_before": 10,
    },
    sort_keys=True,
)


def test_a_journal_of_the_untyped_code_is_read_into_its_fields(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.path.write_text(json.dumps(JOURNAL, indent=1, sort_keys=True))
    entry = journal.load()
    assert entry is not None
    assert entry.run_id == RUN
    assert entry.phase is Phase.LEFT
    assert entry.maintenance_state is MaintenanceState.READ_ONLY
    assert entry.deleted_tags == [DeletedTag("ci/app", "pr-1", "ci-builds")]
    assert entry.unlinked == [UnlinkedManifest("ci/app", "sha256:" + "c" * 64, None)]
    assert entry.kept_tags is not None and entry.kept_tags[1] == KeptTag(
        "rel/app", "v1", "sha256:" + "e" * 64
    )
    assert entry.gc_before_removals and entry.resumed and not entry.gc_ran
    assert entry.pre_gc_bytes == 2048 and entry.held_until == "2026-12-08T03:00:00Z"
    assert entry.broken is None  # not verified yet


def test_a_journal_is_saved_back_byte_for_byte(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    text = json.dumps(JOURNAL, indent=1, sort_keys=True)
    journal.path.write_text(text)
    entry = journal.load()
    assert entry is not None
    journal.save(entry)
    assert journal.path.read_text() == text


def test_a_new_journal_has_the_keys_the_untyped_code_wrote_first(tmp_path: Path) -> None:
    """At ``started``: only what the run knows then (no null for what is not set yet)."""
    journal = Journal(tmp_path)
    journal.save(
        JournalEntry(RUN, Phase.STARTED, started_at="2026-12-01T03:00:00Z", gc_mode="readonly")
    )
    assert json.loads(journal.path.read_text()) == {
        "run_id": RUN,
        "phase": "started",
        "started_at": "2026-12-01T03:00:00Z",
        "gc_mode": "readonly",
        "durations": {},
        "errors": [],
    }


def test_the_record_of_an_earlier_versions_run_counts_what_it_removed(tmp_path: Path) -> None:
    """The line is the one 0.1 wrote, with the lists of tags and manifests replaced by their
    counts per policy (the lists are in the run's ``deleted.jsonl``)."""
    entry = JournalEntry.from_json(json.loads(json.dumps(JOURNAL)))
    assert migrate_legacy(tmp_path, entry)
    entry.durations["verify"] = 0.7
    entry.broken = []
    record = RunRecord.of_run(entry, RunStatus.OK, "2026-12-01T03:05:00Z")
    append_history(tmp_path, record.to_json())
    expected = json.loads(RUNS_LINE)
    del expected["deleted_tags"], expected["unlinked"]
    expected["removed_by_policy"] = {"tags": {"ci-builds": 1}, "manifests": {"": 1}}
    expected["details"] = f"runs/{RUN}/deleted.jsonl"
    assert json.loads((tmp_path / "runs.jsonl").read_text()) == expected


def test_a_runs_line_of_the_untyped_code_is_read_back(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text(RUNS_LINE + "\n")
    [past] = read_history(tmp_path)
    assert past == HistoryEntry(
        run_id=RUN,
        status="ok",
        finished_at="2026-12-01T03:05:00Z",
        held_until="2026-12-08T03:00:00Z",
        gc_ran=False,
        gc_before_removals=True,
        durations={
            "gc": 12.5,
            "plan": 0.42,
            "delete": 0.1,
            "clean": 0.3,
            "restart": 2.0,
            "verify": 0.7,
        },
        blob_count_before=10,
        read_only_seconds=20.123,
        unavailable_seconds=3.5,
        broken=[],
        errors=[],
        started_at="2026-12-01T03:00:00Z",
        removed={"tags": 1, "manifests": 1, "repositories": 0},
        bytes_reclaimed=2048,
        blobs_deleted=2,
        plan=JOURNAL["plan"],
    )
    assert past.status == RunStatus.OK


def test_purge_and_undo_lines_are_those_of_the_untyped_code(tmp_path: Path) -> None:
    append_history(tmp_path, HistoryMark(RUN, RunStatus.PURGED).to_json())
    append_history(tmp_path, HistoryMark(RUN, RunStatus.UNDONE, ["a conflict"]).to_json())
    assert (tmp_path / "runs.jsonl").read_text().splitlines() == [
        json.dumps({"run_id": RUN, "status": "purged", "purged": True}, sort_keys=True),
        json.dumps(
            {"run_id": RUN, "status": "undone", "purged": True, "conflicts": ["a conflict"]},
            sort_keys=True,
        ),
    ]
    purged, undone = read_history(tmp_path)
    assert purged.purged and undone.purged and purged.held_until is None
    assert purged.to_json() == {"run_id": RUN, "status": "purged", "purged": True}


def test_a_status_this_version_does_not_know_is_read_as_written(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text(json.dumps({"run_id": RUN, "status": "later"}) + "\n")
    assert [r.status for r in read_history(tmp_path)] == ["later"]


def test_phases_are_in_the_order_of_a_run() -> None:
    assert PHASE_NAMES == (
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
        "recorded",
    )
    assert Phase.GC.reached(Phase.REMOVED) and Phase.GC.reached(Phase.GC)
    assert not Phase.REMOVING.reached(Phase.REMOVED)
    assert Phase.VERIFIED.reached(Phase.STARTED)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"phase": "half-done"}, "has the phase 'half-done', not one of ('started', "),
        ({"maintenance_state": "frozen"}, "has the maintenance_state 'frozen'"),
        ({"deleted_tags": [["a", "b"]]}, "'deleted_tags' is"),
        ({"resumed": "yes"}, "'resumed' is 'yes', not true or false"),
    ],
)
def test_a_journal_of_the_wrong_shape_is_refused(
    tmp_path: Path, changes: dict[str, Any], why: str
) -> None:
    journal = Journal(tmp_path)
    journal.path.write_text(json.dumps({**JOURNAL, **changes}))
    with pytest.raises(StorageError) as refused:
        journal.load()
    message = str(refused.value)
    assert message.startswith(f"the journal {journal.path} ")
    assert why in message and "move the file away" in message
