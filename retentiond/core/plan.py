"""``make_plan``: what a maintenance run deletes now, and why. Pure: no I/O, no clock.

Per repository (contract, "Evaluation"):

1. The policies whose ``repositories`` match apply; with none, nothing is deleted.
2. A tag is deleted when an applying policy has it in scope and keeps it by none of its rules,
   and no applying policy keeps it: keep wins.
3. Unless every applying policy says ``allow_empty``, the most recently pushed tag survives.
4. A manifest is unlinked when nothing that remains (tags, and untagged manifests that stay)
   reaches it through lists/indexes, and a deleted tag reached it, or it was untagged already,
   an applying policy says ``untagged: delete`` and it is older than ``untagged_min_age``.
   Untagged manifests whose ``subject`` remains (signatures, SBOMs) stay with it, and fallback
   referrer tags (``sha256-<hex>.sig``) go when the manifest they belong to goes.
5. Deleting a tag removes only that tag; aliases on the same digest are untouched.
6. A repository left with no tag and no manifest is removed when ``allow_empty`` allows it and
   nothing was pushed to it for ``untagged_min_age``.
7. In-use protection (``protected``, :mod:`retentiond.core.protection`) wins over everything:
   a protected tag, a tag on a protected digest or on an index reaching one, is kept, and a
   protected manifest is never unlinked; the plan lists what it kept against the policies.

Each repository's summary names its tags whose manifest is schema1, which distribution v3 cannot
serve (whatever the registry's version: the plan does not know it). A repository with anything
unreadable is refused, as is one that would lose more than
``max_delete_ratio`` of its tags. The reclaimable blobs are those the registry's GC mark phase
leaves unmarked once the plan's removals are made: global across repositories, so exact.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable, Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import compress
from typing import TypeVar

from retentiond.core.blob_table import NO_ID
from retentiond.core.inventory import Inventory
from retentiond.core.mark import attachments, gc_mark, reachable, unmarked
from retentiond.core.plan_types import (
    ManifestUnlink,
    Plan,
    PlanEntries,
    ProtectedKeep,
    Refusal,
    RepositorySummary,
    TagDeletion,
)
from retentiond.core.protection import NO_PROTECTION, Protection
from retentiond.core.pulls import PullTimes, tag_pulled_at
from retentiond.core.repository import Repository
from retentiond.core.selection import format_age, judge_tags, referrer_subject
from retentiond.core.values import Problem, ProblemKind, Tag
from retentiond.policy.model import Policy, Safety, Untagged
from retentiond.storage import layout

#: the kinds of problem a repository is planned despite: an incomplete image decides nothing,
#: and a GC hazard blocks the GC (``Plan.gc_blocked``), not the plan; any other problem of a
#: repository makes the plan refuse it
_PLANNED_DESPITE = (ProblemKind.INCOMPLETE, ProblemKind.GC_HAZARD)
_UNREACHABLE = "unreachable after tag deletions"


@dataclass
class _RepoPlan:
    #: each tag deleted: its position in the repository's tags, the policy, the reason
    tags: list[tuple[int, str, str]] = field(default_factory=list)
    #: each revision unlinked, in digest order: its position in revisions, the reason, the policy
    unlinks: list[tuple[int, str, str | None]] = field(default_factory=list)
    #: 1 for each revision unlinked, in ``Repository.revisions`` order
    unlinked: bytearray = field(default_factory=bytearray)
    removed: bool = False
    refusal: str | None = None
    #: with pull tracking: when each deleted tag (in ``tags`` order) was last pulled, as
    #: POSIX seconds
    pulled_at: array[float] | None = None
    #: what in-use protection kept that the policies would have removed
    protected: list[ProtectedKeep] = field(default_factory=list)


def _created_lookup(inventory: Inventory, tag: Tag) -> datetime | None:
    """An image's config ``created`` time; for an index, its newest child's."""
    table = inventory.manifests
    if tag.digest not in table:
        return None
    config = table.config_of(tag.digest)
    if config:
        return inventory.created.get(config)
    times = [
        inventory.created.get(child_config)
        for d in table.children_of(tag.digest)
        if d in table and (child_config := table.config_of(d))
    ]
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _pulled_lookup(
    inventory: Inventory, repository: str, pulls: PullTimes
) -> Callable[[Tag], datetime]:
    """When a tag of ``repository`` was last pulled (see :func:`tag_pulled_at`), each digest
    worked out once."""
    recorded, since, manifests = pulls.of(repository), pulls.since, inventory.manifests
    known: dict[str, datetime] = {}

    def pulled_at(tag: Tag) -> datetime:
        when = known.get(tag.digest)
        if when is None:
            when = known[tag.digest] = tag_pulled_at(tag.digest, recorded, since, manifests)
        return when

    return pulled_at


def _needs_tracking(policies: Sequence[Policy]) -> str | None:
    """Why a repository is refused when pull tracking is off and a policy needs it."""
    needing = sorted(p.name for p in policies if p.keep.pulled_within is not None)
    if not needing:
        return None
    return (
        f"policy {', '.join(needing)} keeps tags by keep.pulled_within, but pull tracking is "
        "off or has not started: set pulls.listen and pulls.token_file in the config and run "
        "retentiond serve (it receives the registry's notifications), or remove the rule"
    )


def _plan_repository(
    inventory: Inventory,
    repo: Repository,
    policies: Sequence[Policy],
    safety: Safety,
    now: datetime,
    untagged_reason: str,
    pulls: PullTimes | None = None,
    protected: tuple[dict[str, str], dict[str, str]] = ({}, {}),
) -> _RepoPlan:
    """``protected``: (tag name -> reason, revision digest -> reason) that no policy removes."""
    result = _RepoPlan()
    if not policies:
        return result
    tags, revisions = repo.materialize()  # built for this repository only, not kept
    pulled = _pulled_lookup(inventory, repo.name, pulls) if pulls is not None else None
    protected_tags, protected_roots = protected

    # 1-2: each policy's verdicts; keep wins over delete
    kept_by: set[str] = set()
    deleted_by: dict[str, tuple[str, str]] = {}
    for policy in policies:
        verdicts = judge_tags(policy, tags, now, lambda t: _created_lookup(inventory, t), pulled)
        for name, verdict in verdicts.items():
            if verdict.keep:
                kept_by.add(name)
            else:
                deleted_by.setdefault(name, (policy.name, verdict.reason))
    doomed = {name: why for name, why in deleted_by.items() if name not in kept_by}

    # 3: the newest tag survives unless every applying policy allows an empty repository
    allow_empty = all(p.allow_empty for p in policies)
    subjects = {t.name: s for t in tags if (s := referrer_subject(t.name)) is not None}
    ordinary = [t for t in tags if t.name not in subjects]
    if not allow_empty and ordinary:
        newest = max(ordinary, key=lambda t: (t.pushed_at, t.name))
        doomed.pop(newest.name, None)
    # 7: in-use protection keeps its tags whatever the policies say
    unprotected_doomed = dict(doomed) if protected_tags or protected_roots else doomed
    for name, why in protected_tags.items():
        was = doomed.pop(name, None)
        if was is not None:
            digest = next(t.digest for t in tags if t.name == name)
            result.protected.append(
                ProtectedKeep(repo.name, name, digest, *was, f"protected: {why}")
            )

    # 4: reachability, starting from the original tags to know what is untagged already
    manifests = inventory.manifests
    linked = revisions.keys()
    attached = attachments(linked, manifests)
    originally = reachable((t.digest for t in tags), manifests, attached=attached)
    untagged_delete = [p for p in policies if p.untagged is Untagged.DELETE]
    untagged_roots: list[str] = []
    for digest in revisions:
        if digest in originally:
            continue
        if not untagged_delete or now - revisions[digest] < safety.untagged_min_age:
            untagged_roots.append(digest)
    unprotected_roots = untagged_roots
    if protected_roots:  # 7: a protected manifest stays, with what it reaches
        staying = set(untagged_roots)
        untagged_roots = untagged_roots + [d for d in protected_roots if d not in staying]

    def surviving(extra_doomed: set[str]) -> set[str]:
        roots = [t.digest for t in tags if t.name not in doomed and t.name not in extra_doomed]
        return reachable(roots + untagged_roots, manifests, attached=attached)

    alive = surviving(set())
    # fallback referrer tags follow the manifest they belong to
    referrers = {
        t.name
        for t in tags
        if (s := subjects.get(t.name)) is not None
        and s in revisions
        and s not in alive
        and t.name not in protected_tags
    }
    if referrers:
        alive = surviving(referrers)

    # the policy that deleted the first doomed tag on each digest, in tag order
    policy_of_digest: dict[str, str] = {}
    for tag in tags:
        if tag.name in doomed:
            policy_of_digest.setdefault(tag.digest, doomed[tag.name][0])
    fallback_policy = untagged_delete[0].name if untagged_delete else policies[0].name
    for position, tag in enumerate(tags):
        if tag.name in doomed:
            policy_name, reason = doomed[tag.name]
        elif tag.name in referrers:
            subject = subjects[tag.name]
            policy_name = policy_of_digest.get(subject, fallback_policy)
            reason = f"belongs to {subject}, which is deleted"
        else:
            continue
        result.tags.append((position, policy_name, reason))
    if pulled is not None:
        result.pulled_at = array(
            "d", [pulled(tags[position]).timestamp() for position, _, _ in result.tags]
        )

    # the policy of the first deletion of each digest, in deletion order
    deleted_policy: dict[str, str] = {}
    for position, policy_name, _ in result.tags:
        deleted_policy.setdefault(tags[position].digest, policy_name)
    by_deleted = reachable(deleted_policy, manifests, attached=attached)
    untagged_policy = untagged_delete[0].name if untagged_delete else None
    result.unlinked = bytearray(len(revisions))
    gone = sorted((digest, n) for n, digest in enumerate(revisions) if digest not in alive)
    for digest, position in gone:
        if digest in by_deleted:
            result.unlinks.append((position, _UNREACHABLE, deleted_policy.get(digest)))
        else:
            result.unlinks.append((position, untagged_reason, untagged_policy))
        result.unlinked[position] = 1
    if protected_tags or protected_roots:  # 7: which manifests protection kept, and why
        result.protected += _protected_manifests(
            repo.name,
            tags,
            revisions,
            alive,
            reachable(
                [t.digest for t in tags if t.name not in unprotected_doomed] + unprotected_roots,
                manifests,
                attached=attached,
            ),
            unprotected_doomed,
            protected,
            (_UNREACHABLE, untagged_reason),
            lambda roots: reachable(roots, manifests, attached=attached),
        )

    # 6: remove a repository left with nothing, when allowed and quiet
    tags_left = len(tags) - len(result.tags)
    revisions_left = len(revisions) - len(result.unlinks)
    quiet = repo.last_activity is None or now - repo.last_activity >= safety.untagged_min_age
    result.removed = allow_empty and tags_left == 0 and revisions_left == 0 and quiet

    # safety.max_delete_ratio
    total = len(tags)
    deleting = [p for p in policies if p.name in {name for _, name, _ in result.tags}]
    exempt = bool(deleting) and all(p.allow_mass_delete for p in deleting)
    if (
        total >= safety.mass_delete_min_tags
        and not exempt
        and len(result.tags) / total > safety.max_delete_ratio
    ):
        names = ", ".join(sorted(p.name for p in deleting))
        result.refusal = (
            f"would delete {len(result.tags) * 100 // total}% of {total} tags "
            f"(max_delete_ratio {safety.max_delete_ratio:g}); if that is intended, set "
            f"allow_mass_delete: true in policy {names}"
        )
    return result


def _protected_manifests(
    repository: str,
    tags: Sequence[Tag],
    revisions: AbstractSet[str] | Mapping[str, datetime],
    alive: AbstractSet[str],
    alive_unprotected: AbstractSet[str],
    unprotected_doomed: Mapping[str, tuple[str, str]],
    protected: tuple[dict[str, str], dict[str, str]],
    whys: tuple[str, str],
    reach: Callable[[list[str]], set[str]],
) -> list[ProtectedKeep]:
    """The revisions that stay only because of protected revisions (a protected tag kept is
    listed itself, not what it reaches), each with the reason of the first that reaches it."""
    protected_tags, protected_roots = protected
    by_tags = reach([t.digest for t in tags if t.name in protected_tags])
    saved = [d for d in revisions if d in alive and d not in alive_unprotected and d not in by_tags]
    if not saved:
        return []
    by_deleted = reach([t.digest for t in tags if t.name in unprotected_doomed])
    policy_of = {
        t.digest: unprotected_doomed[t.name][0] for t in tags if t.name in unprotected_doomed
    }
    reached = [(reach([root]), why) for root, why in protected_roots.items()]
    out = []
    for digest in sorted(saved):
        why = next((w for r, w in reached if digest in r), "in use")
        unreachable = digest in by_deleted
        out.append(
            ProtectedKeep(
                repository,
                None,
                digest,
                policy_of.get(digest) if unreachable else None,
                whys[0] if unreachable else whys[1],
                f"protected: {why}",
            )
        )
    return out


def make_plan(
    inventory: Inventory,
    policies: Sequence[Policy],
    safety: Safety,
    now: datetime,
    *,
    gc_reads_schema1: bool = True,
    pulls: PullTimes | None = None,
    protected: Protection = NO_PROTECTION,
) -> Plan:
    """Decide what to delete from ``inventory`` under ``policies`` at time ``now``.

    ``pulls``: the last-pull times from the registry's notifications, None when pull tracking
    is off; a repository a ``keep.pulled_within`` rule applies to is then refused.

    ``protected``: the images in use (``protect:``), never deleted whatever the policies say.

    ``gc_reads_schema1=False`` (the registry is known to be v3): a schema1 manifest that keeps
    a revision link after the plan's removals is a GC_ABORT problem, since v3's GC aborts
    when it marks one ("unrecognized manifest schema version 1"), so the plan blocks the GC
    and a maintenance refuses before it removes anything."""
    untrusted: dict[str, str] = {}  # repository -> why it is refused
    for problem in inventory.problems:
        if problem.repository and problem.kind not in _PLANNED_DESPITE:
            untrusted.setdefault(
                problem.repository, f"cannot trust {problem.path}: {problem.message}"
            )
    untagged_reason = (
        f"untagged for more than {format_age(safety.untagged_min_age)} (untagged: delete)"
    )

    tags: list[tuple[int, Callable[[], list[TagDeletion]]]] = []
    unlinks: list[tuple[int, Callable[[], list[ManifestUnlink]]]] = []
    tag_whys: _Codes[tuple[str, str]] = _Codes()
    unlink_whys: _Codes[tuple[str, str | None]] = _Codes()
    unlinked: dict[str, bytearray] = {}  # the revisions unlinked, per repository
    removed: list[str] = []
    refused: list[Refusal] = []
    summaries: list[RepositorySummary] = []
    schema1 = inventory.manifests.schema1_ids
    kept_protected: list[ProtectedKeep] = []
    protected_count = 0
    named = protected.named_repositories()
    everywhere_ids = frozenset(inventory.blobs.ids_of(protected.everywhere)) - {-1}
    for repo in inventory.repositories:
        applying = [p for p in policies if p.repositories.matches(repo.name)]
        in_use: tuple[dict[str, str], dict[str, str]] = ({}, {})
        if repo.name in named or (
            everywhere_ids
            and not (
                everywhere_ids.isdisjoint(repo.revision_ids)
                and everywhere_ids.isdisjoint(repo.tag_ids)
            )
        ):
            rp = protected.for_repository(repo.name)
            if rp is not None:
                repo_tags, repo_revisions = repo.materialize()
                in_use = rp.match(repo_tags, repo_revisions, inventory.manifests)
                protected_count += len(in_use[0])
        refusal = untrusted.get(repo.name)
        if refusal is None and pulls is None:
            refusal = _needs_tracking(applying)
        decided = _RepoPlan(refusal=refusal)
        if decided.refusal is not None:
            if applying:
                refused.append(Refusal(repo.name, decided.refusal))
        else:
            decided = _plan_repository(
                inventory, repo, applying, safety, now, untagged_reason, pulls, in_use
            )
            if decided.refusal:
                refused.append(Refusal(repo.name, decided.refusal))
                decided = _RepoPlan(refusal=decided.refusal)
        kept_protected += decided.protected
        if decided.tags:  # kept as positions and codes: see PlanEntries
            tags.append(_tag_part(repo, decided, tag_whys))
        if decided.unlinks:
            unlinks.append(_unlink_part(repo, decided, unlink_whys))
            unlinked[repo.name] = decided.unlinked
        if decided.removed:
            removed.append(repo.name)
        summaries.append(
            RepositorySummary(
                name=repo.name,
                tags=repo.tag_count,
                tags_deleted=len(decided.tags),
                manifests_unlinked=len(decided.unlinks),
                bytes_reclaimed=0,  # below, once the GC's mark is known
                removed=decided.removed,
                refused=decided.refusal is not None,
                schema1_tags=_schema1_tags(repo, schema1) if schema1 else (),
            )
        )

    marked_before = gc_mark(inventory, {}, read_in_part=untrusted)
    marked_after = gc_mark(inventory, unlinked, removed, read_in_part=untrusted)
    before = unmarked(inventory, marked_before)
    reclaimable = unmarked(inventory, marked_after)

    # attribute each newly freed blob to the first repository whose removals referenced it
    # (repositories are in name order)
    newly_freed = bytearray(  # marked before, not after: flags are 0 or 1, so bitwise
        (int.from_bytes(marked_before, "big") & ~int.from_bytes(marked_after, "big")).to_bytes(
            len(marked_before), "big"
        )
    )
    freed: dict[str, int] = {}
    for repo in inventory.repositories:
        mask = unlinked.get(repo.name)
        if mask is not None:
            ids = compress(repo.revision_ids, mask)
            freed[repo.name] = inventory.manifests.claim(
                (i for i in ids if i != NO_ID), newly_freed
            )
    if freed:
        summaries = [
            dataclasses.replace(s, bytes_reclaimed=freed[s.name]) if freed.get(s.name) else s
            for s in summaries
        ]

    return Plan(
        generated_at=now,
        root=inventory.root,
        repositories=len(inventory.repositories),
        tags=sum(r.tag_count for r in inventory.repositories),
        tags_deleted=PlanEntries(tags),
        manifests_unlinked=PlanEntries(unlinks),
        repositories_removed=tuple(removed),
        refused=tuple(refused),
        reclaimable=reclaimable,
        per_repository=tuple(summaries),
        problems=inventory.problems
        + (() if gc_reads_schema1 else _schema1_aborts(inventory, unlinked, schema1)),
        already_unreferenced=before,
        protected=tuple(kept_protected),
        protected_tags=protected_count,
        protection_sources=protected.sources,
    )


def _schema1_aborts(
    inventory: Inventory, unlinked: dict[str, bytearray], schema1: AbstractSet[int]
) -> tuple[Problem, ...]:
    """A GC_ABORT problem per revision link to a schema1 manifest the registry's (v3) GC
    will mark: in a repository it lists, not unlinked by the plan."""
    if not schema1:
        return ()
    problems = []
    for repo in inventory.repositories:
        if not repo.listed_by_gc or schema1.isdisjoint(repo.revision_ids):
            continue
        mask = unlinked.get(repo.name)
        for n, blob_id in enumerate(repo.revision_ids):
            if blob_id in schema1 and not (mask is not None and mask[n]):
                digest = inventory.blobs.digest_of(blob_id)
                problems.append(
                    Problem(
                        f"{inventory.root}/{layout.V2}/{layout.revision_link(repo.name, digest)}",
                        f"manifest {digest} is schema1: distribution v3's garbage-collect "
                        "aborts when it marks one (unrecognized manifest schema version 1); "
                        "delete it with a policy, or convert the image (skopeo copy --format "
                        "v2s2) and delete the schema1 tag",
                        ProblemKind.GC_ABORT,
                        repo.name,
                    )
                )
    return tuple(problems)


def _schema1_tags(repo: Repository, schema1: AbstractSet[int]) -> tuple[str, ...]:
    """The names of ``repo``'s tags whose manifest's blob id is in ``schema1``."""
    ids = repo.tag_ids
    if schema1.isdisjoint(ids):
        return ()
    positions = [n for n, blob_id in enumerate(ids) if blob_id in schema1]
    return tuple(tag.name for tag in repo.tags_at(positions))


K = TypeVar("K", bound=Hashable)


class _Codes(dict[K, int]):
    """Each distinct value (a policy and a reason, say) numbered once; ``values_by_code[n]``."""

    def __init__(self) -> None:
        super().__init__()
        self.values_by_code: list[K] = []

    def code(self, value: K) -> int:
        found = self.get(value)
        if found is None:
            self[value] = found = len(self.values_by_code)
            self.values_by_code.append(value)
        return found


def _tag_part(
    repo: Repository, decided: _RepoPlan, codes: _Codes[tuple[str, str]]
) -> tuple[int, Callable[[], list[TagDeletion]]]:
    """A part of the plan's tag deletions (see PlanEntries): ``decided.tags``, compact."""
    positions = array("I", [position for position, _, _ in decided.tags])
    whys = array("I", [codes.code((policy, reason)) for _, policy, reason in decided.tags])
    return len(positions), partial(_tag_deletions, repo, positions, whys, codes, decided.pulled_at)


