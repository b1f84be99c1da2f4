"""The JSON body POSTed to every webhook after a maintenance run. Pure: no I/O, no clock.

Built from the run's :class:`~retentiond.run_records.RunRecord` (the line the run appended to
``runs.jsonl``), with the same numbers under the same names, plus ``text``: one line that Slack
and Mattermost incoming webhooks show as the message (other receivers read the fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from retentiond.render import human_bytes
from retentiond.run_records import RunRecord, RunStatus

#: the payload's format; a receiver can check it (fields are only ever added)
PAYLOAD_VERSION = 1
#: broken tags and errors listed in the payload (the counts are always complete)
MAX_LISTED = 20
#: an error is cut to this length in ``text``
MAX_ERROR_TEXT = 300


def duration_seconds(record: RunRecord) -> float | None:
    """Seconds from the run's start to its end, or None when a time is missing or unreadable."""
    if record.started_at is None:
        return None
    try:
        started = datetime.fromisoformat(record.started_at)
        finished = datetime.fromisoformat(record.finished_at)
    except ValueError:
        return None
    if (started.tzinfo is None) != (finished.tzinfo is None):
        return None
    return round((finished - started).total_seconds(), 3)


def summary_text(record: RunRecord) -> str:
    """One line for a chat message, e.g.
    ``retentiond: run 20261202T030000Z-ab12cd ok: 130 tags deleted, 5.0 GiB reclaimed (3m 12s)``.
    """
    tags = record.removed.get("tags", 0)
    if record.status in (RunStatus.ROLLED_BACK, RunStatus.CANCELLED):
        what = "nothing removed, everything put back"
    else:
        what = f"{tags} tag{'' if tags == 1 else 's'} deleted"
        if record.gc_ran:
            what += f", {human_bytes(record.bytes_reclaimed)} reclaimed"
        elif record.held_until:
            what += f", GC held until {record.held_until} (undo possible)"
        else:
            what += ", GC not run"
    parts = [f"retentiond: run {record.run_id} {record.status.value}", what]
    if record.resumed:
        parts[0] += " (an interrupted run, ended by the next apply or serve)"
    seconds = duration_seconds(record)
    text = f"{parts[0]}: {parts[1]}"
    if seconds is not None:
        text += f" ({_short_duration(seconds)})"
    if record.broken:
        text += f"; {len(record.broken)} BROKEN tag{'' if len(record.broken) == 1 else 's'}"
    if record.errors:
        error = record.errors[0]
        if len(error) > MAX_ERROR_TEXT:
            error = error[: MAX_ERROR_TEXT - 1] + "…"
        # Slack reads <...> as a link and & as an entity: the three are escaped, as it asks
        text += "; error: " + error.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def webhook_payload(record: RunRecord, *, registry_url: str) -> dict[str, Any]:
    """The JSON object sent to every webhook for the run ``record`` describes."""
    return {
        "text": summary_text(record),
        "source": "retentiond",
        "event": "maintenance",
        "version": PAYLOAD_VERSION,
        "registry": registry_url,
        "run_id": record.run_id,
        "status": record.status.value,
        "ok": record.status is RunStatus.OK,
        "resumed": record.resumed,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_seconds": duration_seconds(record),
        "tags_deleted": record.removed.get("tags", 0),
        "manifests_unlinked": record.removed.get("manifests", 0),
        "repositories_removed": record.removed.get("repositories", 0),
        "blobs_deleted": record.blobs_deleted,
        "bytes_reclaimed": record.bytes_reclaimed,
        "bytes_planned": (record.plan or {}).get("bytes_reclaimed", 0),
        "gc_ran": record.gc_ran,
        "held_until": record.held_until,
        "read_only_seconds": record.read_only_seconds,
        "unavailable_seconds": record.unavailable_seconds,
        "broken_tags": len(record.broken),
        "broken": record.broken[:MAX_LISTED],
        "errors": record.errors[:MAX_LISTED],
    }


def _short_duration(seconds: float) -> str:
    """``42s``, ``3m 12s``, ``1h 05m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
