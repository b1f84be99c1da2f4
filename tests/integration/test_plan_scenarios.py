"""The plan against a real registry, 2.8.2 and 3.1.1, with images pushed by docker and skopeo.

For every scenario: read the tree, plan, make the plan's removals on a copy, and run the real
``registry garbage-collect --dry-run`` of the same version on the copy: the blobs it calls
eligible must be exactly the plan's reclaimable set (and, on 3.x, the ``_layers`` links it
deletes exactly the plan's layer-link candidates). Then a real GC on the copy must free
exactly ``bytes_reclaimed``.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retentiond.core.inventory import ProblemKind
from retentiond.core.layer_links import layer_link_candidates
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.policy.loader import validate_policies_text
from retentiond.policy.model import Policy, Safety
from retentiond.storage.reader import read_inventory
from tests.harness.gc import gc_dry_run, gc_run
from tests.harness.images import (
    make_oci_image,
    push_docker_image,
    push_oci,
    push_oci_image,
    push_oci_index,
    tag_alias,
)
from tests.harness.registry import RunningRegistry
from tests.harness.tree import (
    blob_data,
    copy_tree,
    data_bytes,
    layer_link_dir,
    revision_dir,
    set_pushed_at,
    tag_dir,
    tag_link,
)

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
NOW = datetime.now(UTC)


def policies(text: str) -> list[Policy]:
    checked = validate_policies_text(textwrap.dedent(text), "scenario.yaml")
    assert not checked.problems, checked.problems
    return list(checked.policies)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def age_revision(root: Path, repo: str, digest: str, when: datetime) -> None:
    link = revision_dir(root, repo, digest) / "link"
    os.utime(link, (when.timestamp(), when.timestamp()))


def make_removals(root: Path, plan: Plan) -> None:
    """What a maintenance run removes, done plainly on a copy of the tree."""
    for t in plan.tags_deleted:
        shutil.rmtree(tag_dir(root, t.repository, t.tag))
    for m in plan.manifests_unlinked:
        shutil.rmtree(revision_dir(root, m.repository, m.digest))
    for name in plan.repositories_removed:
        shutil.rmtree(root / "docker/registry/v2/repositories" / name)


def plan_and_compare(
    reg: RunningRegistry, tmp_path: Path, rules: list[Policy], safety: Safety | None = None
) -> Plan:
    """Plan on the live tree; prove the reclaimable set and bytes against the real GC."""
    inventory = read_inventory(reg.root)
    plan = make_plan(inventory, rules, safety or Safety(untagged_min_age=timedelta(hours=1)), NOW)
    copy = copy_tree(reg.root, tmp_path / "copy")
    make_removals(copy, plan)
    dry = gc_dry_run(copy, version=reg.version)
    assert dry.returncode == 0, dry.output
    assert dry.eligible == set(plan.reclaimable)
    # The `_layers` links the plan expects the GC to leave dangling: 2.8's GC leaves them (a
    # run drops them after it); 3.x's deletes them itself (#4344).
    links = {
        (repo, digest)
        for repo, digest in layer_link_candidates(inventory, plan.reclaimable)
        if (layer_link_dir(copy, repo, digest) / "link").exists()
    }
    if reg.version == "2.8.2":
        assert dry.layer_links == set()
    else:
        # 3.x unlinks every digest not marked yet when it reaches the repository (repositories
        # in order), so also blobs that a later repository keeps: more than the plan's
        # candidates, but never a blob a manifest left in that repository references.
        assert links <= dry.layer_links
        after = read_inventory(copy)
        assert dry.layer_links.isdisjoint(layer_link_candidates(after, after.blobs))
    before = data_bytes(copy)
    real = gc_run(copy, version=reg.version)
    assert real.returncode == 0, real.output
    assert before - data_bytes(copy) == plan.bytes_reclaimed
    assert real.layer_links == dry.layer_links
    # (3.x deletes the link file and leaves its empty directory)
    left = {
        link for link in links | dry.layer_links if (layer_link_dir(copy, *link) / "link").exists()
    }
    assert left == (links if reg.version == "2.8.2" else set())
    return plan


def deleted(plan: Plan) -> set[str]:
    return {f"{t.repository}:{t.tag}" for t in plan.tags_deleted}


def test_shared_digest_aliases(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "app", "v1", layers=[b"app v1"], seed="v1")
    push_oci_image(registry, "app", "v2", layers=[b"app v2"], seed="v2")
    shared = push_oci_image(registry, "app", "v3", layers=[b"app v3"], seed="v3")
    tag_alias(registry, "app", "v3", "latest")
    for tag, days in (("v1", 30), ("v2", 20), ("v3", 10), ("latest", 5)):
        set_pushed_at(registry.root, "app", tag, ago(days))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: only-latest
            repositories: ["app"]
            keep: {tags: ["latest"]}
    """),
    )
    assert deleted(plan) == {"app:v1", "app:v2", "app:v3"}
    assert shared not in {m.digest for m in plan.manifests_unlinked}
    assert shared not in plan.reclaimable
    assert len(plan.manifests_unlinked) == 2


