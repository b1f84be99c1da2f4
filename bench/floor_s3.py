"""The floor on S3: the plainest Python reading from a bucket what a plan needs, as
``bench/floor.py`` is on a filesystem. Until retentiond reads S3, the bound its plan can reach.

    python -m bench.floor_s3 --endpoint URL --bucket B [--rootdirectory R] [--threads 32]

(keys from ``$AWS_ACCESS_KEY_ID`` / ``$AWS_SECRET_ACCESS_KEY``.) What it reads, with
``--threads`` threads and no parsing:

- every key under ``repositories/`` (ListObjectsV2, 1,000 keys a page; one listing per
  top-level name, in parallel): the tags, their ``index/`` and the revision and ``_layers``
  links, whose keys name their digests (and ``LastModified`` is the push time), so a link
  object is never read;
- every key under ``blobs/`` (one listing per prefix ``00``..``ff``, in parallel);
- each tag's ``current/link`` (GET: the digest is its content only) and each manifest a
  revision link names (GET its blob's ``data``) once.

Prints the counts and the seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bench.generate_s3 import S3Target

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def list_keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", []) if "Key" in obj]
    return keys


def top_level(client: S3Client, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """The common prefixes (``name/``) and keys directly under ``prefix``."""
    prefixes: list[str] = []
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    ):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", []) if "Prefix" in p]
        keys += [obj["Key"] for obj in page.get("Contents", []) if "Key" in obj]
    return prefixes, keys


def floor(target: S3Target) -> dict[str, int]:
    v2 = f"{target.v2}/"
    client = target.client()

    def get(key: str) -> bytes:
        return client.get_object(Bucket=target.bucket, Key=key)["Body"].read()

    with ThreadPoolExecutor(target.threads) as pool:
        tops, _ = top_level(client, target.bucket, f"{v2}repositories/")
        blob_prefixes = [f"{v2}blobs/sha256/{n:02x}/" for n in range(256)]
        listed = pool.map(lambda p: list_keys(client, target.bucket, p), tops + blob_prefixes)
        repo_keys: list[str] = []
        blob_keys = 0
        for prefix, keys in zip(tops + blob_prefixes, listed, strict=True):
            if "/blobs/" in prefix:
                blob_keys += len(keys)
            else:
                repo_keys += keys
        tag_links = [k for k in repo_keys if k.endswith("/current/link")]
        manifests = {
            k.rsplit("/", 2)[1]
            for k in repo_keys
            if "/_manifests/revisions/sha256/" in k and k.endswith("/link")
        }
        data_keys = [f"{v2}blobs/sha256/{h[:2]}/{h}/data" for h in manifests]
        read = sum(len(b) for b in pool.map(get, tag_links + data_keys))
    return {
        "repository_keys": len(repo_keys),
        "blob_keys": blob_keys,
        "tags": len(tag_links),
        "manifests": len(manifests),
        "bytes_read": read,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--rootdirectory", default="")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args(argv)
    target = S3Target(
        endpoint=args.endpoint,
        bucket=args.bucket,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=args.region,
        rootdirectory=args.rootdirectory,
        threads=args.threads,
    )
    started = time.monotonic()
    counts = floor(target)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), f"{time.monotonic() - started:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
