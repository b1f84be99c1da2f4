"""The registry's notification envelopes: which events are manifest pulls to record.

Pure: the envelope is parsed JSON, ``now`` is given. An envelope is
``{"events": [{"action", "timestamp", "target": {"repository", "digest", "mediaType", "url"},
"request": {"useragent"}}, ...]}`` (``registry-internals.md``, "Notifications").

Kept: ``action: pull`` of a manifest (by media type, or a ``/manifests/`` URL), HEAD or GET.
Ignored: blob pulls (``/blobs/`` URL, or a media type that is not a manifest's), pushes,
deletes, mounts, and retentiond's own requests (its User-Agent starts with
:data:`~retentiond.core.pulls.USER_AGENT_PRODUCT`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from retentiond.core.manifest_table import MANIFEST_MEDIA_TYPES
from retentiond.core.pulls import USER_AGENT_PRODUCT

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Go writes nanoseconds; Python reads microseconds
#: the longest repository name the registry accepts (distribution's reference package)
_MAX_REPOSITORY = 255


class Pull(NamedTuple):
    repository: str
    digest: str
    at: float  # POSIX seconds


class EnvelopeError(ValueError):
    """Not a notification envelope; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Sorted:
    pulls: Sequence[Pull]
    ignored: int


def manifest_pulls(envelope: Any, now: float) -> Sorted:
    """The manifest pulls in ``envelope``, each at its event's time (``now`` when it has none,
    or a time after ``now``), and how many events were ignored."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise EnvelopeError('expected a JSON object with an "events" list')
    pulls: list[Pull] = []
    ignored = 0
    for event in envelope["events"]:
        pull = _pull(event, now)
        if pull is None:
            ignored += 1
        else:
            pulls.append(pull)
    return Sorted(pulls, ignored)


def _pull(event: Any, now: float) -> Pull | None:
    if not isinstance(event, dict) or event.get("action") != "pull":
        return None
    target, request = event.get("target"), event.get("request")
    if not isinstance(target, dict):
        return None
    if isinstance(request, dict):
        agent = request.get("useragent")
        if isinstance(agent, str) and agent.startswith(USER_AGENT_PRODUCT):
            return None
    url = target.get("url")
    url = url if isinstance(url, str) else ""
    if "/blobs/" in url:
        return None
    if target.get("mediaType") not in MANIFEST_MEDIA_TYPES and "/manifests/" not in url:
        return None
    repository, digest = target.get("repository"), target.get("digest")
    if not isinstance(repository, str) or not 0 < len(repository) <= _MAX_REPOSITORY:
        return None
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return None
    return Pull(repository, digest, min(_timestamp(event.get("timestamp")) or now, now))


def _timestamp(value: Any) -> float | None:
    """An RFC 3339 time as POSIX seconds; None when missing or unreadable."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