def test_multiarch_index(registry: RunningRegistry, tmp_path: Path) -> None:
    old, old_children = push_oci_index(registry, "base/os", "1.0", seed="os-1.0")
    new, new_children = push_oci_index(registry, "base/os", "2.0", seed="os-2.0")
    set_pushed_at(registry.root, "base/os", "1.0", ago(30))
    for child in (*old_children, *new_children, old, new):
        age_revision(registry.root, "base/os", child, ago(30))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: base
            repositories: ["base/**"]
            keep: {last: 1}
            untagged: delete
    """),
    )
    assert deleted(plan) == {"base/os:1.0"}
    assert {m.digest for m in plan.manifests_unlinked} == {old, *old_children}
    assert set(new_children).isdisjoint(plan.reclaimable)


def test_nested_repositories(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "team/app", "a", layers=[b"team app a"], seed="ta")
    push_oci_image(registry, "team/app", "b", layers=[b"team app b"], seed="tb")
    push_oci_image(registry, "team/app/api", "a", layers=[b"api a"], seed="aa")
    push_oci_image(registry, "team/app/api", "b", layers=[b"api b"], seed="ab")
    for repo in ("team/app", "team/app/api"):
        set_pushed_at(registry.root, repo, "a", ago(9))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: api-only
            repositories: ["team/*/api"]
            keep: {last: 1}
    """),
    )
    assert deleted(plan) == {"team/app/api:a"}
    assert [r.name for r in read_inventory(registry.root).repositories] == [
        "team/app",
        "team/app/api",
    ]


def test_base_layer_shared_across_repositories(registry: RunningRegistry, tmp_path: Path) -> None:
    base = [b"shared base layer " * 100]
    push_docker_image(
        registry, "svc/one", "old", layers=[b"one old"], seed="one-old", base="debian-like"
    )
    push_docker_image(registry, "svc/one", "new", layers=[b"one new"], seed="one-new")
    push_docker_image(registry, "svc/two", "only", layers=[b"two"], seed="two", base="debian-like")
    push_oci_image(registry, "svc/three", "x", layers=[*base, b"three"], seed="three")
    push_oci_image(registry, "svc/four", "x", layers=[*base, b"four"], seed="four")
    set_pushed_at(registry.root, "svc/one", "old", ago(40))
    inventory = read_inventory(registry.root)
    shared = [b for m in inventory.manifests.values() for b in m.blobs]
    shared_once = {b for b in shared if shared.count(b) > 1}
    assert shared_once, "the scenario needs layers shared across repositories"
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: svc
            repositories: ["svc/**"]
            keep: {last: 1}
            allow_empty: true
    """),
    )
    assert "svc/one:old" in deleted(plan)
    assert shared_once.isdisjoint(plan.reclaimable)


def test_repointed_tag_history_is_not_current(registry: RunningRegistry, tmp_path: Path) -> None:
    digests = [
        push_oci_image(registry, "ci/app", "main", layers=[f"build {i}".encode()], seed=f"b{i}")
        for i in range(4)
    ]
    for d in digests[:-1]:
        age_revision(registry.root, "ci/app", d, ago(3))
    history = tag_dir(registry.root, "ci/app", "main") / "index/sha256"
    assert len(os.listdir(history)) == 4
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: ci
            repositories: ["ci/**"]
            keep: {last: 5}
            untagged: delete
    """),
    )
    assert plan.tags_deleted == ()
    assert {m.digest for m in plan.manifests_unlinked} == set(digests[:-1])


