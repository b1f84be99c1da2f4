"""A registry's storage tree in a bucket, for tests: what tests/harness/tree.py and gc.py do for
a directory, done on an S3 bucket (tests/harness/s3.py) with boto3 and the registry's own GC.

- keys: ``repository_prefix``, ``tag_prefix``, ``revision_prefix``, ``layer_link_key`` (and
  ``s3.tag_link_key`` / ``s3.blob_data_key``), ``read_object``, ``write_object``,
  ``last_modified`` (the object's LastModified as the listing gives it);
- ``copy_bucket``: a server-side copy (CopyObject) of every key into another bucket, to change
  and garbage-collect while the registry keeps running on the original;
- ``delete_prefix``: delete every key under a "directory" (what ``shutil.rmtree`` does on disk);
- ``data_bytes``: the bytes of every blob's ``data`` object (what the GC's sweep frees);
- ``gc_on_bucket``: ``registry garbage-collect [--dry-run]`` of 2.8.2 or 3.1.1 run as a host
  process (the binaries of tests/harness/gc.py) on a bucket, parsed like gc.py's;
- pushes with real clients to a registry on a bucket: ``push_oci_image_to_s3``,
  ``push_oci_index_to_s3`` (skopeo), ``push_docker_image_to_s3`` (docker build + push),
  ``tag_alias_on_s3`` (skopeo registry to registry), each checking the tag's link object;
- ``next_second``: wait for the next whole second, so that objects written after it have a
  later LastModified than those written before (RGW's GetObject/HeadObject say it in whole
  seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from retentiond.storage.s3_settings import S3Settings
from tests.harness.gc import GcResult, parse_gc_output, registry_bin
from tests.harness.images import build_docker_image, make_oci_image, make_oci_index
from tests.harness.proc import docker, skopeo
from tests.harness.registry import RunningRegistry
from tests.harness.s3 import (
    SKOPEO_TLS,
    V2_PREFIX,
    S3Bucket,
    blob_data_key,
    push_oci_to_s3,
    tag_link_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REPOSITORIES = f"{V2_PREFIX}repositories/"
BLOBS = f"{V2_PREFIX}blobs/"
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def s3_settings(bucket: S3Bucket) -> S3Settings:
    """The bucket as retentiond's ``registry.storage.s3`` would name it (the test server's
    endpoint from the host, plain HTTP, path style)."""
    return S3Settings(
        bucket=bucket.name,
        region=bucket.region,
        regionendpoint=bucket.endpoint,
        accesskey=bucket.access_key,
        secretkey=bucket.secret_key,
        secure=False,
        forcepathstyle=True,
    )


# -- keys ---------------------------------------------------------------------------------------


def _hex(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexdigest


def repository_prefix(repo: str) -> str:
    """The repository's "directory" (repositories nested below it are under it too, as on
    disk)."""
    return f"{REPOSITORIES}{repo}/"


def tag_prefix(repo: str, tag: str) -> str:
    """The tag's "directory": ``current/link`` and its ``index/`` of past revisions."""
    return f"{REPOSITORIES}{repo}/_manifests/tags/{tag}/"


def revision_prefix(repo: str, digest: str) -> str:
    """The revision link's "directory" (``.../_manifests/revisions/sha256/<hex>/``)."""
    return f"{REPOSITORIES}{repo}/_manifests/revisions/sha256/{_hex(digest)}/"


def layer_link_key(repo: str, digest: str) -> str:
    """The ``_layers`` link object of ``digest`` in ``repo``."""
    return f"{REPOSITORIES}{repo}/_layers/sha256/{_hex(digest)}/link"


def read_object(bucket: S3Bucket, key: str) -> bytes:
    return bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()


def write_object(bucket: S3Bucket, key: str, data: bytes) -> None:
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=data)


def object_exists(bucket: S3Bucket, key: str) -> bool:
    return key in bucket.keys(key)


def last_modified(bucket: S3Bucket, key: str) -> datetime:
    """The object's LastModified, from a listing (ListObjectsV2; RGW gives milliseconds
    there, whole seconds in HeadObject's Last-Modified)."""
    page = bucket.client().list_objects_v2(Bucket=bucket.name, Prefix=key, MaxKeys=1)
    for obj in page.get("Contents", []):
        if obj.get("Key") == key and "LastModified" in obj:
            return obj["LastModified"]
    raise FileNotFoundError(f"s3://{bucket.name}/{key} does not exist")


