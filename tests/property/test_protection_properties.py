"""In-use protection over generated storage trees and policies (see ``trees.py``): whatever
the policies say, nothing protected is deleted, and protection only ever keeps more.

What is protected is drawn from the generated tree (tags by name, digests of tagged and untagged
manifests, platform manifests of indexes); what must hold is computed from the spec by the
test's own model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from retentiond.core.plan import make_plan
from retentiond.core.protection import (
    ImageReference,
    ProtectedReference,
    Protection,
    ProtectionSource,
)
from retentiond.policy.model import OrderBy, Safety
from retentiond.storage.reader import read_inventory
from tests.property.policies import policy_docs, safeties
from tests.property.profiles import scaled, scratch
from tests.property.test_plan_properties import (
    check_entries_are_in_the_tree,
    check_remaining_manifests_keep_their_blobs,
    check_remaining_tags_keep_what_they_reach,
    check_untrusted_repositories_are_left_alone,
    load,
)
from tests.property.trees import NOW, Built, TreeSpec, trees, write_tree


def children_closure(built: Built, root: str) -> set[str]:
    """``root`` and every manifest its index children reach, recursively."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        digest = stack.pop()
        if digest not in seen:
            seen.add(digest)
            stack.extend(built.children.get(digest, ()))
    return seen


@settings(max_examples=scaled(150))  # two plans per example
@given(spec=trees(), doc=policy_docs(), safety=safeties, data=st.data())
def test_nothing_protected_is_deleted_and_protection_only_keeps_more(
    spec: TreeSpec, doc: dict[str, Any], safety: Safety, data: st.DataObject
) -> None:
    with scratch() as tmp:
        root = Path(tmp) / "registry"
        built, models = write_tree(root, spec, Path(tmp) / "outside")
        policies = load(doc, Path(tmp))
        created = any(p.order_by is OrderBy.CREATED for p in policies)
        inventory = read_inventory(root, read_created=created)
    # candidates: every tag by name, every linked digest and every child of one, per repository
    candidates: list[tuple[str, str | None, str | None]] = []
    for model in models:
        candidates += [(model.name, tag, None) for tag in sorted(model.tags)]
        linked = set(model.revisions) | set(model.tags.values())
        for top in sorted(linked):
            candidates += [(model.name, None, d) for d in sorted(children_closure(built, top))]
    chosen = data.draw(
        st.lists(st.sampled_from(candidates), max_size=6) if candidates else st.just([])
    )
    references = [
        ProtectedReference(ImageReference("registry.example.com", repo, tag, digest), "in use")
        for repo, tag, digest in chosen
    ]
    protection = Protection(references, [ProtectionSource("file", "drawn", len(references))])
    bare = make_plan(inventory, policies, safety, NOW)
    plan = make_plan(inventory, policies, safety, NOW, protected=protection)

    deleted = {(t.repository, t.tag) for t in plan.tags_deleted}
    unlinked = {(m.repository, m.digest) for m in plan.manifests_unlinked}
    by_name = {m.name: m for m in models}
    for repo, protected_tag, digest in chosen:
        model = by_name[repo]
        if protected_tag is not None:
            assert (repo, protected_tag) not in deleted, f"{repo}:{protected_tag} deleted"
            continue
        assert digest is not None
        for name, target in model.tags.items():
            if digest in children_closure(built, target):
                assert (repo, name) not in deleted, f"{repo}:{name} reaches {digest}, deleted"
        if digest in model.revisions:
            reached = built.closure([digest], model.revisions)
            lost = sorted(d for d in reached if (repo, d) in unlinked)
            assert not lost, f"protected {repo}@{digest} reaches unlinked {lost}"
        assert repo not in plan.repositories_removed

    # protection only keeps more (where neither plan refused the repository)
    refused = {r.repository for r in bare.refused} | {r.repository for r in plan.refused}
    bare_deleted = {(t.repository, t.tag) for t in bare.tags_deleted}
    bare_unlinked = {(m.repository, m.digest) for m in bare.manifests_unlinked}
    assert {d for d in deleted if d[0] not in refused} <= bare_deleted
    assert {u for u in unlinked if u[0] not in refused} <= bare_unlinked
    for kept in plan.protected:
        if kept.tag is not None:
            assert (kept.repository, kept.tag) not in deleted

    # and every rule of the plan still holds
    check_entries_are_in_the_tree(plan, models)
    check_untrusted_repositories_are_left_alone(plan, models)
    check_remaining_tags_keep_what_they_reach(plan, models, built)
    check_remaining_manifests_keep_their_blobs(plan, models, built)
