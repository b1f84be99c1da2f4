"""The plan against a real registry on S3, 2.8.2 and 3.1.1: the scenarios of
test_plan_scenarios.py, pushed by skopeo and docker to a registry container whose ``s3`` driver
stores into a bucket of the session's Ceph RADOS Gateway.

For every scenario: read the bucket (``read_inventory(S3Settings)``), plan, copy the bucket
into a second one (server-side CopyObject of every key), make the plan's removals on the copy
(every key under each removed tag's, revision's and repository's prefix, as ``rmtree`` on
disk), and run the real ``registry garbage-collect --dry-run`` of the same version on the copy:
the blobs it calls eligible must be exactly the plan's reclaimable set (and, on 3.x, the
``_layers`` links it deletes a superset of the plan's layer-link candidates, as on disk). Then
a real GC on the copy must delete exactly those blobs' ``data`` objects, each of the size the
plan counted: ``bytes_reclaimed`` byte for byte.

Ages: LastModified cannot be set on S3 (the filesystem tests age files with ``utime``), so the
plans run at ``LATER``, a month after the pushes (everything is "old"), and pushes whose order
a policy reads are a second apart (``next_second``): RGW's listings give LastModified in
milliseconds but its GetObject and HeadObject in whole seconds, and the S3 backend's push times
(a tag link's, read with the link) are whole seconds, so tags pushed in the same second tie and
the planner's tie-break (the greater name is the newer) decides, also which tag a policy
without ``allow_empty`` leaves.
Where a scenario needs an old and a young untagged revision, the plan's ``now`` and
``untagged_min_age`` are chosen from the revision links' real LastModified.

No symbolic link can exist in a bucket: the filesystem's symlink scenario has no counterpart.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.harness.gc import GcResult
from tests.harness.images import make_oci_image
from tests.harness.proc import docker
from tests.harness.registry import RunningRegistry, stop_registry
from tests.harness.s3 import (
    V2_PREFIX,
    RunningS3,
    S3Bucket,
    create_bucket,
    delete_bucket,
    push_oci_to_s3,
    start_s3_registry,
)
from tests.harness.s3_tree import (
    blob_data_key,
    blob_sizes,
    copy_bucket,
    delete_prefix,
    gc_on_bucket,
    last_modified,
    layer_link_key,
    next_second,
    object_exists,
    push_docker_image_to_s3,
    push_oci_image_to_s3,
    push_oci_index_to_s3,
    repository_prefix,
    revision_prefix,
    s3_settings,
    tag_alias_on_s3,
    tag_link_key,
    tag_prefix,
    write_object,
)

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
#: The plans' "now": a month after this session's pushes, which are all "old" then.
LATER = datetime.now(UTC) + timedelta(days=30)


@dataclass(frozen=True)
class OnS3:
    """A registry container of ``version`` on ``bucket``, and an empty bucket ``copy`` on the
    same server for the comparison."""

    reg: RunningRegistry
    bucket: S3Bucket
    copy: S3Bucket
    version: str

    def push(self, repo: str, tag: str, layers: list[bytes], seed: str) -> str:
        return push_oci_image_to_s3(self.reg, self.bucket, repo, tag, layers=layers, seed=seed)

    def write(self, key: str, data: bytes) -> None:
        write_object(self.bucket, key, data)


@pytest.fixture
def s3(
    docker_ready: None,
    registry_version: str,
    s3_server: RunningS3,
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> Iterator[OnS3]:
    copy = create_bucket(s3_server)
    reg = start_s3_registry(s3_bucket, tmp_path / "registry", version=registry_version)
    try:
        yield OnS3(reg=reg, bucket=s3_bucket, copy=copy, version=registry_version)
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ({reg.url}, bucket {s3_bucket.name}) ---")
        print((logs.stdout + logs.stderr).strip())
        stop_registry(reg)
        delete_bucket(copy)


def policies(text: str) -> list[Policy]:
    checked = validate_policies_text(textwrap.dedent(text), "scenario.yaml")
    assert not checked.problems, checked.problems
    return list(checked.policies)


def make_removals(copy: S3Bucket, plan: Plan) -> None:
    """What a maintenance run removes, done plainly on the copy: every key under each
    removed tag's, revision's and repository's prefix."""
    for t in plan.tags_deleted:
        delete_prefix(copy, tag_prefix(t.repository, t.tag))
    for m in plan.manifests_unlinked:
        delete_prefix(copy, revision_prefix(m.repository, m.digest))
    for name in plan.repositories_removed:
        delete_prefix(copy, repository_prefix(name))


