"""A real S3 server for the tests: Ceph's RADOS Gateway, started by scripts/s3/start-rgw.sh
(one monitor, one in-memory OSD, radosgw; Debian's packages), and registry containers whose
storage is a bucket on it (the registry's own ``s3`` driver).

The gateway listens on 127.0.0.1 (for boto3 and retentiond on the host) and on the Docker
bridge's gateway address (for registry containers: dockerd runs with ``--iptables=false``, so
a container reaches the host only there). The Ceph daemons themselves stay on loopback.

- ``start_s3`` / ``stop_s3``: one server (conftest starts one per test session).
- ``create_bucket`` / ``delete_bucket``: a fresh bucket (``S3Bucket``: endpoint, keys, name,
  region, and a boto3 client).
- ``registry_s3_env`` / ``start_s3_registry``: a registry container (2.8.2 or 3.1.1) on a
  bucket, configured through ``REGISTRY_STORAGE_*`` environment variables, which apply to
  ``docker exec registry garbage-collect CONFIG`` in that container too.
- ``push_oci_to_s3``: ``images.push_oci`` for such a registry (checks the tag's link object).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.harness.images import OciImage, OciIndex, write_oci_layout
from tests.harness.proc import CommandError, run, skopeo
from tests.harness.redis import bridge_gateway
from tests.harness.registry import RunningRegistry, start_registry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "s3"
START_SCRIPT = SCRIPTS / "start-rgw.sh"
STOP_SCRIPT = SCRIPTS / "stop-rgw.sh"
#: The registry's storage tree inside a bucket (below ``rootdirectory``, empty here).
V2_PREFIX = "docker/registry/v2/"
#: The commands start-rgw.sh needs (Debian packages radosgw, ceph-mon, ceph-osd).
RGW_COMMANDS = ("radosgw", "radosgw-admin", "ceph-mon", "ceph-osd", "monmaptool", "ceph")
#: Plain HTTP to the test registries.
SKOPEO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


@dataclass(frozen=True)
class RunningS3:
    """An S3 server started by start-rgw.sh in ``directory``. ``endpoint`` is for clients on
    the host, ``container_endpoint`` for containers on Docker's default bridge."""

    directory: Path
    port: int
    gateway: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def container_endpoint(self) -> str:
        return f"http://{self.gateway}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    def client(self) -> S3Client:
        """A boto3 S3 client on ``endpoint`` (path-style addressing: the gateway has no DNS
        name for virtual-host buckets). boto3 is imported here, not at module level: every
        pytest session imports this module through conftest, few use S3."""
        import boto3
        from botocore.config import Config

        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )
        return client


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on a RunningS3, with everything a registry or retentiond needs to use it."""

    server: RunningS3
    name: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def container_endpoint(self) -> str:
        return self.server.container_endpoint

    @property
    def access_key(self) -> str:
        return self.server.access_key

    @property
    def secret_key(self) -> str:
        return self.server.secret_key

    @property
    def region(self) -> str:
        return self.server.region

    def client(self) -> S3Client:
        return self.server.client()

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, sorted (ListObjectsV2, all pages)."""
        found: list[str] = []
        pages = self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.name, Prefix=prefix):
            found += [obj["Key"] for obj in page.get("Contents", []) if "Key" in obj]
        return sorted(found)

    def mtimes(self, prefix: str = "") -> dict[str, float]:
        """Every object key under ``prefix`` and its LastModified (seconds)."""
        found: dict[str, float] = {}
        pages = self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.name, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = obj["LastModified"].timestamp()
        return found


def rgw_missing() -> list[str]:
    """The commands start-rgw.sh needs that are not installed."""
    return [cmd for cmd in RGW_COMMANDS if shutil.which(cmd) is None]


def _parse_env(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {key: value for key, _, value in pairs}


def start_s3(
    directory: Path,
    *,
    port: int | None = None,
    owner_pid: int | None = None,
    timeout: float = 180.0,
) -> RunningS3:
    """Start a gateway in ``directory`` with scripts/s3/start-rgw.sh, on ``port`` or a random
    one (it also takes the 10 ports above it; a taken port is retried elsewhere), bound to
    127.0.0.1 and the Docker bridge's gateway. With ``owner_pid`` the script leaves a watcher
    that stops (and purges) the server once that process is gone, even after a SIGKILL. The
    script installs the packages if missing (root only; about 15 s more)."""
    gateway = bridge_gateway()
    env = {"RGW_BIND": f"127.0.0.1 {gateway}"}
    if owner_pid is not None:
        env["RGW_OWNER_PID"] = str(owner_pid)
    attempts = 1 if port is not None else 3
    last: CommandError | None = None
    for _ in range(attempts):
        # below the kernel's ephemeral range (32768-60999), where outgoing connections land
        chosen = port or random.randrange(20000, 32000, 11)
        try:
            res = run(["bash", str(START_SCRIPT), str(directory), str(chosen)], env=env,
                      timeout=timeout)  # fmt: skip
        except CommandError as exc:
            last = exc
            if "in use already" in exc.stderr:
                continue
            raise
        values = _parse_env(res.stdout)
        return RunningS3(
            directory=directory,
            port=chosen,
            gateway=gateway,
            access_key=values["AWS_ACCESS_KEY_ID"],
            secret_key=values["AWS_SECRET_ACCESS_KEY"],
            region=values.get("AWS_REGION", "us-east-1"),
        )
    assert last is not None
    raise last


def stop_s3(server: RunningS3, *, purge: bool = False) -> None:
    """Stop the gateway's daemons (stop-rgw.sh: only those started in its directory); with
    ``purge`` also delete its files. Raises if a daemon would not stop."""
    args = ["bash", str(STOP_SCRIPT), str(server.directory)]
    run([*args, "--purge"] if purge else args, timeout=60)


def create_bucket(server: RunningS3, name: str | None = None) -> S3Bucket:
    """A new, empty bucket (a unique name unless ``name`` is given)."""
    bucket = S3Bucket(server=server, name=name or f"rt-{uuid.uuid4().hex[:16]}")
    server.client().create_bucket(Bucket=bucket.name)
    return bucket


def delete_bucket(bucket: S3Bucket) -> None:
    """Delete every object of the bucket (the in-memory OSD holds them in RAM), then the
    bucket. Missing buckets are fine."""
    client = bucket.client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
        for page in pages:
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": obj["Key"]} for obj in page.get("Contents", []) if "Key" in obj
            ]
            if keys:
                client.delete_objects(Bucket=bucket.name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket.name)
    except client.exceptions.NoSuchBucket:
        pass