def next_second() -> None:
    """Sleep into the next whole second (and a little): an object written after this has a
    later whole-second LastModified than one written before."""
    now = time.time()
    time.sleep(1.0 - (now % 1.0) + 0.05)


# -- whole-bucket operations --------------------------------------------------------------------


def _objects(bucket: S3Bucket, prefix: str = "") -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix`` (ListObjectsV2, all pages)."""
    found: list[tuple[str, int]] = []
    pages = bucket.client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket.name, Prefix=prefix):
        found += [(o["Key"], o.get("Size", 0)) for o in page.get("Contents", []) if "Key" in o]
    return found


def copy_bucket(src: S3Bucket, dst: S3Bucket) -> int:
    """Copy every object of ``src`` into ``dst`` (same keys; server-side CopyObject, the bytes
    never leave the server); return how many. ``dst`` should be empty (nothing is deleted)."""
    client = dst.client()
    keys = [key for key, _ in _objects(src)]
    for key in keys:
        client.copy_object(Bucket=dst.name, Key=key, CopySource={"Bucket": src.name, "Key": key})
    copied = dst.keys()
    if copied != sorted(keys):
        raise AssertionError(f"copying {src.name} into {dst.name}: {len(copied)} of {len(keys)}")
    return len(keys)


def delete_prefix(bucket: S3Bucket, prefix: str) -> int:
    """Delete every object under ``prefix`` (which must name a "directory": end with ``/``,
    below ``docker/registry/v2/``); return how many. Raises if there was none (rmtree of a
    missing directory fails too)."""
    if not prefix.endswith("/") or not prefix.startswith(V2_PREFIX) or prefix == V2_PREFIX:
        raise ValueError(f"refusing to delete under {prefix!r}: not a directory of the tree")
    keys: list[ObjectIdentifierTypeDef] = [{"Key": key} for key, _ in _objects(bucket, prefix)]
    if not keys:
        raise FileNotFoundError(f"s3://{bucket.name}/{prefix}: nothing to delete")
    client = bucket.client()
    for start in range(0, len(keys), 1000):
        done = client.delete_objects(
            Bucket=bucket.name, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
        )
        if done.get("Errors"):
            raise AssertionError(f"deleting under {prefix}: {done['Errors']}")
    return len(keys)


def blob_sizes(bucket: S3Bucket) -> dict[str, int]:
    """Every blob with a ``data`` object and that object's size, by digest."""
    sizes: dict[str, int] = {}
    for key, size in _objects(bucket, f"{BLOBS}sha256/"):
        parts = key[len(BLOBS) :].split("/")  # sha256/ab/<hex>/data
        if len(parts) == 4 and parts[3] == "data":
            sizes[f"sha256:{parts[2]}"] = size
    return sizes


def data_bytes(bucket: S3Bucket) -> int:
    """The bytes of every blob's ``data`` object."""
    return sum(blob_sizes(bucket).values())


# -- the registry's GC on a bucket ----------------------------------------------------------------