def has_repositories(bucket: S3Bucket) -> bool:
    return bool(bucket.keys(f"{V2_PREFIX}repositories/"))


def plan_and_compare(
    s3: OnS3, rules: list[Policy], safety: Safety | None = None, now: datetime = LATER
) -> Plan:
    """Plan on the live bucket; prove the reclaimable set and bytes against the real GC on a
    copy with the plan's removals made."""
    inventory = read_inventory(s3_settings(s3.bucket))
    safety = safety or Safety(untagged_min_age=timedelta(hours=1))
    plan = make_plan(inventory, rules, safety, now)
    # a maintenance run re-plans with every blob's data sized from the listings: the same
    stated = make_plan(read_inventory(s3_settings(s3.bucket), stat_blobs=True), rules, safety, now)
    assert dict(stated.reclaimable) == dict(plan.reclaimable)
    copy_bucket(s3.bucket, s3.copy)
    make_removals(s3.copy, plan)
    dry = gc_on_bucket(s3.copy, version=s3.version)
    if not has_repositories(s3.copy):
        expect_gc_without_repositories(s3, dry, plan)
        return plan
    assert dry.returncode == 0, dry.output
    assert dry.eligible == set(plan.reclaimable)
    # The `_layers` links the plan expects the GC to leave dangling: 2.8's GC leaves them, 3.x
    # deletes them itself (#4344), also of digests a later repository keeps (see
    # test_plan_scenarios.py), never of a blob a manifest left in that repository references.
    links = {
        (repo, digest)
        for repo, digest in layer_link_candidates(inventory, plan.reclaimable)
        if object_exists(s3.copy, layer_link_key(repo, digest))
    }
    if s3.version == "2.8.2":
        assert dry.layer_links == set()
    else:
        assert links <= dry.layer_links
        after = read_inventory(s3_settings(s3.copy))
        assert dry.layer_links.isdisjoint(layer_link_candidates(after, after.blobs))
    before = blob_sizes(s3.copy)
    real = gc_on_bucket(s3.copy, version=s3.version, dry_run=False)
    assert real.returncode == 0, real.output
    left = blob_sizes(s3.copy)
    assert set(left) <= set(before)
    freed = {digest: size for digest, size in before.items() if digest not in left}
    assert freed == dict(plan.reclaimable), "the GC freed other blobs or sizes than planned"
    assert sum(freed.values()) == plan.bytes_reclaimed
    assert real.layer_links == dry.layer_links
    still = {
        link for link in links | dry.layer_links if object_exists(s3.copy, layer_link_key(*link))
    }
    assert still == (links if s3.version == "2.8.2" else set())
    return plan


def expect_gc_without_repositories(s3: OnS3, dry: GcResult, plan: Plan) -> None:
    """The plan removed every repository, so the copy has no key under ``repositories/``:
    2.8's GC fails to walk it ("Path not found", as on a bucket never pushed to; retentiond
    takes that as nothing to collect, and the blobs stay until a later push), 3.x lists
    nothing and collects every blob."""
    if s3.version == "2.8.2":
        assert dry.empty_registry, dry.output
        assert "s3aws: Path not found: /docker/registry/v2/repositories" in dry.output
        return
    assert dry.returncode == 0, dry.output
    assert dry.eligible == set(plan.reclaimable)
    before = blob_sizes(s3.copy)
    real = gc_on_bucket(s3.copy, version=s3.version, dry_run=False)
    assert real.returncode == 0, real.output
    assert blob_sizes(s3.copy) == {}
    assert before == dict(plan.reclaimable)


def deleted(plan: Plan) -> set[str]:
    return {f"{t.repository}:{t.tag}" for t in plan.tags_deleted}


def unlinked(plan: Plan) -> set[str]:
    return {m.digest for m in plan.manifests_unlinked}