def registry_s3_env(bucket: S3Bucket, *, rootdirectory: str = "") -> dict[str, str]:
    """Environment that puts a registry (2.8.2 or 3.1.1) on ``bucket``: the ``s3`` driver
    instead of the image's ``filesystem`` (``REGISTRY_STORAGE=s3`` replaces the storage
    section's driver), plain HTTP to the container endpoint, SigV4, path-style requests
    (3.x's ``forcepathstyle``, default false there; 2.8 always uses path style with a
    ``regionendpoint`` and ignores the key). ``AWS_CA_BUNDLE`` must not reach the registry:
    this machine sets it to a host path the images do not have, and both versions then panic
    at start (``LoadCustomCABundleError: failed to open custom CA bundle PEM file``); docker
    run passes only what is listed here, so it never does."""
    env = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": bucket.container_endpoint,
        "REGISTRY_STORAGE_S3_REGION": bucket.region,
        "REGISTRY_STORAGE_S3_BUCKET": bucket.name,
        "REGISTRY_STORAGE_S3_ACCESSKEY": bucket.access_key,
        "REGISTRY_STORAGE_S3_SECRETKEY": bucket.secret_key,
        "REGISTRY_STORAGE_S3_SECURE": "false",
        "REGISTRY_STORAGE_S3_V4AUTH": "true",
        "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
    }
    if rootdirectory:
        env["REGISTRY_STORAGE_S3_ROOTDIRECTORY"] = rootdirectory
    return env


def start_s3_registry(
    bucket: S3Bucket,
    root: Path,
    *,
    version: str,
    env: dict[str, str] | None = None,
    rootdirectory: str = "",
) -> RunningRegistry:
    """A registry container of ``version`` storing into ``bucket`` (which must exist: the
    driver does not create it). ``root`` is still mounted at /var/lib/registry (start_registry
    always mounts one) and stays empty. ``env`` adds to the storage settings."""
    settings = registry_s3_env(bucket, rootdirectory=rootdirectory) | dict(env or {})
    return start_registry(root, env=settings, version=version)


def tag_link_key(repo: str, tag: str, rootdirectory: str = "") -> str:
    """The object holding ``repo:tag``'s digest (the registry's ``current/link``)."""
    prefix = f"{rootdirectory.strip('/')}/" if rootdirectory.strip("/") else ""
    return f"{prefix}{V2_PREFIX}repositories/{repo}/_manifests/tags/{tag}/current/link"


def blob_data_key(digest: str, rootdirectory: str = "") -> str:
    """The object holding a blob's bytes."""
    prefix = f"{rootdirectory.strip('/')}/" if rootdirectory.strip("/") else ""
    hexdigest = digest.removeprefix("sha256:")
    return f"{prefix}{V2_PREFIX}blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"


def push_oci_to_s3(
    reg: RunningRegistry,
    bucket: S3Bucket,
    repo: str,
    tag: str,
    obj: OciImage | OciIndex,
    *,
    rootdirectory: str = "",
) -> str:
    """``images.push_oci`` for a registry on S3: skopeo pushes the computed image or index
    byte for byte; the tag's ``current/link`` object in the bucket (below the registry's
    ``rootdirectory``) must then name it."""
    with tempfile.TemporaryDirectory(prefix="retentiond-oci-") as tmp:
        write_oci_layout(Path(tmp), tag, obj)
        args = ["copy", "--quiet", "--preserve-digests", *SKOPEO_TLS]
        if isinstance(obj, OciIndex):
            args.append("--all")
        skopeo(*args, f"oci:{tmp}:{tag}", f"docker://{reg.ref(repo, tag)}")
    link = bucket.client().get_object(
        Bucket=bucket.name, Key=tag_link_key(repo, tag, rootdirectory)
    )
    stored = link["Body"].read().decode()
    if stored != obj.digest:
        raise AssertionError(f"{repo}:{tag} stored as {stored} in the bucket, pushed {obj.digest}")
    return obj.digest
