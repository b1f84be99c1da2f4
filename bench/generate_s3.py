"""Generate the tree ``bench.generate`` writes straight into an S3 bucket, without a copy on disk.

    python -m bench.generate_s3 --endpoint http://127.0.0.1:7480 --bucket bench \\
        --repositories 500 --tags 100 --min-size 1 --max-size 64 --progress

The same generator (``bench.generate.build``), the same options and seed, so the same bytes: the
object ``<rootdirectory>/docker/registry/v2/<path>`` holds what ``bench.generate`` writes to
``<root>/docker/registry/v2/<path>``, for every file, and nothing else (directories are not
objects; ``retentiond-bench.json`` stays out of the bucket, the summary is printed). Objects
are PUT by ``--jobs`` processes (one per 8 repositories at a time, as on disk), each with a
boto3 client and ``--threads`` threads, at most ``2 x --threads`` PUTs pending per process.

Push times: an object's ``LastModified`` is set by the server when it is stored and cannot be
given, so on S3 every tag, manifest and blob looks pushed at its upload time (the filesystem
tree spreads them over ``--months``). Policies that count (``keep: {last: N}``) keep as many
tags, though not always the same ones (the upload order within a repository follows the push
times, but PUTs finish out of order and ``LastModified`` has a resolution of a millisecond at
best); policies on age see every tag as just pushed, and untagged manifests are younger than
``safety.untagged_min_age`` until that much time has passed.

Keep blobs small (``--min-size 1 --max-size 64``; layers are still wrapped in a tar header of
1.5 KiB unless ``--raw-layers``): the test server's in-memory OSD holds about twice the stored
bytes in RAM. The bucket must exist and hold nothing under the prefix yet. Keys default to
``$AWS_ACCESS_KEY_ID`` / ``$AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.generate import Params, Sink, add_tree_options, build, pop_params, summary_of

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

V2 = "docker/registry/v2"


@dataclass(frozen=True)
class S3Target:
    """A bucket and the prefix of the tree in it; called, it makes a :class:`S3Sink` (in each
    process that writes: it is pickled to the workers, a boto3 client is not)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    rootdirectory: str = ""
    threads: int = 16

    @property
    def v2(self) -> str:
        """The key prefix of ``docker/registry/v2`` (the registry strips the rootdirectory's
        slashes)."""
        root = self.rootdirectory.strip("/")
        return f"{root}/{V2}" if root else V2

    def client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=self.threads,
                # no CRC32 trailer on every PUT: only what the operation requires (MD5 here)
                request_checksum_calculation="when_required",
            ),
        )
        return client

    def __call__(self) -> Sink:
        return S3Sink(self)

    def storage_section(self, indent: str) -> str:
        """The registry's ``storage.s3`` keys for this bucket (YAML lines, each indented):
        plain HTTP, SigV4, path-style requests (3.x needs ``forcepathstyle`` on a gateway
        without DNS names for buckets). The same keys are retentiond's ``registry.storage.s3``.
        """
        keys = {
            "bucket": self.bucket,
            "region": self.region,
            "regionendpoint": self.endpoint,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "secure": "false",
            "v4auth": "true",
            "forcepathstyle": "true",
        }
        if self.rootdirectory:
            keys["rootdirectory"] = self.rootdirectory
        return "".join(f"{indent}{key}: {value}\n" for key, value in keys.items())

    def registry_config(self) -> str:
        """A registry config.yml (2.8 and 3.x) storing into this bucket, for its
        ``garbage-collect``. Run the registry without ``AWS_CA_BUNDLE`` in its environment
        (see :func:`registry_env`)."""
        return (
            "version: 0.1\nlog:\n  level: error\nstorage:\n  s3:\n"
            + self.storage_section("    ")
            + "  delete:\n    enabled: true\n"
        )


