"""``bench.generate_s3`` puts into a bucket exactly the tree ``bench.generate`` writes on disk
(the same keys below ``docker/registry/v2/``, the same bytes), and the real registry's
garbage collector, reading that bucket with its own ``s3`` driver, finds nothing eligible."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.generate import Params, generate
from bench.generate_s3 import S3Target, generate_s3, registry_env
from tests.harness.gc import parse_gc_output, registry_bin
from tests.harness.s3 import S3Bucket

pytestmark = pytest.mark.both_registries

# small, but every kind of thing the generator makes: nested repositories, aliases, indexes,
# tag history, Docker and OCI media types; both base images used (else their layers are
# rightly eligible); tiny payloads (the test server keeps objects in RAM)
PARAMS = Params(
    repositories=5,
    tags=6,
    depth=3,
    nested_share=0.3,
    alias_share=0.2,
    index_share=0.3,
    history_share=0.3,
    bases=2,
    min_size=1,
    max_size=64,
    docker_share=0.5,
    seed=6,
)
ROOTDIRECTORY = "/bench/tree"


def target(bucket: S3Bucket, bucket_name: str | None = None) -> S3Target:
    return S3Target(
        endpoint=bucket.endpoint,
        bucket=bucket_name or bucket.name,
        access_key=bucket.access_key,
        secret_key=bucket.secret_key,
        region=bucket.region,
        rootdirectory=ROOTDIRECTORY,
        threads=4,
    )


def test_bucket_holds_the_generated_tree_and_the_gc_finds_it_clean(
    docker_ready: None, registry_version: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    on_disk = generate(tmp_path / "tree", PARAMS, jobs=2)
    v2 = tmp_path / "tree/docker/registry/v2"
    files = {p.relative_to(v2).as_posix(): p.read_bytes() for p in v2.rglob("*") if p.is_file()}

    summary = generate_s3(target(s3_bucket), PARAMS, jobs=2)

    prefix = "bench/tree/docker/registry/v2/"
    keys = s3_bucket.keys()
    assert keys and all(key.startswith(prefix) for key in keys), keys[:5]
    client = s3_bucket.client()
    objects = {
        key.removeprefix(prefix): client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
        for key in keys
    }
    assert sorted(objects) == sorted(files)
    assert objects == files
    assert summary["objects"] == len(files) == on_disk["files"]
    assert summary["bytes"] == sum(len(data) for data in files.values())
    for count in ("tags", "manifests", "blobs", "blob_bytes"):
        assert summary[count] == on_disk[count], count

    config = tmp_path / "gc.yml"
    config.write_text(target(s3_bucket).registry_config())
    proc = subprocess.run(
        [registry_bin(registry_version), "garbage-collect", "--dry-run", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=registry_env(),
    )
    dry = parse_gc_output(proc.stdout + proc.stderr, proc.returncode)
    assert dry.ok, dry.output
    assert dry.eligible == set() and dry.blobs_eligible == 0, dry.output
    assert dry.marked == on_disk["blobs"]
    assert s3_bucket.keys() == keys, "a dry run changed the bucket"


def test_refuses_a_bucket_holding_a_tree_or_missing(s3_bucket: S3Bucket) -> None:
    tiny = Params(repositories=1, tags=1, bases=1, min_size=1, max_size=8)
    generate_s3(target(s3_bucket), tiny, jobs=1)
    before = s3_bucket.keys()

    with pytest.raises(SystemExit, match="holds objects already"):
        generate_s3(target(s3_bucket), tiny, jobs=1)
    with pytest.raises(SystemExit, match="does not exist"):
        generate_s3(target(s3_bucket, "rt-no-such-bucket"), tiny, jobs=1)

    assert s3_bucket.keys() == before
