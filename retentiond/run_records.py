"""The run's state as typed values, and their JSON: the one place that reads and writes it.

- :class:`Phase`: the steps of a run, in order, as its journal records them.
- :class:`JournalEntry`: ``journal.json``, the run in progress. Saved at every phase, so a run
  killed at any point is finished or rolled back from it by the next start.
- :class:`RunRecord`: what a finished run appends to ``runs.jsonl`` (and what ``apply`` prints,
  the metrics count and ``/status`` shows).
- :class:`HistoryMark`: the line ``runs.jsonl`` gets when a run's quarantine is purged or undone.
- :class:`HistoryEntry`: a line of ``runs.jsonl`` as it is read back (any of the two above, or
  one an earlier version wrote): the fields that decisions and metrics read.

What is read back is checked field by field before it is used (:func:`shape_problem`): a file of
the wrong shape raises :class:`RecordProblem`, which :mod:`retentiond.state` turns into an error
naming the file; nothing is done with it. The JSON keys and values are those retentiond has
always written, so a journal or history written by an earlier version is read, and the other
way round. Run ids live here too: their format is checked wherever one becomes a path.

One module on purpose, although long: the types, their JSON and the checks of what is read back
change together, and :mod:`retentiond.state` only moves their bytes to and from the files.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeVar, get_args

from retentiond.runtime.base import MaintenanceState

_T = TypeVar("_T")

# -- run ids --------------------------------------------------------------------------------------

#: the one format of a run id, as :func:`new_run_id` makes it; checked wherever one becomes a path
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
RUN_ID_EXAMPLE = "20261201T030000Z-1a2b3c"


def new_run_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def run_id_problem(value: object) -> str | None:
    """Why ``value`` is not a run id (the text is safe to print: repr, cut short), or None."""
    if is_run_id(value):
        return None
    return f"{_short(value)} is not a retentiond run id (like {RUN_ID_EXAMPLE})"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- phases, statuses, durations ------------------------------------------------------------------


class Phase(enum.StrEnum):
    """A run's steps, in order; the journal is saved as each is reached."""

    STARTED = "started"
    MAINTENANCE = "maintenance"  # the registry refuses writes (or is stopped)
    PLANNED = "planned"  # planned on the frozen tree; its removals saved in state_dir
    REMOVING = "removing"
    REMOVED = "removed"  # every removal made: from here a crash is finished, not rolled back
    GC = "gc"
    GC_DONE = "gc-done"  # the GC ran, or was skipped (held for undo)
    CLEANED = "cleaned"
    LEFT = "left"  # the registry is read-write again
    VERIFIED = "verified"
    RECORDED = "recorded"  # in the history: only the tidying after the run is left

    def reached(self, other: Phase) -> bool:
        """Whether a run at this phase has reached ``other`` (or gone past it)."""
        return _PHASE_ORDER[self] >= _PHASE_ORDER[other]


#: the directory of ``state_dir`` that holds each run's files (:mod:`retentiond.run_files`)
RUNS_DIR = "runs"

_PHASE_ORDER = {phase: n for n, phase in enumerate(Phase)}
PHASE_NAMES = tuple(p.value for p in Phase)


class RunStatus(enum.StrEnum):
    """How a run ended (a record's ``status``)."""

    OK = "ok"  # includes a GC held for safety.grace
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"  # interrupted before all its removals: everything put back
    CANCELLED = "cancelled"  # stopped on request before all its removals: put back
    DRY_RUN = "dry-run"
    NOTHING_TO_DO = "nothing-to-do"
    REFUSED = "refused"  # not confirmed
    PURGED = "purged"  # (a history mark) its quarantine was deleted after a GC
    UNDONE = "undone"  # (a history mark) its removals were put back by ``undo``


#: The timed parts of a run: the keys of a record's ``durations`` and the ``phase`` label of
#: the ``maintenance_duration_seconds`` metric (not the journal's :class:`Phase`).
DurationPhase = Literal["plan", "delete", "gc", "clean", "restart", "verify"]
DURATION_PHASES: tuple[DurationPhase, ...] = get_args(DurationPhase)


class DeletedTag(NamedTuple):
    repository: str
    tag: str
    policy: str | None


class UnlinkedManifest(NamedTuple):
    repository: str
    digest: str
    policy: str | None


class KeptTag(NamedTuple):
    """A tag the run keeps, verified after the run."""

    repository: str
    tag: str
    digest: str