# -- scenarios ------------------------------------------------------------------------------------


def test_shared_digest_aliases(s3: OnS3) -> None:
    s3.push("app", "v1", [b"app v1"], "v1")
    s3.push("app", "v2", [b"app v2"], "v2")
    shared = s3.push("app", "v3", [b"app v3"], "v3")
    # latest must be the newest tag (the one a policy without allow_empty always leaves): a
    # tie in the same second would go to the greater name, v3
    next_second()
    tag_alias_on_s3(s3.reg, s3.bucket, "app", "v3", "latest")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: only-latest
            repositories: ["app"]
            keep: {tags: ["latest"]}
    """),
    )
    assert deleted(plan) == {"app:v1", "app:v2", "app:v3"}
    assert shared not in unlinked(plan)
    assert shared not in plan.reclaimable
    assert len(plan.manifests_unlinked) == 2


def test_multiarch_index(s3: OnS3) -> None:
    old, old_children = push_oci_index_to_s3(s3.reg, s3.bucket, "base/os", "1.0", seed="os-1.0")
    next_second()
    new, new_children = push_oci_index_to_s3(s3.reg, s3.bucket, "base/os", "2.0", seed="os-2.0")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: base
            repositories: ["base/**"]
            keep: {last: 1}
            untagged: delete
    """),
    )
    assert deleted(plan) == {"base/os:1.0"}
    assert unlinked(plan) == {old, *old_children}
    assert {new, *new_children}.isdisjoint(plan.reclaimable)


def test_nested_repositories(s3: OnS3) -> None:
    s3.push("team/app", "a", [b"team app a"], "ta")
    s3.push("team/app/api", "a", [b"api a"], "aa")
    next_second()
    s3.push("team/app", "b", [b"team app b"], "tb")
    s3.push("team/app/api", "b", [b"api b"], "ab")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: api-only
            repositories: ["team/*/api"]
            keep: {last: 1}
    """),
    )
    assert deleted(plan) == {"team/app/api:a"}
    assert [r.name for r in read_inventory(s3_settings(s3.bucket)).repositories] == [
        "team/app",
        "team/app/api",
    ]


def test_base_layer_shared_across_repositories(s3: OnS3) -> None:
    base = [b"shared base layer " * 100]
    push_docker_image_to_s3(
        s3.reg, s3.bucket, "svc/one", "old", layers=[b"one old"], seed="one-old", base="debian-like"
    )
    next_second()
    push_docker_image_to_s3(
        s3.reg, s3.bucket, "svc/one", "new", layers=[b"one new"], seed="one-new"
    )
    push_docker_image_to_s3(
        s3.reg, s3.bucket, "svc/two", "only", layers=[b"two"], seed="two", base="debian-like"
    )
    s3.push("svc/three", "x", [*base, b"three"], "three")
    s3.push("svc/four", "x", [*base, b"four"], "four")
    inventory = read_inventory(s3_settings(s3.bucket))
    shared = [b for m in inventory.manifests.values() for b in m.blobs]
    shared_once = {b for b in shared if shared.count(b) > 1}
    assert shared_once, "the scenario needs layers shared across repositories"
    plan = plan_and_compare(
        s3,
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


def test_repointed_tag_history_is_not_current(s3: OnS3) -> None:
    digests = [s3.push("ci/app", "main", [f"build {i}".encode()], f"b{i}") for i in range(4)]
    history = s3.bucket.keys(tag_prefix("ci/app", "main") + "index/sha256/")
    assert len(history) == 4, history
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: ci
            repositories: ["ci/**"]
            keep: {last: 5}
            untagged: delete
    """),
    )
    assert plan.tags_deleted == ()
    assert unlinked(plan) == set(digests[:-1])


