"""The test harness itself, against a real registry: pushes with docker and skopeo, pulls,
tag aliases, and the registry's own GC on the tree and on an edited copy of it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness.gc import gc_dry_run, gc_in_container, gc_run
from tests.harness.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    CommandError,
    docker_pull_error,
    docker_pull_ok,
    make_oci_image,
    pull_error,
    pull_ok,
    push_docker_image,
    push_oci,
    push_oci_image,
    push_oci_index,
    tag_alias,
)
from tests.harness.registry import RunningRegistry, restart_registry
from tests.harness.tree import (
    blob_exists,
    list_blobs,
    list_revisions,
    list_tags,
    manifest_blobs,
    read_manifest,
    remove_tag,
    revision_dir,
    set_pushed_at,
    tag_digest,
    tag_dir,
    tag_link,
    unlink_manifest,
)

pytestmark = pytest.mark.registry

CopyRoot = Callable[[Path], Path]


def test_docker_image_push_and_pull(registry: RunningRegistry) -> None:
    d1 = push_docker_image(registry, "harness/docker", "v1", seed="harness-docker-1")
    d2 = push_docker_image(registry, "harness/docker", "v2", seed="harness-docker-2")
    assert d1 != d2, "distinct seeds give distinct images"
    assert tag_digest(registry.root, "harness/docker", "v1") == d1
    assert read_manifest(registry.root, d1)["mediaType"] == DOCKER_MANIFEST
    assert {d1, d2} <= list_revisions(registry.root, "harness/docker")
    # Re-pushing the same seed gives the same image (local build cache).
    assert push_docker_image(registry, "harness/docker", "v1-again", seed="harness-docker-1") == d1

    assert pull_error(registry, "harness/docker", "v1") is None
    assert pull_ok(registry, "harness/docker", d2)
    assert docker_pull_error(registry, "harness/docker", "v2") is None
    assert docker_pull_ok(registry, "harness/docker", d1)
    assert not pull_ok(registry, "harness/docker", "no-such-tag")
    assert not docker_pull_ok(registry, "harness/docker", "no-such-tag")


def test_docker_images_on_a_base_share_its_layers(registry: RunningRegistry) -> None:
    a = push_docker_image(registry, "harness/base-a", "v1", seed="on-base-a", base="harness")
    b = push_docker_image(registry, "harness/base-b", "v1", seed="on-base-b", base="harness")
    layers_a = [x["digest"] for x in read_manifest(registry.root, a)["layers"]]
    layers_b = [x["digest"] for x in read_manifest(registry.root, b)["layers"]]
    assert len(layers_a) == len(layers_b) == 3  # two base layers + the seed's own
    assert layers_a[:2] == layers_b[:2]
    assert layers_a[2] != layers_b[2]


def test_oci_index_push_and_pull(registry: RunningRegistry) -> None:
    index, children = push_oci_index(registry, "harness/multi", "v1", seed="harness-index")
    assert len(children) == 2
    assert tag_digest(registry.root, "harness/multi", "v1") == index
    doc = read_manifest(registry.root, index)
    assert doc["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in doc["manifests"]] == children
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm64"]
    # The children are stored and linked into the repository, but not tagged.
    assert list_revisions(registry.root, "harness/multi") == {index, *children}
    assert list_tags(registry.root, "harness/multi") == ["v1"]
    for child in children:
        assert blob_exists(registry.root, child)

    assert pull_error(registry, "harness/multi", "v1") is None
    for child in children:
        assert pull_ok(registry, "harness/multi", child)
    assert docker_pull_ok(registry, "harness/multi", "v1")


def test_oci_image_bytes_are_deterministic(registry: RunningRegistry) -> None:
    shared = b"a base layer shared across repositories\n" * 100
    one = push_oci_image(registry, "harness/one", "v1", layers=[shared, b"one"], seed="one")
    two = push_oci_image(registry, "harness/two", "v1", layers=[shared, b"two"], seed="two")
    l1 = read_manifest(registry.root, one)["layers"]
    l2 = read_manifest(registry.root, two)["layers"]
    assert l1[0] == l2[0]
    assert l1[1]["digest"] != l2[1]["digest"]
    # Same inputs, same digest: pushing again changes nothing in the blob store.
    blobs = list_blobs(registry.root)
    again = push_oci_image(registry, "harness/one", "v1-again", layers=[shared, b"one"], seed="one")
    assert again == one
    assert list_blobs(registry.root) == blobs
    img = make_oci_image([b"x"], config_created="2024-05-06T07:08:09Z", seed="created")
    push_oci(registry, "harness/one", "created", img)
    config = json.loads(
        (
            registry.v2
            / "blobs"
            / "sha256"
            / img.config_digest[7:9]
            / img.config_digest[7:]
            / "data"
        ).read_bytes()
    )
    assert config["created"] == "2024-05-06T07:08:09Z"
    assert pull_ok(registry, "harness/one", "created")


def test_tag_alias_shares_the_digest(registry: RunningRegistry) -> None:
    d = push_oci_image(registry, "harness/alias", "v1.0.0", layers=[b"alias"], seed="alias")
    assert tag_alias(registry, "harness/alias", "v1.0.0", "latest") == d
    a = tag_link(registry.root, "harness/alias", "v1.0.0").read_bytes()
    b = tag_link(registry.root, "harness/alias", "latest").read_bytes()
    assert a == b == d.encode()
    index, _ = push_oci_index(registry, "harness/alias", "multi", seed="alias-index")
    assert tag_alias(registry, "harness/alias", "multi", "multi-latest") == index
    tags = list_tags(registry.root, "harness/alias")
    assert tags == ["latest", "multi", "multi-latest", "v1.0.0"]
    assert pull_ok(registry, "harness/alias", "multi-latest")


def test_gc_dry_run_on_untouched_tree_reports_nothing(registry: RunningRegistry) -> None:
    empty = gc_dry_run(registry.root)
    assert empty.returncode == 1 and empty.empty_registry, empty.output

    push_docker_image(registry, "harness/gc/docker", "v1", seed="gc-docker")
    push_oci_image(registry, "harness/gc/oci", "v1", layers=[b"gc shared", b"gc own"], seed="g1")
    push_oci_image(registry, "harness/gc/oci2", "v1", layers=[b"gc shared"], seed="g2")
    push_oci_index(registry, "harness/gc/multi", "v1", seed="gc-index")

    res = gc_dry_run(registry.root)
    assert res.ok, res.output
    assert res.eligible == set()
    assert (res.blobs_eligible, res.manifests_eligible) == (0, 0)
    assert res.marked == len(list_blobs(registry.root)) == len(res.marked_digests)

    in_ctr = gc_in_container(registry.name, dry_run=True)
    assert in_ctr.ok, in_ctr.output
    assert (in_ctr.eligible, in_ctr.marked) == (set(), res.marked)


def test_gc_on_a_copy_reclaims_exactly_the_untagged_image(
    registry: RunningRegistry, registry_root_copy: CopyRoot
) -> None:
    root = registry.root
    shared = b"layer shared by both images\n" * 50
    gone = make_oci_image([shared, b"gone layer 1", b"gone layer 2"], seed="gone")
    kept = make_oci_image([shared, b"kept layer"], seed="kept")
    push_oci(registry, "harness/app", "old", gone)
    push_oci(registry, "harness/app", "new", kept)
    docker_digest = push_docker_image(registry, "harness/dock", "old", seed="gc-copy-docker")
    push_docker_image(registry, "harness/dock", "new", seed="gc-copy-docker-new")
    set_pushed_at(root, "harness/app", "old", datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC))

    copy = registry_root_copy(root)
    link = tag_link(copy, "harness/app", "old")
    assert link.stat().st_mtime == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert (
        tag_dir(copy, "harness/app", "new").stat().st_mtime
        == tag_dir(root, "harness/app", "new").stat().st_mtime
    )

    # Removing only the tag reclaims nothing: the revision link still marks the manifest.
    remove_tag(copy, "harness/app", "old")
    assert gc_dry_run(copy).eligible == set()

    unlink_manifest(copy, "harness/app", gone.digest)
    expected = gone.blob_digests - kept.blob_digests
    assert len(expected) == 4  # manifest, config, two own layers; the shared layer stays
    res = gc_dry_run(copy)
    assert res.ok, res.output
    assert res.eligible == expected
    assert res.blobs_eligible == len(expected)

    # The same for a docker-pushed image, expected blobs read from the tree.
    docker_blobs = manifest_blobs(copy, docker_digest)
    remove_tag(copy, "harness/dock", "old")
    unlink_manifest(copy, "harness/dock", docker_digest)
    assert not revision_dir(copy, "harness/dock", docker_digest).exists()
    assert gc_dry_run(copy).eligible == expected | docker_blobs

    # A real GC on the copy deletes exactly those; the original is untouched.
    before = list_blobs(copy)
    done = gc_run(copy)
    assert done.ok, done.output
    assert list_blobs(copy) == before - expected - docker_blobs
    assert gc_dry_run(root).eligible == set()
    assert list_blobs(root) == before
    assert pull_ok(registry, "harness/app", "old")


def test_restart_and_read_only_mode(registry: RunningRegistry) -> None:
    d = push_oci_image(registry, "harness/ro", "v1", layers=[b"ro"], seed="ro")
    port = registry.port
    restart_registry(registry, env={"REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled": true}'})
    assert registry.port == port
    assert pull_ok(registry, "harness/ro", "v1")
    with pytest.raises(CommandError):
        push_oci_image(registry, "harness/ro", "v2", layers=[b"ro2"], seed="ro2")
    restart_registry(registry, env={})
    assert push_oci_image(registry, "harness/ro", "v2", layers=[b"ro2"], seed="ro2") != d
    restart_registry(registry)
    assert pull_ok(registry, "harness/ro", "v2")
    assert os.path.isfile(tag_link(registry.root, "harness/ro", "v2"))