# -- checking what is read back -------------------------------------------------------------------


class RecordProblem(ValueError):
    """A state file's JSON is not of the shape retentiond writes; the message says why."""


#: a value's check and what the value should be, in words
Check = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_triple(value: Any) -> bool:
    """[repository, name, policy-or-null]"""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and (value[2] is None or isinstance(value[2], str))
    )


def _list_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(item(v) for v in value)


def _dict_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: (
        isinstance(value, dict) and all(isinstance(k, str) and item(v) for k, v in value.items())
    )


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


STR: Check = (lambda v: isinstance(v, str), "a string")
BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
INT: Check = (_is_int, "an integer")
NUMBER: Check = (_is_number, "a number")
STRINGS: Check = (_list_of(lambda v: isinstance(v, str)), "a list of strings")
TRIPLES: Check = (_list_of(_is_triple), "a list of [repository, name, policy]")
DURATIONS: Check = (_dict_of(_is_number), "an object of numbers")
COUNTS: Check = (_dict_of(_is_int), "an object of integers")
TIME: Check = (_optional(_is_iso), "an ISO 8601 time or null")
RUN: Check = (is_run_id, f"a run id like {RUN_ID_EXAMPLE}")

#: the journal's fields that a run reads back, and what each must be (others are ignored)
JOURNAL_FIELDS: Mapping[str, Check] = {
    "run_id": RUN,
    "phase": STR,
    "started_at": TIME,
    "gc_mode": STR,
    "durations": DURATIONS,
    "errors": STRINGS,
    "maintenance_entered_at": NUMBER,
    "maintenance_state": STR,
    "enter_seconds": NUMBER,
    "plan": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "removals": (lambda v: isinstance(v, list), "a list"),
    "reclaimable": COUNTS,
    "deleted_tags": TRIPLES,
    "unlinked": TRIPLES,
    "repositories_removed": STRINGS,
    "kept_tags": TRIPLES,
    "blob_count_before": INT,
    "gc_ran": BOOL,
    "gc_before_removals": BOOL,
    "pre_gc_bytes": INT,
    "pre_gc_blobs": INT,
    "gc_output_tail": STRINGS,
    "gc_skipped": STR,
    "held_until": TIME,
    "bytes_reclaimed": INT,
    "blobs_deleted": INT,
    "blobs_gone": STRINGS,
    "removed": COUNTS,
    "removed_by_policy": (
        _dict_of(_dict_of(_is_int)),
        "an object of objects of integers",
    ),
    "gc_eligible": INT,
    "gc_prefixes": STRINGS,
    "gc_understood": BOOL,
    "gc_unlinked_repositories": STRINGS,
    "layer_links": INT,
    "cleaned": COUNTS,
    "resumed": BOOL,
    "read_only_seconds": NUMBER,
    "unavailable_seconds": NUMBER,
    "broken": STRINGS,
}
JOURNAL_REQUIRED = ("run_id", "phase")

#: the fields of a history record that decisions and metrics read back
HISTORY_FIELDS: Mapping[str, Check] = {
    "run_id": RUN,
    "status": STR,
    "finished_at": TIME,
    "held_until": TIME,
    "gc_ran": BOOL,
    "gc_before_removals": BOOL,
    "purged": BOOL,
    "durations": DURATIONS,
    "blob_count_before": INT,
    "read_only_seconds": NUMBER,
    "unavailable_seconds": NUMBER,
    "broken": STRINGS,
    "errors": STRINGS,
    # what the status page shows of a run
    "started_at": TIME,
    "removed": COUNTS,
    "bytes_reclaimed": INT,
    "blobs_deleted": INT,
    "plan": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
}
HISTORY_REQUIRED = ("run_id",)


def shape_problem(value: Any, fields: Mapping[str, Check], required: tuple[str, ...]) -> str | None:
    """What is wrong with a JSON object read back from ``state_dir``, or None."""
    if not isinstance(value, dict):
        return f"it is {type(value).__name__}, not a JSON object"
    for key in required:
        if key not in value:
            return f"{key!r} is missing"
    for key, (check, what) in fields.items():
        if key in value and not check(value[key]):
            return f"{key!r} is {_short(value[key])}, not {what}"
    return None


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _flags(**flags: bool | None) -> dict[str, bool]:
    """The flags that are set, as the journal writes them (a flag is written only once true)."""
    return {k: True for k, v in flags.items() if v}


