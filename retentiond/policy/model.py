"""Policies and safety settings as frozen values: the input of ``core.plan.make_plan``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from retentiond.policy.selectors import Selector


class OrderBy(enum.Enum):
    PUSHED = "pushed"  # the tag's current/link mtime
    CREATED = "created"  # the image config's `created` field


class Untagged(enum.Enum):
    KEEP = "keep"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KeepRules:
    """A tag in scope survives when any of these keeps it."""

    last: int | None = None
    within: timedelta | None = None
    tags: Selector | None = None
    semver: int | None = None
    #: pulled (the manifest, or a manifest its index holds) in this last period; needs pull
    #: tracking (``pulls.listen``)
    pulled_within: timedelta | None = None

    @property
    def empty(self) -> bool:
        rules = (self.last, self.within, self.tags, self.semver, self.pulled_within)
        return rules == (None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    repositories: Selector
    tags: Selector
    keep: KeepRules
    order_by: OrderBy = OrderBy.PUSHED
    untagged: Untagged = Untagged.KEEP
    allow_empty: bool = False
    allow_mass_delete: bool = False
    source: str = ""  # FILE:LINE where the policy is defined


@dataclass(frozen=True, slots=True)
class Safety:
    """The ``safety:`` section of the config."""

    max_delete_ratio: float = 0.8
    untagged_min_age: timedelta = timedelta(hours=1)
    grace: timedelta = timedelta(0)
    #: repositories with fewer tags than this are exempt from ``max_delete_ratio``
    mass_delete_min_tags: int = 10
