"""The test harness itself, against a real registry: pushes with docker and skopeo, pulls,
tag aliases, and the registry's own GC on the tree and on an edited copy of it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from tests.harness.proc import docker, run
from tests.harness.registry import RunningRegistry, registry_image, restart_registry
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


# -------------------------------------------------------------------------------------------
# The test images and the scripts that build them (scripts/build-registry-image.sh,
# scripts/build-registry-v3.sh): packaged like the official registry:2 / registry:3.

REPO_ROOT = Path(__file__).resolve().parents[2]
V3_LINK = Path(
    os.environ.get("RETENTIOND_TEST_CACHE", "/var/cache/retentiond-test"), "bin", "registry-3.1.1"
)


def _image_config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    return config


@pytest.mark.both_registries
def test_image_is_packaged_like_the_official_one(registry: RunningRegistry) -> None:
    config = _image_config(registry.image)
    assert config["Entrypoint"] == ["/entrypoint.sh"]
    assert config["Cmd"] == [registry.config_path]
    assert "/var/lib/registry" in config["Volumes"]
    # The entrypoint turned the config argument into `registry serve CONFIG` and exec'd it.
    cmdline = docker("exec", registry.name, "busybox", "cat", "/proc/1/cmdline").stdout
    assert cmdline.split("\0")[:3] == ["registry", "serve", registry.config_path]
    # `registry` is on PATH (what retentiond runs with docker exec) and says its version.
    version = docker("exec", registry.name, "registry", "--version").stdout
    assert version.startswith("registry github.com/") and registry.version in version, version
    assert docker("exec", registry.name, "sh", "-c", "echo $0").stdout.strip() == "sh"

    d = push_oci_image(registry, "harness/image", "v1", layers=[b"image"], seed="image")
    gc = docker(
        "exec", registry.name, "registry", "garbage-collect", "--dry-run", registry.config_path
    )
    assert f"marking manifest {d}" in gc.stdout + gc.stderr
    assert "0 blobs and 0 manifests eligible for deletion" in gc.stdout + gc.stderr


@pytest.mark.both_registries
def test_entrypoint_dispatches_like_upstreams(docker_ready: None, registry_version: str) -> None:
    image = registry_image(registry_version)

    def run_image(*args: str, status: int = 0) -> str:
        proc = docker("run", "--rm", "--network", "none", image, *args, check=False, timeout=60)
        assert proc.returncode == status, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    assert registry_version in run_image("--version")  # -* -> registry -*
    assert "garbage-collect" in run_image("help")  # help -> registry help
    assert run_image("busybox", "echo", "as is") == "as is\n"  # anything else: exec'd
    # A config argument -> registry serve CONFIG (here one that does not exist).
    out = run_image("/no/such/config.yml", status=1)
    assert "configuration error: open /no/such/config.yml" in out, out


@pytest.mark.both_registries
def test_image_build_is_reproducible(docker_ready: None, registry_version: str) -> None:
    """Building again gives the same layer and config (a cache hit: the same image), so
    scripts/start-docker.sh is a no-op the second time and the image is what the script makes."""
    image = registry_image(registry_version)
    again = f"retentiond-test/registry-rebuild:{registry_version}"
    try:
        out = run(
            [
                "bash",
                str(REPO_ROOT / "scripts" / "build-registry-image.sh"),
                registry_version,
                again,
            ],
            timeout=300,
        ).stdout
        assert again in out
        a, b = (json.loads(docker("image", "inspect", i).stdout)[0] for i in (image, again))
        assert a["RootFS"] == b["RootFS"], "the image is stale: run scripts/start-docker.sh"
        assert a["Config"] == b["Config"]
    finally:
        docker("rmi", again, check=False)


def test_v3_build_script_is_a_cache_hit(docker_ready: None) -> None:
    """scripts/build-registry-v3.sh only prints the cached binary the second time; the symlink
    the tests use points at it, and it is distribution v3.1.1."""
    proc = run(["bash", str(REPO_ROOT / "scripts" / "build-registry-v3.sh")], timeout=60)
    binary = Path(proc.stdout.strip())
    assert "building" not in proc.stderr, proc.stderr
    assert binary.parent.parent.name == "registry-v3" and binary.name == "registry"
    assert V3_LINK.resolve() == binary
    version = run([str(binary), "--version"]).stdout
    assert version.split()[1:] in (
        ["github.com/distribution/distribution/v3", "v3.1.1+unknown"],  # built from the tarball
        ["github.com/distribution/distribution/v3", "3.1.1"],  # the official image's
    ), version