def test_keep_last_follows_push_order_not_names(s3: OnS3) -> None:
    """``keep: {last: 2}`` ranks by the tags' ``current/link`` LastModified: pushed d, c, b, a
    (a second apart), the last two are b and a, although d and c sort last by name (the
    tie-break between tags pushed in the same second)."""
    for n, tag in enumerate("dcba"):
        if n:
            next_second()
        s3.push("order/app", tag, [f"order {tag}".encode()], f"order-{tag}")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: order
            repositories: ["order/**"]
            keep: {last: 2}
            untagged: delete
    """),
    )
    assert deleted(plan) == {"order/app:d", "order/app:c"}
    assert len(plan.manifests_unlinked) == 2


def test_untagged_old_and_new(s3: OnS3) -> None:
    old = s3.push("ci/job", "t", [b"old untagged"], "o")
    next_second()
    next_second()
    young = s3.push("ci/job", "t", [b"young untagged"], "y")
    s3.push("ci/job", "t", [b"current"], "c")
    # the revision links' LastModified are whole seconds at least 2 s apart: a minimum age of
    # 2 s at 1.5 s past the young one's second is old for the old revision only
    old_at = last_modified(s3.bucket, revision_prefix("ci/job", old) + "link")
    young_at = last_modified(s3.bucket, revision_prefix("ci/job", young) + "link")
    young_second = young_at.replace(microsecond=0)
    assert young_second - old_at >= timedelta(seconds=1), (old_at, young_at)
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: jobs
            repositories: ["ci/**"]
            keep: {last: 3}
            untagged: delete
    """),
        Safety(untagged_min_age=timedelta(seconds=2)),
        now=young_second + timedelta(seconds=1.5),
    )
    assert [m.digest for m in plan.manifests_unlinked] == [old]
    assert young not in plan.reclaimable


def test_untagged_keep_leaves_everything(s3: OnS3) -> None:
    s3.push("ci/job", "t", [b"old"], "o")
    s3.push("ci/job", "t", [b"new"], "n")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: jobs
            repositories: ["ci/**"]
            keep: {last: 3}
    """),
    )
    assert plan.manifests_unlinked == () and plan.reclaimable == {}


def test_signature_follows_its_image(s3: OnS3) -> None:
    old = make_oci_image([b"signed old"], seed="so")
    push_oci_to_s3(s3.reg, s3.bucket, "signed", "old", old)
    next_second()
    s3.push("signed", "new", [b"signed new"], "sn")
    sig = make_oci_image(
        [b"signature"],
        seed="sig",
        subject=old.descriptor(),
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    sig_tag = "sha256-" + old.digest.split(":")[1] + ".sig"
    push_oci_to_s3(s3.reg, s3.bucket, "signed", sig_tag, sig)
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: signed
            repositories: ["signed"]
            keep: {last: 1}
    """),
    )
    assert deleted(plan) == {"signed:old", f"signed:{sig_tag}"}
    assert {old.digest, sig.digest} <= unlinked(plan)