def test_untagged_old_and_new(registry: RunningRegistry, tmp_path: Path) -> None:
    old = push_oci_image(registry, "ci/job", "t", layers=[b"old untagged"], seed="o")
    young = push_oci_image(registry, "ci/job", "t", layers=[b"young untagged"], seed="y")
    push_oci_image(registry, "ci/job", "t", layers=[b"current"], seed="c")
    age_revision(registry.root, "ci/job", old, ago(2))
    age_revision(registry.root, "ci/job", young, NOW - timedelta(minutes=10))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: jobs
            repositories: ["ci/**"]
            keep: {last: 3}
            untagged: delete
    """),
    )
    assert [m.digest for m in plan.manifests_unlinked] == [old]
    assert young not in plan.reclaimable


def test_untagged_keep_leaves_everything(registry: RunningRegistry, tmp_path: Path) -> None:
    old = push_oci_image(registry, "ci/job", "t", layers=[b"old"], seed="o")
    push_oci_image(registry, "ci/job", "t", layers=[b"new"], seed="n")
    age_revision(registry.root, "ci/job", old, ago(20))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: jobs
            repositories: ["ci/**"]
            keep: {last: 3}
    """),
    )
    assert plan.manifests_unlinked == () and plan.reclaimable == {}


def test_signature_follows_its_image(registry: RunningRegistry, tmp_path: Path) -> None:
    old = make_oci_image([b"signed old"], seed="so")
    push_oci(registry, "signed", "old", old)
    push_oci_image(registry, "signed", "new", layers=[b"signed new"], seed="sn")
    sig = make_oci_image(
        [b"signature"],
        seed="sig",
        subject=old.descriptor(),
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    sig_tag = "sha256-" + old.digest.split(":")[1] + ".sig"
    push_oci(registry, "signed", sig_tag, sig)
    set_pushed_at(registry.root, "signed", "old", ago(10))
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: signed
            repositories: ["signed"]
            keep: {last: 1}
    """),
    )
    assert deleted(plan) == {"signed:old", f"signed:{sig_tag}"}
    assert {old.digest, sig.digest} <= {m.digest for m in plan.manifests_unlinked}


def test_empty_repository_removed_only_when_allowed(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "tmp/pr-1", "build", layers=[b"pr1"], seed="pr1")
    push_oci_image(registry, "tmp/pr-2", "build", layers=[b"pr2"], seed="pr2")
    for repo in ("tmp/pr-1", "tmp/pr-2"):
        set_pushed_at(registry.root, repo, "build", ago(30))
    digest = (tag_link(registry.root, "tmp/pr-1", "build")).read_text()
    for repo in ("tmp/pr-1", "tmp/pr-2"):
        age_revision(
            registry.root, repo, (tag_link(registry.root, repo, "build")).read_text(), ago(30)
        )
        for sub in ("_layers/sha256", "_uploads"):
            p = registry.root / "docker/registry/v2/repositories" / repo / sub
            if p.exists():
                os.utime(p, (ago(30).timestamp(),) * 2)
    plan = plan_and_compare(
        registry,
        tmp_path,
        policies("""
        policies:
          - name: previews
            repositories: ["tmp/pr-1"]
            keep: {within: 7d}
            allow_empty: true
          - name: kept-previews
            repositories: ["tmp/pr-2"]
            keep: {within: 7d}
    """),
    )
    assert plan.repositories_removed == ("tmp/pr-1",)
    assert deleted(plan) == {"tmp/pr-1:build"}
    assert digest in {m.digest for m in plan.manifests_unlinked}


# -- corrupt trees: the plan refuses instead of guessing ----------------------------------------


def corrupt_scenario(registry: RunningRegistry) -> tuple[str, str]:
    old = push_oci_image(registry, "app", "old", layers=[b"old"], seed="old")
    new = push_oci_image(registry, "app", "new", layers=[b"new"], seed="new")
    push_oci_image(registry, "other", "old", layers=[b"other old"], seed="o-old")
    push_oci_image(registry, "other", "new", layers=[b"other new"], seed="o-new")
    for repo in ("app", "other"):
        set_pushed_at(registry.root, repo, "old", ago(30))
    return old, new


KEEP_ONE = """
    policies:
      - name: one
        repositories: ["**"]
        keep: {last: 1}
"""


def test_empty_tag_link_refuses_the_repository(registry: RunningRegistry, tmp_path: Path) -> None:
    corrupt_scenario(registry)
    tag_link(registry.root, "app", "new").write_bytes(b"")
    plan = plan_and_compare(registry, tmp_path, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]
    assert "link file is empty" in plan.refused[0].reason


def test_missing_manifest_blob_refuses_the_repository(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    _, new = corrupt_scenario(registry)
    shutil.rmtree(blob_data(registry.root, new).parent)
    plan = plan_and_compare(registry, tmp_path, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]


def test_garbage_manifest_blocks_gc_like_the_registry(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    old, _ = corrupt_scenario(registry)
    data = blob_data(registry.root, old)
    data.chmod(0o644)
    data.write_bytes(b"this is not a manifest")
    inventory = read_inventory(registry.root)
    kinds = {p.kind for p in inventory.problems}
    assert ProblemKind.GC_ABORT in kinds
    plan = make_plan(inventory, policies(KEEP_ONE), Safety(), NOW)
    assert plan.gc_blocked
    assert [r.repository for r in plan.refused] == ["app"]
    dry = gc_dry_run(registry.root, version=registry.version)
    assert dry.returncode != 0, "the registry's GC should abort on this tree, as we predicted"


def test_symlink_is_not_followed(registry: RunningRegistry, tmp_path: Path) -> None:
    corrupt_scenario(registry)
    outside = tmp_path / "outside"
    outside.mkdir()
    tags = registry.root / "docker/registry/v2/repositories/app/_manifests/tags"
    os.symlink(outside, tags / "evil")
    plan = make_plan(read_inventory(registry.root), policies(KEEP_ONE), Safety(), NOW)
    assert [r.repository for r in plan.refused] == ["app"]
    assert "other:old" in deleted(plan)


def test_tag_without_current_link_refuses_the_repository(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    corrupt_scenario(registry)
    (tag_dir(registry.root, "app", "half-pushed")).mkdir(parents=True)
    plan = plan_and_compare(registry, tmp_path, policies(KEEP_ONE))
    assert [r.repository for r in plan.refused] == ["app"]
    reason = plan.refused[0].reason
    assert "half-pushed" in reason and "link file is missing" in reason


def test_revision_link_with_garbage_blocks_gc(registry: RunningRegistry, tmp_path: Path) -> None:
    old, _ = corrupt_scenario(registry)
    (revision_dir(registry.root, "app", old) / "link").write_bytes(b"")
    plan = make_plan(read_inventory(registry.root), policies(KEEP_ONE), Safety(), NOW)
    assert plan.gc_blocked and [r.repository for r in plan.refused] == ["app"]
    dry = gc_dry_run(registry.root, version=registry.version)
    assert dry.returncode != 0, "the registry's GC aborts here too"