def _unlink_part(
    repo: Repository, decided: _RepoPlan, codes: _Codes[tuple[str, str | None]]
) -> tuple[int, Callable[[], list[ManifestUnlink]]]:
    """A part of the plan's manifest unlinks (see PlanEntries): ``decided.unlinks``, compact."""
    positions = array("I", [position for position, _, _ in decided.unlinks])
    whys = array("I", [codes.code((reason, policy)) for _, reason, policy in decided.unlinks])
    return len(positions), partial(_manifest_unlinks, repo, positions, whys, codes)


def _tag_deletions(
    repo: Repository,
    positions: array[int],
    whys: array[int],
    codes: _Codes[tuple[str, str]],
    pulled_at: array[float] | None = None,
) -> list[TagDeletion]:
    """The TagDeletions of ``repo`` made again: the tags at ``positions``, their policies and
    reasons coded in ``whys``, when they were last pulled in ``pulled_at`` (with tracking)."""
    name, values = repo.name, codes.values_by_code
    deletions = [
        TagDeletion(name, tag.name, tag.digest, tag.pushed_at, *values[why])
        for tag, why in zip(repo.tags_at(positions), whys, strict=True)
    ]
    if pulled_at is None:
        return deletions
    return [
        d._replace(pulled_at=datetime.fromtimestamp(when, UTC))
        for d, when in zip(deletions, pulled_at, strict=True)
    ]


def _manifest_unlinks(
    repo: Repository,
    positions: array[int],
    whys: array[int],
    codes: _Codes[tuple[str, str | None]],
) -> list[ManifestUnlink]:
    """The ManifestUnlinks of ``repo`` made again: the revisions at ``positions``, their
    reasons and policies coded in ``whys``."""
    digests = repo.revision_digests()
    name, values = repo.name, codes.values_by_code
    return [
        ManifestUnlink(name, digests[position], *values[why])
        for position, why in zip(positions, whys, strict=True)
    ]
