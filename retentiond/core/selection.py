"""One policy's verdict on the tags of one repository: which its keep rules keep, and why."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from retentiond.core.semver import parse_version
from retentiond.core.values import Tag
from retentiond.policy.model import OrderBy, Policy

#: tags under which registries without the referrers API store signatures, SBOMs and
#: attestations of the manifest ``sha256:<hex>`` (cosign adds ``.sig``, ``.att``, ``.sbom``)
REFERRER_TAG = re.compile(r"sha256-([0-9a-f]{64})(?:\..*)?")


def referrer_subject(tag_name: str) -> str | None:
    """The digest a fallback referrer tag belongs to, or None for an ordinary tag."""
    if not tag_name.startswith("sha256-"):
        return None
    m = REFERRER_TAG.fullmatch(tag_name)
    return f"sha256:{m.group(1)}" if m else None


def format_age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: bool
    reason: str


def judge_tags(
    policy: Policy,
    tags: Sequence[Tag],
    now: datetime,
    created: Callable[[Tag], datetime | None] | None = None,
    pulled: Callable[[Tag], datetime] | None = None,
) -> Mapping[str, Verdict]:
    """Verdicts for the tags in the policy's scope (tags out of scope are absent).

    ``pulled``: when a tag was last pulled (see :func:`retentiond.core.pulls.tag_pulled_at`);
    without it a ``keep.pulled_within`` rule keeps every tag (the planner refuses such a
    repository before it asks)."""
    scope = [t for t in tags if policy.tags.matches(t.name) and referrer_subject(t.name) is None]
    keep = policy.keep

    def order_key(tag: Tag) -> tuple[datetime, str]:
        when = created(tag) if created and policy.order_by is OrderBy.CREATED else None
        return (when or tag.pushed_at, tag.name)

    last: set[str] = set()
    if keep.last:
        by_recency = sorted(scope, key=order_key, reverse=True)
        last = {t.name for t in by_recency[: keep.last]}
    highest: set[str] = set()
    if keep.semver:
        versioned = [(v, t.name) for t in scope if (v := parse_version(t.name)) is not None]
        versioned.sort(reverse=True)
        highest = {name for _, name in versioned[: keep.semver]}

    order_word = "created" if policy.order_by is OrderBy.CREATED else "pushed"
    among_last = f"among the last {keep.last} {order_word}"
    not_among_last = f"not {among_last}"
    age = format_age(keep.within) if keep.within is not None else ""
    within, older = f"pushed within {age}", f"pushed more than {age} ago"
    highest_versions = f"among the {keep.semver} highest versions"
    pulled_age = format_age(keep.pulled_within) if keep.pulled_within is not None else ""
    pulled_recently, not_pulled = f"pulled within {pulled_age}", f"not pulled within {pulled_age}"
    not_highest = f"not {highest_versions}"
    made: dict[tuple[str, ...], Verdict] = {}  # the same few verdicts for every tag: each once
    verdicts: dict[str, Verdict] = {}
    for tag in scope:
        kept: list[str] = []
        missed: list[str] = []
        if keep.last:
            if tag.name in last:
                kept.append(among_last)
            else:
                missed.append(not_among_last)
        if keep.within is not None:
            if now - tag.pushed_at <= keep.within:
                kept.append(within)
            else:
                missed.append(older)
        if keep.tags is not None and keep.tags.matches(tag.name):
            kept.append("matches keep.tags")
        if keep.pulled_within is not None:
            if pulled is None or now - pulled(tag) <= keep.pulled_within:
                kept.append(pulled_recently)
            else:
                missed.append(not_pulled)
        if keep.semver:
            if tag.name in highest:
                kept.append(highest_versions)
            else:
                missed.append(not_highest)
        parts = tuple(kept) if kept else tuple(missed)
        verdict = made.get(parts)
        if verdict is None:
            reason = ", ".join(parts) or "the policy keeps no tag (keep: {})"
            verdict = made[parts] = Verdict(bool(kept), reason)
        verdicts[tag.name] = verdict
    return verdicts