# -- the journal ----------------------------------------------------------------------------------


@dataclass
class JournalEntry:
    """The run in progress, as ``journal.json`` holds it.

    A field is None (and absent from the file) until the phase that sets it; the three flags
    are written once true. ``removals`` is what a journal of an earlier version listed (that
    version kept no list in ``state_dir``); recovery reads it only when there is no such list.
    """

    run_id: str
    phase: Phase
    started_at: str | None = None
    gc_mode: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # entering maintenance
    maintenance_entered_at: float | None = None
    maintenance_state: MaintenanceState | None = None
    enter_seconds: float | None = None
    # with safety.grace: the GC of earlier held runs before this run's removals
    gc_before_removals: bool = False
    pre_gc_bytes: int | None = None
    pre_gc_blobs: int | None = None
    # the plan on the frozen tree (its lists are files of their own: retentiond.run_files)
    plan: dict[str, Any] | None = None
    #: tags, manifests and repositories the run removes (counts)
    removed: dict[str, int] | None = None
    #: {"tags": {policy: count}, "manifests": {policy: count}}
    removed_by_policy: dict[str, dict[str, int]] | None = None
    # an earlier version's journal held these lists itself; read, migrated to files, dropped
    removals: list[Any] | None = None
    reclaimable: dict[str, int] | None = None
    deleted_tags: list[DeletedTag] | None = None
    unlinked: list[UnlinkedManifest] | None = None
    repositories_removed: list[str] | None = None
    kept_tags: list[KeptTag] | None = None
    blob_count_before: int | None = None
    # the GC, or why it did not run
    gc_ran: bool = False
    gc_output_tail: list[str] | None = None
    gc_skipped: str | None = None
    held_until: str | None = None
    #: from the GC's output: blobs it called eligible (and deleted), the blob store
    #: directories they were in, and whether its output was understood (else: a full clean)
    gc_eligible: int | None = None
    gc_prefixes: list[str] | None = None
    gc_understood: bool = False
    #: repositories whose ``_layers`` links to blobs that survive the GC deleted (3.x): the
    #: redis cache forgets what it holds for them
    gc_unlinked_repositories: list[str] | None = None
    # cleaning after the GC
    bytes_reclaimed: int | None = None
    blobs_deleted: int | None = None
    blobs_gone: list[str] | None = None
    cleaned: dict[str, int] | None = None
    #: dangling ``_layers`` links removed once the registry was read-write again
    layer_links: int | None = None
    # leaving maintenance and verifying
    read_only_seconds: float | None = None
    unavailable_seconds: float | None = None
    broken: list[str] | None = None
    #: finished (or rolled back) by a later start after a crash
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``journal.json`` (saved with sorted keys)."""
        state = self.maintenance_state
        return {
            "run_id": self.run_id,
            "phase": self.phase.value,
            "durations": self.durations,
            "errors": self.errors,
            **_without_none(
                {
                    "started_at": self.started_at,
                    "gc_mode": self.gc_mode,
                    "maintenance_entered_at": self.maintenance_entered_at,
                    "maintenance_state": state.value if state is not None else None,
                    "enter_seconds": self.enter_seconds,
                    "pre_gc_bytes": self.pre_gc_bytes,
                    "pre_gc_blobs": self.pre_gc_blobs,
                    "plan": self.plan,
                    "removed": self.removed,
                    "removed_by_policy": self.removed_by_policy,
                    "removals": self.removals,
                    "reclaimable": self.reclaimable,
                    "deleted_tags": self.deleted_tags,
                    "unlinked": self.unlinked,
                    "repositories_removed": self.repositories_removed,
                    "kept_tags": self.kept_tags,
                    "blob_count_before": self.blob_count_before,
                    "gc_output_tail": self.gc_output_tail,
                    "gc_skipped": self.gc_skipped,
                    "held_until": self.held_until,
                    "gc_eligible": self.gc_eligible,
                    "gc_prefixes": self.gc_prefixes,
                    "gc_unlinked_repositories": self.gc_unlinked_repositories,
                    "bytes_reclaimed": self.bytes_reclaimed,
                    "blobs_deleted": self.blobs_deleted,
                    "blobs_gone": self.blobs_gone,
                    "cleaned": self.cleaned,
                    "layer_links": self.layer_links,
                    "read_only_seconds": self.read_only_seconds,
                    "unavailable_seconds": self.unavailable_seconds,
                    "broken": self.broken,
                }
            ),
            **_flags(
                gc_before_removals=self.gc_before_removals,
                gc_ran=self.gc_ran,
                gc_understood=self.gc_understood,
                resumed=self.resumed,
            ),
        }

    @classmethod
    def from_json(cls, value: Any) -> JournalEntry:
        """The entry of a parsed ``journal.json``, checked. :class:`RecordProblem` completes
        "the journal <path> ..." with what is wrong."""
        problem = shape_problem(value, JOURNAL_FIELDS, JOURNAL_REQUIRED)
        if problem is not None:
            raise RecordProblem(f"is not a journal of retentiond: {problem}")
        phase = value["phase"]
        if phase not in PHASE_NAMES:
            raise RecordProblem(f"has the phase {phase[:40]!r}, not one of {PHASE_NAMES}")
        state = value.get("maintenance_state")
        if state is not None and state not in {s.value for s in MaintenanceState}:
            raise RecordProblem(f"has the maintenance_state {state[:40]!r}")
        get = value.get
        return cls(
            run_id=value["run_id"],
            phase=Phase(phase),
            started_at=get("started_at"),
            gc_mode=get("gc_mode"),
            durations=get("durations", {}),
            errors=get("errors", []),
            maintenance_entered_at=get("maintenance_entered_at"),
            maintenance_state=MaintenanceState(state) if state is not None else None,
            enter_seconds=get("enter_seconds"),
            gc_before_removals=bool(get("gc_before_removals")),
            pre_gc_bytes=get("pre_gc_bytes"),
            pre_gc_blobs=get("pre_gc_blobs"),
            plan=get("plan"),
            removed=get("removed"),
            removed_by_policy=get("removed_by_policy"),
            removals=get("removals"),
            reclaimable=get("reclaimable"),
            deleted_tags=_triples(get("deleted_tags"), DeletedTag),
            unlinked=_triples(get("unlinked"), UnlinkedManifest),
            repositories_removed=get("repositories_removed"),
            kept_tags=_triples(get("kept_tags"), KeptTag),
            blob_count_before=get("blob_count_before"),
            gc_ran=bool(get("gc_ran")),
            gc_output_tail=get("gc_output_tail"),
            gc_skipped=get("gc_skipped"),
            held_until=get("held_until"),
            gc_eligible=get("gc_eligible"),
            gc_prefixes=get("gc_prefixes"),
            gc_understood=bool(get("gc_understood")),
            gc_unlinked_repositories=get("gc_unlinked_repositories"),
            bytes_reclaimed=get("bytes_reclaimed"),
            blobs_deleted=get("blobs_deleted"),
            blobs_gone=get("blobs_gone"),
            cleaned=get("cleaned"),
            layer_links=get("layer_links"),
            read_only_seconds=get("read_only_seconds"),
            unavailable_seconds=get("unavailable_seconds"),
            broken=get("broken"),
            resumed=bool(get("resumed")),
        )


def _triples(value: list[list[Any]] | None, make: Callable[..., _T]) -> list[_T] | None:
    return None if value is None else [make(*v) for v in value]


# -- the history ----------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What a finished run appends to ``runs.jsonl``: the journal's outcome, in one line."""

    run_id: str
    status: RunStatus
    finished_at: str
    started_at: str | None = None
    gc_mode: str | None = None
    plan: dict[str, Any] | None = None
    #: tags, manifests and repositories removed (the lists: ``runs/<run_id>/deleted.jsonl``)
    removed: dict[str, int] = field(default_factory=dict)
    #: {"tags": {policy: count}, "manifests": {policy: count}}
    removed_by_policy: dict[str, dict[str, int]] = field(default_factory=dict)
    repositories_removed: list[str] = field(default_factory=list)
    bytes_reclaimed: int = 0
    blobs_deleted: int = 0
    durations: dict[str, float] = field(default_factory=dict)
    read_only_seconds: float = 0.0
    unavailable_seconds: float = 0.0
    broken: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    gc_ran: bool = False
    gc_before_removals: bool = False
    held_until: str | None = None
    resumed: bool = False
    cleaned: dict[str, int] = field(default_factory=dict)
    blob_count_before: int = 0

    @classmethod
    def of_run(cls, entry: JournalEntry, status: RunStatus, finished_at: str) -> RunRecord:
        """The record of the run ``entry`` describes, ended with ``status``."""
        return cls(
            run_id=entry.run_id,
            status=status,
            finished_at=finished_at,
            started_at=entry.started_at,
            gc_mode=entry.gc_mode,
            plan=entry.plan,
            removed=_or(entry.removed, {}),
            removed_by_policy=_or(entry.removed_by_policy, {}),
            repositories_removed=_or(entry.repositories_removed, []),
            bytes_reclaimed=_or(entry.bytes_reclaimed, 0),
            blobs_deleted=_or(entry.blobs_deleted, 0),
            durations=entry.durations,
            read_only_seconds=_or(entry.read_only_seconds, 0.0),
            unavailable_seconds=_or(entry.unavailable_seconds, 0.0),
            broken=_or(entry.broken, []),
            errors=entry.errors,
            gc_ran=entry.gc_ran,
            gc_before_removals=entry.gc_before_removals,
            held_until=entry.held_until,
            resumed=entry.resumed,
            cleaned=_or(entry.cleaned, {}),
            blob_count_before=_or(entry.blob_count_before, 0),
        )

    def to_json(self) -> dict[str, Any]:
        """The line of ``runs.jsonl`` (also ``/status``'s ``last_run``, in this key order)."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "gc_mode": self.gc_mode,
            "plan": self.plan,
            "removed": {
                "tags": self.removed.get("tags", 0),
                "manifests": self.removed.get("manifests", 0),
                "repositories": self.removed.get("repositories", 0),
            },
            "removed_by_policy": self.removed_by_policy,
            "details": f"{RUNS_DIR}/{self.run_id}/deleted.jsonl" if self.removed else None,
            "repositories_removed": self.repositories_removed,
            "bytes_reclaimed": self.bytes_reclaimed,
            "blobs_deleted": self.blobs_deleted,
            "durations": self.durations,
            "read_only_seconds": self.read_only_seconds,
            "unavailable_seconds": self.unavailable_seconds,
            "broken": self.broken,
            "errors": self.errors,
            "gc_ran": self.gc_ran,
            "gc_before_removals": self.gc_before_removals,
            "held_until": self.held_until,
            "resumed": self.resumed,
            "cleaned": self.cleaned,
            "blob_count_before": self.blob_count_before,
        }


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


@dataclass(frozen=True)
class HistoryMark:
    """The line appended when a run's quarantine is gone: purged after a GC (``purged``) or
    put back by ``undo`` (``undone``, with the conflicts it met). Undo is over for that run."""

    run_id: str
    status: Literal[RunStatus.PURGED, RunStatus.UNDONE]
    conflicts: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"run_id": self.run_id, "status": self.status.value, "purged": True}
        if self.conflicts is not None:
            line["conflicts"] = self.conflicts
        return line


@dataclass(frozen=True)
class HistoryEntry:
    """A line of ``runs.jsonl`` as read back: the fields decisions and metrics read, each None
    when the line does not have it (a :class:`HistoryMark`, or a line of an earlier version).

    ``status`` is kept as written: a status this version does not know is not an error.
    """

    run_id: str
    status: str | None = None
    finished_at: str | None = None
    held_until: str | None = None
    gc_ran: bool | None = None
    gc_before_removals: bool | None = None
    purged: bool | None = None
    durations: dict[str, float] | None = None
    blob_count_before: int | None = None
    read_only_seconds: float | None = None
    unavailable_seconds: float | None = None
    broken: list[str] | None = None
    errors: list[str] | None = None
    started_at: str | None = None
    #: tags, manifests and repositories removed
    removed: dict[str, int] | None = None
    bytes_reclaimed: int | None = None
    blobs_deleted: int | None = None
    #: the plan's summary (:func:`retentiond.render.plan_summary`), with ``storage_bytes``
    #: (the blob store's bytes when the run planned) in the records of newer versions
    plan: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, value: Any) -> HistoryEntry:
        """The entry of a parsed line, checked; :class:`RecordProblem` says what is wrong."""
        problem = shape_problem(value, HISTORY_FIELDS, HISTORY_REQUIRED)
        if problem is not None:
            raise RecordProblem(problem)
        return cls(**{key: value[key] for key in HISTORY_FIELDS if key in value})

    def to_json(self) -> dict[str, Any]:
        """The fields the line has, as read (what :func:`retentiond.windows.estimate_seconds`
        reads)."""
        return _without_none({key: getattr(self, key) for key in HISTORY_FIELDS})