def registry_env() -> dict[str, str]:
    """This environment without ``AWS_*``: the registry takes its keys from its config, and
    ``AWS_CA_BUNDLE`` (set on these machines to a bundle it cannot use) makes it panic at
    start (``LoadCustomCABundleError``)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


class S3Sink:
    """PUTs every file as an object, from a pool of threads; directories and mtimes are
    dropped (S3 has neither)."""

    def __init__(self, target: S3Target) -> None:
        self.bucket = target.bucket
        self.client = target.client()
        self.pool = ThreadPoolExecutor(target.threads, thread_name_prefix="put")
        self.slots = threading.BoundedSemaphore(2 * target.threads)
        self.pending: list[Future[None]] = []

    def mkdir(self, path: str) -> None:
        pass

    def touch(self, path: str, mtime: float) -> None:
        pass

    def file(self, path: str, data: bytes, mtime: float | None) -> None:
        self.slots.acquire()
        try:
            future = self.pool.submit(self._put, path, data)
        except BaseException:
            self.slots.release()
            raise
        self.pending.append(future)

    def _put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/octet-stream"
            )
        finally:
            self.slots.release()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        errors = [exc for future in pending if (exc := future.exception()) is not None]
        if errors:
            raise RuntimeError(
                f"{len(errors)} of {len(pending)} PUTs into bucket {self.bucket} failed, "
                f"the first: {errors[0]!r}"
            ) from errors[0]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def check_empty(target: S3Target) -> None:
    """Refuse a bucket that is missing or already holds a tree under the prefix."""
    client = target.client()
    try:
        found = client.list_objects_v2(Bucket=target.bucket, Prefix=f"{target.v2}/", MaxKeys=1)
    except client.exceptions.NoSuchBucket:
        raise SystemExit(
            f"bucket {target.bucket} does not exist on {target.endpoint}; create it first"
        ) from None
    if found.get("KeyCount", 0):
        raise SystemExit(
            f"s3://{target.bucket}/{target.v2}/ holds objects already; "
            "generate into an empty bucket or another --rootdirectory"
        )


def generate_s3(
    target: S3Target, params: Params, jobs: int = 2, progress: bool = False
) -> dict[str, Any]:
    """PUT the tree of ``params`` under ``target``; returns the summary (with the objects, their
    bytes and the upload rate)."""
    check_empty(target)
    started = time.monotonic()
    total = build(target.v2, params, target, jobs, progress)
    seconds = time.monotonic() - started
    summary = summary_of(params, total, seconds, jobs)
    del summary["files"], summary["directories"]
    summary |= {
        "endpoint": target.endpoint,
        "bucket": target.bucket,
        "prefix": f"{target.v2}/",
        "objects": total.files,
        "bytes": total.file_bytes,
        "objects_per_second": round(total.files / seconds) if seconds else None,
        "mib_per_second": round(total.file_bytes / seconds / 2**20, 2) if seconds else None,
        "threads": target.threads,
        "push_times": "LastModified is the upload time (S3 cannot set it)",
    }
    return summary


def parse_args(argv: list[str] | None = None) -> tuple[S3Target, Params, int, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="the S3 endpoint URL")
    parser.add_argument("--bucket", required=True, help="an existing bucket")
    parser.add_argument("--rootdirectory", default="", help="the registry's s3 rootdirectory")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    parser.add_argument("--threads", type=int, default=16, help="PUT threads per process")
    add_tree_options(parser)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--progress", action="store_true", help="a progress line on stderr")
    args = vars(parser.parse_args(argv))
    params = pop_params(args)
    if not args["access_key"] or not args["secret_key"]:
        parser.error("give --access-key and --secret-key (or AWS_ACCESS_KEY_ID/_SECRET_ACCESS_KEY)")
    target = S3Target(
        endpoint=args["endpoint"],
        bucket=args["bucket"],
        access_key=args["access_key"],
        secret_key=args["secret_key"],
        region=args["region"],
        rootdirectory=args["rootdirectory"],
        threads=args["threads"],
    )
    return target, params, args["jobs"], args["progress"]


def main(argv: list[str] | None = None) -> int:
    target, params, jobs, progress = parse_args(argv)
    summary = generate_s3(target, params, jobs, progress)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