def gc_config_s3(bucket: S3Bucket) -> str:
    """A registry config (2.8 and 3.x read the same keys) whose storage is ``bucket`` on the
    host's endpoint; 3.x needs ``forcepathstyle`` against RGW, 2.8 ignores it."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        "  s3:\n"
        f"    bucket: {bucket.name}\n"
        f"    region: {bucket.region}\n"
        f"    regionendpoint: {bucket.endpoint}\n"
        f"    accesskey: {bucket.access_key}\n"
        f"    secretkey: {bucket.secret_key}\n"
        "    secure: false\n"
        "    v4auth: true\n"
        "    forcepathstyle: true\n"
        "  delete:\n    enabled: true\n"
    )


def gc_on_bucket(
    bucket: S3Bucket, *, version: str, dry_run: bool = True, timeout: float = 300.0
) -> GcResult:
    """``registry garbage-collect [--dry-run]`` of ``version`` on ``bucket``, as a host
    process (no container to start), never ``--delete-untagged``. Its environment has no
    ``AWS_*`` variable: this machine sets ``AWS_CA_BUNDLE`` to a bundle both versions fail
    on, and the keys come from the config only. Failures are returned, not raised."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with tempfile.TemporaryDirectory(prefix="retentiond-gc-s3-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(gc_config_s3(bucket))
        cmd = [registry_bin(version), "garbage-collect"]
        if dry_run:
            cmd.append("--dry-run")
        cmd.append(str(config))
        proc = subprocess.run(  # not proc.run: it adds this process's environment back
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    return parse_gc_output(proc.stdout + proc.stderr, proc.returncode)


# -- pushes with real clients -------------------------------------------------------------------


def stored_tag(bucket: S3Bucket, repo: str, tag: str) -> str:
    """The digest ``repo:tag``'s ``current/link`` object holds."""
    return read_object(bucket, tag_link_key(repo, tag)).decode()


def push_oci_image_to_s3(
    reg: RunningRegistry,
    bucket: S3Bucket,
    repo: str,
    tag: str,
    *,
    layers: Sequence[bytes],
    seed: str,
) -> str:
    """``images.push_oci_image`` for a registry on ``bucket``: skopeo pushes the computed
    image byte for byte; returns its digest (checked against the tag's link object)."""
    return push_oci_to_s3(reg, bucket, repo, tag, make_oci_image(layers, seed=seed))


def push_oci_index_to_s3(
    reg: RunningRegistry, bucket: S3Bucket, repo: str, tag: str, *, seed: str
) -> tuple[str, list[str]]:
    """``images.push_oci_index`` for a registry on ``bucket`` (two platforms, untagged
    children): (index digest, child digests)."""
    index = make_oci_index(seed=seed)
    push_oci_to_s3(reg, bucket, repo, tag, index)
    return index.digest, index.child_digests


def push_docker_image_to_s3(
    reg: RunningRegistry,
    bucket: S3Bucket,
    repo: str,
    tag: str,
    *,
    layers: list[bytes] | None = None,
    seed: str,
    base: str | None = None,
) -> str:
    """``images.push_docker_image`` for a registry on ``bucket``: ``docker build`` (cached by
    its inputs) and ``docker push``; returns the schema2 manifest digest as stored."""
    local = build_docker_image(layers or [f"seed {seed}\n".encode()], seed=seed, base=base)
    remote = reg.ref(repo, tag)
    docker("tag", local, remote)
    try:
        out = docker("push", remote, timeout=300).stdout
    finally:
        docker("rmi", remote, check=False)  # only the tag: the local cache name stays
    stored = stored_tag(bucket, repo, tag)
    match = _PUSHED_DIGEST.search(out)
    if match and match.group(1) != stored:
        raise AssertionError(f"docker push said {match.group(1)}, {repo}:{tag} is {stored}")
    return stored


def tag_alias_on_s3(
    reg: RunningRegistry, bucket: S3Bucket, repo: str, src_tag: str, new_tag: str
) -> str:
    """``images.tag_alias`` for a registry on ``bucket``: a second tag on the same digest."""
    skopeo(
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        *SKOPEO_TLS,
        f"docker://{reg.ref(repo, src_tag)}",
        f"docker://{reg.ref(repo, new_tag)}",
    )
    src, new = stored_tag(bucket, repo, src_tag), stored_tag(bucket, repo, new_tag)
    if src != new:
        raise AssertionError(f"alias {repo}:{new_tag} is {new}, {src_tag} is {src}")
    return new


__all__ = [
    "blob_data_key",
    "blob_sizes",
    "copy_bucket",
    "data_bytes",
    "delete_prefix",
    "gc_on_bucket",
    "last_modified",
    "layer_link_key",
    "next_second",
    "object_exists",
    "push_docker_image_to_s3",
    "push_oci_image_to_s3",
    "push_oci_index_to_s3",
    "read_object",
    "repository_prefix",
    "revision_prefix",
    "s3_settings",
    "stored_tag",
    "tag_alias_on_s3",
    "tag_link_key",
    "tag_prefix",
    "write_object",
]