def test_empty_repository_removed_only_when_allowed(s3: OnS3) -> None:
    digest = s3.push("tmp/pr-1", "build", [b"pr1"], "pr1")
    s3.push("tmp/pr-2", "build", [b"pr2"], "pr2")
    plan = plan_and_compare(
        s3,
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
    assert digest in unlinked(plan)


def test_every_repository_removed(s3: OnS3) -> None:
    """The plan empties the bucket's only repository: no key under ``repositories/`` is
    left, which 2.8's GC cannot walk (see ``expect_gc_without_repositories``)."""
    digest = s3.push("tmp/only", "build", [b"only"], "only")
    plan = plan_and_compare(
        s3,
        policies("""
        policies:
          - name: previews
            repositories: ["tmp/**"]
            keep: {within: 7d}
            allow_empty: true
    """),
    )
    assert plan.repositories_removed == ("tmp/only",)
    assert digest in plan.reclaimable
    assert not has_repositories(s3.copy)


# -- corrupt objects: the plan refuses the repository instead of guessing ------------------------


def corrupt_scenario(s3: OnS3) -> tuple[str, str]:
    """app and other, each with an old and a new tag (a second apart); keep the last one."""
    old = s3.push("app", "old", [b"old"], "old")
    s3.push("other", "old", [b"other old"], "o-old")
    next_second()
    new = s3.push("app", "new", [b"new"], "new")
    s3.push("other", "new", [b"other new"], "o-new")
    return old, new


KEEP_ONE = """
    policies:
      - name: one
        repositories: ["**"]
        keep: {last: 1}
"""


def app_blobs() -> set[str]:
    """Every blob of corrupt_scenario's ``app`` (its images computed again: same inputs,
    same digests), none of which a plan that refuses ``app`` may count reclaimable."""
    images = (make_oci_image([b"old"], seed="old"), make_oci_image([b"new"], seed="new"))
    return images[0].blob_digests | images[1].blob_digests


def test_empty_tag_link_refuses_the_repository(s3: OnS3) -> None:
    corrupt_scenario(s3)
    s3.write(tag_link_key("app", "new"), b"")
    plan = plan_and_compare(s3, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]
    assert "link file is empty" in plan.refused[0].reason
    assert app_blobs().isdisjoint(plan.reclaimable)


def test_garbage_tag_link_refuses_the_repository(s3: OnS3) -> None:
    corrupt_scenario(s3)
    s3.write(tag_link_key("app", "new"), b"\x00\xffthis is no digest")
    plan = plan_and_compare(s3, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]
    assert app_blobs().isdisjoint(plan.reclaimable)


def test_missing_manifest_blob_refuses_the_repository(s3: OnS3) -> None:
    _, new = corrupt_scenario(s3)
    delete_prefix(s3.bucket, blob_data_key(new).removesuffix("data"))
    plan = plan_and_compare(s3, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]
    # the GC cannot read the lost manifest, so nothing references its config and layer: they
    # are garbage already (the GC takes them whatever the plan), and nothing else of app's is
    lost = make_oci_image([b"new"], seed="new")
    assert app_blobs() & set(plan.reclaimable) == lost.blob_digests - {new}


def test_garbage_manifest_blocks_gc_like_the_registry(s3: OnS3) -> None:
    old, _ = corrupt_scenario(s3)
    s3.write(blob_data_key(old), b"this is not a manifest")
    inventory = read_inventory(s3_settings(s3.bucket))
    assert ProblemKind.GC_ABORT in {p.kind for p in inventory.problems}
    plan = make_plan(inventory, policies(KEEP_ONE), Safety(), LATER)
    assert plan.gc_blocked
    assert [r.repository for r in plan.refused] == ["app"]
    dry = gc_on_bucket(s3.bucket, version=s3.version)
    assert dry.returncode != 0, "the registry's GC should abort on this bucket, as we predicted"


def test_tag_without_current_link_refuses_the_repository(s3: OnS3) -> None:
    """A tag "directory" with an ``index/`` entry and no ``current/link`` (a push that died
    between the two writes, or a half-deleted tag)."""
    old, _ = corrupt_scenario(s3)
    s3.write(tag_prefix("app", "half-pushed") + f"index/sha256/{old[7:]}/link", old.encode())
    plan = plan_and_compare(s3, policies(KEEP_ONE))
    assert [r.repository for r in plan.refused] == ["app"]
    reason = plan.refused[0].reason
    assert "half-pushed" in reason and "link file is missing" in reason
    assert app_blobs().isdisjoint(plan.reclaimable)


def test_revision_link_with_garbage_blocks_gc(s3: OnS3) -> None:
    old, _ = corrupt_scenario(s3)
    s3.write(revision_prefix("app", old) + "link", b"")
    plan = make_plan(read_inventory(s3_settings(s3.bucket)), policies(KEEP_ONE), Safety(), LATER)
    assert plan.gc_blocked and [r.repository for r in plan.refused] == ["app"]
    dry = gc_on_bucket(s3.bucket, version=s3.version)
    assert dry.returncode != 0, "the registry's GC aborts here too"


def test_object_where_a_tag_directory_should_be_refuses_the_repository(s3: OnS3) -> None:
    """An object named like a tag "directory" (``.../_manifests/tags/stray``, no ``/`` after
    it): no registry writes one, so it is not trusted (on disk, a file where a directory
    should be refuses its repository too). The GC never reads tags and is not disturbed."""
    corrupt_scenario(s3)
    s3.write(tag_prefix("app", "stray").removesuffix("/"), b"stray")
    plan = plan_and_compare(s3, policies(KEEP_ONE))
    assert deleted(plan) == {"other:old"}
    assert [r.repository for r in plan.refused] == ["app"]
    assert app_blobs().isdisjoint(plan.reclaimable)
