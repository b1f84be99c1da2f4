"""The registry on object storage: a real registry container (2.8.2 and 3.1.1) whose ``s3``
driver stores into a bucket of the session's Ceph RADOS Gateway (tests/harness/s3.py), real
skopeo pushes and pulls through it, the objects listed with boto3, and the registry's own
garbage collector run on the bucket. The ground the S3 inventory of issue 16 is built on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.gc import gc_in_container
from tests.harness.images import make_oci_image, pull_ok, sha256_digest
from tests.harness.proc import docker
from tests.harness.registry import RunningRegistry, stop_registry
from tests.harness.s3 import (
    V2_PREFIX,
    S3Bucket,
    blob_data_key,
    push_oci_to_s3,
    start_s3_registry,
    tag_link_key,
)

pytestmark = pytest.mark.both_registries


@pytest.fixture
def s3_registry(
    docker_ready: None, registry_version: str, s3_bucket: S3Bucket, tmp_path: Path
) -> Iterator[RunningRegistry]:
    """A registry container of ``registry_version`` on ``s3_bucket``, removed after the test
    (its last log lines printed, shown when the test fails)."""
    reg = start_s3_registry(s3_bucket, tmp_path / "registry", version=registry_version)
    try:
        yield reg
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ({reg.url}, bucket {s3_bucket.name}) ---")
        print((logs.stdout + logs.stderr).strip())
        stop_registry(reg)


def upload_orphan_blob(reg: RunningRegistry, repo: str, data: bytes) -> str:
    """Upload a blob into ``repo`` that no manifest references (POST then PUT with the
    digest, as clients do); return its digest."""
    digest = sha256_digest(data)
    with httpx.Client(base_url=reg.url, timeout=30) as http:
        started = http.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]  # keeps its own query (_state)
        sep = "&" if "?" in location else "?"
        done = http.put(
            f"{location}{sep}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
    return digest


def test_push_and_pull_through_the_bucket(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    image = make_oci_image([b"s3 layer one", b"s3 layer two"], seed="s3-push")
    push_oci_to_s3(s3_registry, s3_bucket, "team/app", "v1", image)

    assert pull_ok(s3_registry, "team/app", "v1")
    assert pull_ok(s3_registry, "team/app", image.digest)
    keys = set(s3_bucket.keys())
    assert keys, "the push wrote nothing into the bucket"
    assert all(key.startswith(V2_PREFIX) for key in keys), sorted(keys)
    for digest in image.blob_digests:
        assert blob_data_key(digest) in keys, digest
    assert tag_link_key("team/app", "v1") in keys
    # the registry wrote to the bucket only: the mounted directory stays empty
    assert list((tmp_path / "registry").iterdir()) == []


def test_registry_gc_dry_run_on_the_bucket(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, registry_version: str
) -> None:
    shared = b"s3 shared base layer"
    app = make_oci_image([shared, b"s3 app layer"], seed="s3-gc-app")
    tool = make_oci_image([shared, b"s3 tool layer"], seed="s3-gc-tool")
    push_oci_to_s3(s3_registry, s3_bucket, "team/app", "v1", app)
    push_oci_to_s3(s3_registry, s3_bucket, "team/tool", "v1", tool)
    orphan = upload_orphan_blob(s3_registry, "team/app", b"s3 blob no manifest references")
    before = s3_bucket.keys()

    # REGISTRY_STORAGE_* of the container apply to the exec'd GC as well: it reads the bucket
    res = gc_in_container(s3_registry)

    assert res.ok, res.output
    referenced = app.blob_digests | tool.blob_digests
    assert res.marked == len(referenced) == 7
    assert res.marked_digests == referenced
    assert res.eligible == {orphan}
    assert (res.blobs_eligible, res.manifests_eligible) == (1, 0)
    # 3.x also names the orphan's _layers link (which its real GC deletes); 2.8 leaves it
    expected_links = {("team/app", orphan)} if registry_version != "2.8.2" else set()
    assert res.layer_links == expected_links
    assert s3_bucket.keys() == before, "a dry run changed the bucket"


def test_registry_gc_on_a_bucket_without_repositories(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, registry_version: str
) -> None:
    res = gc_in_container(s3_registry)

    if registry_version == "2.8.2":
        # as on a filesystem: the walk of docker/registry/v2/repositories fails
        assert res.empty_registry, res.output
        assert "s3aws: Path not found: /docker/registry/v2/repositories" in res.output
    else:
        # 3.x on S3 (unlike 3.x on a filesystem): an empty listing, nothing marked, exit 0
        assert res.ok, res.output
        assert (res.marked, res.blobs_eligible, res.manifests_eligible) == (0, 0, 0)
    assert s3_bucket.keys() == []


def test_rootdirectory_prefixes_every_key(
    docker_ready: None, registry_version: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    reg = start_s3_registry(
        s3_bucket, tmp_path / "registry", version=registry_version, rootdirectory="/mirror"
    )
    try:
        image = make_oci_image([b"s3 rootdirectory layer"], seed="s3-root")
        push_oci_to_s3(reg, s3_bucket, "team/app", "v1", image, rootdirectory="/mirror")
        res = gc_in_container(reg)
    finally:
        stop_registry(reg)

    keys = s3_bucket.keys()
    assert keys and all(key.startswith(f"mirror/{V2_PREFIX}") for key in keys), keys
    assert blob_data_key(image.digest, "/mirror") in keys
    assert res.ok and res.marked == len(image.blob_digests), res.output
