"""Properties of ``plan`` over generated storage trees and policies (see ``trees.py``).

Each example writes a tree to a temporary directory, loads generated policy YAML with the real
loader, reads the tree and plans at a fixed ``now``. What must hold is computed from the
generated spec by the test's own model, not by retentiond's code.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings, target

from retentiond.commands.plan import write_plan_json
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.policy.loader import load_policies
from retentiond.policy.model import OrderBy, Policy, Safety
from retentiond.storage.reader import read_inventory
from tests.harness.tree import copy_tree
from tests.property.policies import policy_docs, safeties
from tests.property.profiles import scaled, scratch
from tests.property.trees import (
    NOW,
    Built,
    Image,
    RepoModel,
    RepoSpec,
    TagSpec,
    TreeSpec,
    trees,
    write_tree,
)

#: a fallback referrer tag: ``sha256-<hex of the manifest>`` and an optional suffix (written here
#: from the README, not taken from retentiond)
REFERRER_TAG = re.compile(r"sha256-([0-9a-f]{64})(?:\..*)?")


def load(doc: dict[str, Any], directory: Path) -> list[Policy]:
    path = directory / "policies.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_policies([path])


def plan_of(root: Path, policies: Sequence[Policy], safety: Safety) -> Plan:
    created = any(p.order_by is OrderBy.CREATED for p in policies)
    return make_plan(read_inventory(root, read_created=created), policies, safety, NOW)


def plan_text(root: Path, policies: Sequence[Policy], safety: Safety) -> str:
    out = io.StringIO()
    write_plan_json(plan_of(root, policies, safety), None, out)
    return out.getvalue()


def check_entries_are_in_the_tree(plan: Plan, models: list[RepoModel]) -> None:
    by_name = {m.name: m for m in models}
    refused = {r.repository for r in plan.refused}
    for t in plan.tags_deleted:
        model = by_name[t.repository]
        assert model.tags.get(t.tag) == t.digest, f"deleted tag {t} is not one of the tree's"
        assert t.repository not in refused, f"deleted tag {t} in a refused repository"
    for m in plan.manifests_unlinked:
        model = by_name[m.repository]
        assert m.digest in model.revisions | model.corrupt_revisions, f"{m} is not linked"
        assert m.repository not in refused, f"unlinked {m} in a refused repository"
    assert set(plan.repositories_removed) <= set(by_name) - refused
    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    unlinked = {(m.repository, m.digest) for m in plan.manifests_unlinked}
    for name in plan.repositories_removed:  # removed only when left with nothing
        model = by_name[name]
        assert all((name, tag) in deleted for tag in model.tags), f"{name} removed with tags"
        assert all((name, d) in unlinked for d in model.revisions), f"{name} removed, linked"


def check_untrusted_repositories_are_left_alone(plan: Plan, models: list[RepoModel]) -> None:
    """A repository with something that cannot be read or trusted (a bad link, a missing or
    unparsable manifest, a symbolic link) loses nothing."""
    untrusted = {m.name for m in models if m.untrusted}
    touched = {t.repository for t in plan.tags_deleted}
    touched |= {m.repository for m in plan.manifests_unlinked}
    touched |= set(plan.repositories_removed)
    assert not untrusted & touched, f"untrusted repositories changed: {untrusted & touched}"


def check_remaining_tags_keep_what_they_reach(
    plan: Plan, models: list[RepoModel], built: Built
) -> None:
    """(a) nothing a remaining tag reaches (through indexes, recursively, and the artifacts
    about what it reaches) is unlinked, and its repository is not removed."""
    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    unlinked = {(m.repository, m.digest) for m in plan.manifests_unlinked}
    removed = set(plan.repositories_removed)
    for model in models:
        remaining = {n: d for n, d in model.tags.items() if (model.name, n) not in deleted}
        if remaining:
            assert model.name not in removed, f"{model.name} removed with tags {remaining}"
        reached = built.closure(remaining.values(), model.revisions)
        lost = sorted(d for d in reached if (model.name, d) in unlinked)
        assert not lost, f"{model.name}: remaining tags {remaining} reach unlinked {lost}"


def check_young_untagged_manifests_stay(
    plan: Plan, models: list[RepoModel], built: Built, safety: Safety
) -> None:
    """A manifest no tag reached before the plan is unlinked only when its revision link is
    older than ``safety.untagged_min_age`` (pushes in flight are safe)."""
    for m in plan.manifests_unlinked:
        model = next(r for r in models if r.name == m.repository)
        if m.digest in built.closure(model.tags.values(), model.revisions):
            continue  # reached by a tag that this plan deletes
        age = NOW - model.revision_time(m.digest)
        assert age >= safety.untagged_min_age, f"{m} is untagged for only {age}"


def check_referrer_tags_go_with_their_manifest(plan: Plan, models: list[RepoModel]) -> None:
    """A fallback referrer tag (``sha256-<hex>.sig``) of a manifest linked in its repository
    is deleted exactly when that manifest is unlinked."""
    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    unlinked = {(m.repository, m.digest) for m in plan.manifests_unlinked}
    for model in models:
        for tag in model.tags:
            found = REFERRER_TAG.fullmatch(tag)
            subject = f"sha256:{found.group(1)}" if found else None
            if subject is None or subject not in model.revisions:
                continue
            gone = (model.name, subject) in unlinked
            assert ((model.name, tag) in deleted) == gone, (
                f"{model.name}:{tag} {'deleted' if not gone else 'kept'} while {subject} is "
                f"{'unlinked' if gone else 'kept'}"
            )


def check_remaining_manifests_keep_their_blobs(
    plan: Plan, models: list[RepoModel], built: Built
) -> None:
    """(b) no blob a manifest still linked after the plan references is reclaimable (in the
    repositories registry 2.8's GC lists: those with ``_layers``).

    A repository whose revision links are behind a symbolic link out of the root must block
    the GC (which would follow it); what its tags reach is then marked, and what only its
    untagged manifests reference may be counted reclaimable (the plan cannot read them): the
    GC is blocked, so nothing is collected on the strength of that count."""
    unlinked = {(m.repository, m.digest) for m in plan.manifests_unlinked}
    removed = set(plan.repositories_removed)
    referenced: dict[str, str] = {}  # blob -> a repository whose remaining manifest names it
    for model in models:
        if not model.has_layers:
            if model.revisions:
                assert plan.gc_blocked, f"{model.name} has no _layers: the GC would skip it"
            continue
        if model.revisions_hidden:
            assert plan.gc_blocked, f"{model.name}: revisions behind a symlink, GC not blocked"
            continue
        if model.name in removed:
            continue
        for digest in model.revisions:
            if (model.name, digest) not in unlinked and digest in built.blobs:
                for blob in built.references(digest):
                    referenced.setdefault(blob, f"{model.name}@{digest}")
    lost = {blob: referenced[blob] for blob in referenced.keys() & plan.reclaimable.keys()}
    assert not lost, f"reclaimable blobs still referenced by remaining manifests: {lost}"


@given(spec=trees(), doc=policy_docs(), safety=safeties)
def test_plan_removes_nothing_still_needed_young_or_untrusted(
    spec: TreeSpec, doc: dict[str, Any], safety: Safety
) -> None:
    with scratch() as tmp:
        root = Path(tmp) / "registry"
        built, models = write_tree(root, spec, Path(tmp) / "outside")
        plan = plan_of(root, load(doc, Path(tmp)), safety)
    target(float(len(plan.tags_deleted) + len(plan.manifests_unlinked)), label="removals")
    check_entries_are_in_the_tree(plan, models)
    check_untrusted_repositories_are_left_alone(plan, models)
    check_remaining_tags_keep_what_they_reach(plan, models, built)
    check_young_untagged_manifests_stay(plan, models, built, safety)
    check_referrer_tags_go_with_their_manifest(plan, models)
    check_remaining_manifests_keep_their_blobs(plan, models, built)


@settings(max_examples=scaled(150))  # three plans and a copy per example
@given(spec=trees(), doc=policy_docs(), safety=safeties)
def test_plan_json_is_the_same_twice_and_after_copying_the_tree(
    spec: TreeSpec, doc: dict[str, Any], safety: Safety
) -> None:
    with scratch() as tmp:
        root = Path(tmp) / "registry"
        write_tree(root, spec, Path(tmp) / "outside")
        policies = load(doc, Path(tmp))
        first = plan_text(root, policies, safety)
        second = plan_text(root, policies, safety)
        # on a tmpfs (scratch()), a directory lists its entries newest first: the copy lists
        # them in the reverse order of the original
        copy = copy_tree(root, Path(tmp) / "elsewhere")
        third = plan_text(copy, policies, safety).replace(str(copy), str(root))
    assert second == first
    assert third == first


def test_problems_and_refusals_of_a_copied_tree_are_the_same() -> None:
    with scratch() as tmp:  # on a tmpfs, the copy lists its directories in reverse order
        root = Path(tmp) / "registry"
        v2 = root / "docker" / "registry" / "v2"
        (v2 / "blobs").mkdir(parents=True)
        for name in ("UPPER", "sp ace", "app"):  # the GC cannot parse the first two names
            (v2 / "repositories" / name / "_manifests" / "tags").mkdir(parents=True)
            (v2 / "repositories" / name / "_layers").mkdir()
        for tag in (":", ";"):  # names the registry cannot serve: each refuses "app"
            link = v2 / "repositories" / "app" / "_manifests" / "tags" / tag / "current" / "link"
            link.parent.mkdir(parents=True)
            link.write_text("sha256:" + "e" * 64)
        copy = copy_tree(root, Path(tmp) / "elsewhere")
        policy = {"policies": [{"name": "p", "repositories": ["**"], "keep": {}}]}
        policies = load(policy, Path(tmp))
        first, again = plan_of(root, policies, Safety()), plan_of(copy, policies, Safety())
    assert [(p.repository, p.message) for p in again.problems] == [
        (p.repository, p.message) for p in first.problems
    ]
    assert [r.reason.replace(str(copy), str(root)) for r in again.refused] == [
        r.reason for r in first.refused
    ]


def test_tagged_image_behind_symlinked_revisions_is_not_reclaimable(tmp_path: Path) -> None:
    spec = TreeSpec(
        layer_count=1,
        missing_layers=frozenset(),
        nodes=(Image("docker", layers=(0,), created_hours_ago=0),),
        repositories=(
            RepoSpec(
                "app",
                tags=(TagSpec("latest", node=0, hours_ago=0),),
                untagged=(),
                revision_hours_ago={0: 0},
                corruption=(("symlinked_revisions", 0),),
            ),
        ),
    )
    built, _ = write_tree(tmp_path / "registry", spec, tmp_path / "outside")
    doc = {"policies": [{"name": "p0", "repositories": ["**"], "keep": {"tags": ["v*"]}}]}
    plan = plan_of(tmp_path / "registry", load(doc, tmp_path), Safety())
    assert plan.gc_blocked and [r.repository for r in plan.refused] == ["app"]
    tagged = built.references(built.digests[0])
    assert not tagged & plan.reclaimable.keys()
