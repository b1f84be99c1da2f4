"""Last-pull times as the plan sees them: ``keep.pulled_within``. Pure: no I/O, no clock.

The store (:mod:`retentiond.pulls.store`) records, per repository and manifest digest, the last
time the registry notified a pull. The planner gets a :class:`PullTimes` and asks, per tag,
when it was last pulled (:func:`tag_pulled_at`):

- a digest with no recorded pull counts as pulled when tracking began (``since``), so turning
  tracking on never makes every tag look unpulled at once;
- a tag on an index (manifest list) counts as pulled when the index, or any manifest it holds
  (recursively), was pulled: clients pull an index by tag, then the platform manifest they
  need by digest, and some (``docker pull repo@sha256:<platform>``) pull only the child.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from retentiond.core.manifest_table import ManifestTable

_NONE: Mapping[str, datetime] = {}

#: how retentiond's HTTP requests begin their ``User-Agent`` (``retentiond/VERSION``): the
#: tracker ignores the notifications of these (verification pulls are not uses of an image)
USER_AGENT_PRODUCT = "retentiond/"


@dataclass(frozen=True, slots=True)
class PullTimes:
    """When tracking began, and the last recorded pull per repository and manifest digest."""

    since: datetime
    last: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)

    def of(self, repository: str) -> Mapping[str, datetime]:
        """The last pull of each digest pulled from ``repository``."""
        return self.last.get(repository, _NONE)


def tag_pulled_at(
    digest: str,
    pulled: Mapping[str, datetime],
    since: datetime,
    manifests: ManifestTable,
) -> datetime:
    """When the manifest ``digest`` of a tag was last pulled, by itself or through any manifest
    its index holds; ``since`` (when tracking began) when nothing was recorded, or when that is
    later than what was (a record older than the tracking start cannot happen but is harmless).
    """
    latest = since
    seen: set[str] = set()
    stack = [digest]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        when = pulled.get(current)
        if when is not None and when > latest:
            latest = when
        if current in manifests.parents:
            stack.extend(manifests.children_of(current))
    return latest
