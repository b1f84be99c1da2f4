"""``registry.config_file``: retentiond reads the storage and redis of the very config.yml a real
registry (2.8.2 and 3.1.1) runs with, an ``s3`` driver on a bucket of the session's Ceph RADOS
Gateway and a password-protected redis as its blob descriptor cache, each file in its version's
vocabulary (2.8: ``redis.addr``; 3.x: ``redis.addrs``). The registry starts on it and serves a
push and a pull; ``retentiond check`` names that bucket and prefix without printing a secret; a
boto3 client built from the parsed settings finds the pushed tag where the registry wrote it;
redis answers retentiond with the password and database read from the registry's file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from retentiond.cache import RedisCache
from retentiond.config import CacheKind, load_config
from retentiond.runtime.discovery import V2_CONFIG, V3_CONFIG
from retentiond.storage.s3_settings import S3Settings
from tests.harness.images import make_oci_image, pull_ok
from tests.harness.proc import docker, run
from tests.harness.redis import REDIS_CLI, RunningRedis
from tests.harness.registry import (
    LABEL,
    RunningRegistry,
    free_port,
    registry_image,
    stop_registry,
    wait_ready,
)
from tests.harness.s3 import S3Bucket, push_oci_to_s3, tag_link_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.both_registries

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_PASSWORD = "redis p@ss/word"
REDIS_DB = 3
POLICY = "policies:\n  - {name: ci, repositories: ['ci/**'], keep: {last: 3}}\n"


def registry_config(version: str, bucket: S3Bucket, redis: RunningRedis) -> str:
    """The registry's config.yml, as an operator writes it for ``version``: booleans as
    strings (as REGISTRY_STORAGE_S3_* would give them), a rootdirectory with slashes."""
    server = f"  addr: {redis.addr}\n" if version.startswith("2.") else f"  addrs: [{redis.addr}]\n"
    return (
        "version: 0.1\n"
        "log: {level: info, fields: {service: registry}}\n"
        "storage:\n"
        "  s3:\n"
        f"    regionendpoint: {bucket.container_endpoint}\n"
        f"    region: {bucket.region}\n"
        f"    bucket: {bucket.name}\n"
        f"    accesskey: {bucket.access_key}\n"
        f"    secretkey: {bucket.secret_key}\n"
        "    rootdirectory: /prod/\n"
        '    secure: "false"\n'
        '    v4auth: "true"\n'
        '    forcepathstyle: "true"\n'  # 3.x needs it against RGW; 2.8 does not read it
        "    chunksize: 5242880\n"
        "  cache: {blobdescriptor: redis}\n"
        "  delete: {enabled: true}\n"
        "  maintenance: {uploadpurging: {enabled: false}}\n"
        "http: {addr: ':5000'}\n"
        "redis:\n"
        f"{server}"
        f'  password: "{REDIS_PASSWORD}"\n'
        f"  db: {REDIS_DB}\n"
    )


@pytest.fixture
def protected_redis(redis: RunningRedis) -> RunningRedis:
    """The session's kind of redis, with a password."""
    redis.cli("CONFIG", "SET", "requirepass", REDIS_PASSWORD)
    return redis


@pytest.fixture
def configured(
    docker_ready: None,
    registry_version: str,
    s3_bucket: S3Bucket,
    protected_redis: RunningRedis,
    tmp_path: Path,
) -> Iterator[tuple[RunningRegistry, Path]]:
    """A registry container of ``registry_version`` started on its own config.yml (mounted at
    its version's default path, the image's command unchanged); yields it and the file."""
    path = tmp_path / "registry" / "config.yml"
    path.parent.mkdir()
    path.write_text(registry_config(registry_version, s3_bucket, protected_redis))
    inside = V2_CONFIG if registry_version.startswith("2.") else V3_CONFIG
    reg = RunningRegistry(
        name=f"retentiond-test-{uuid.uuid4().hex[:12]}",
        root=tmp_path / "unused",
        port=free_port(),
        image=registry_image(registry_version),
        version=registry_version,
    )
    try:
        # only what is listed reaches the container: never AWS_CA_BUNDLE (the registry panics)
        docker(
            *("run", "-d", "--name", reg.name, "--label", LABEL),
            *("-p", f"127.0.0.1:{reg.port}:5000", "-v", f"{path}:{inside}:ro"),
            reg.image,
        )
        wait_ready(reg)
        yield reg, path
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ---\n{(logs.stdout + logs.stderr).strip()}")
        stop_registry(reg)


def write_config(tmp_path: Path, reg: RunningRegistry) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies/ci.yaml").write_text(POLICY)
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        f"registry:\n  config_file: registry/config.yml\n  url: {reg.url}\n"
        f"runtime: {{kind: none}}\npolicies: [policies/]\nstate_dir: {tmp_path / 'state'}\n"
    )
    return config


def s3_client(settings: S3Settings) -> S3Client:
    """A boto3 client made from nothing but the parsed settings (path style: the gateway has
    no DNS name per bucket)."""
    import boto3
    from botocore.config import Config

    client: S3Client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.accesskey,
        aws_secret_access_key=settings.secretkey,
        region_name=settings.region,
        config=Config(s3={"addressing_style": "path" if settings.forcepathstyle else "auto"}),
    )
    return client


def test_check_reads_the_storage_and_redis_the_registry_runs_with(
    configured: tuple[RunningRegistry, Path],
    s3_bucket: S3Bucket,
    protected_redis: RunningRedis,
    tmp_path: Path,
) -> None:
    reg, registry_file = configured
    image = make_oci_image([b"config file layer"], seed="config-file")
    push_oci_to_s3(reg, s3_bucket, "ci/app", "v1", image, rootdirectory="prod")
    assert pull_ok(reg, "ci/app", "v1")
    config = write_config(tmp_path, reg)

    env = {k: v for k, v in os.environ.items() if k != "RETENTIOND_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), "check"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env=env,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ok: config {config}, 1 policy in 1 file",
        f"storage: s3 bucket {s3_bucket.name} at {s3_bucket.container_endpoint}, rootdirectory"
        f" /prod (from {registry_file})",
    ]
    assert result.stderr == ""
    for secret in (s3_bucket.secret_key, REDIS_PASSWORD, "p%40ss"):
        assert secret not in result.stdout + result.stderr

    registry = load_config(config).registry
    settings = registry.s3
    assert settings is not None and registry.config_file == registry_file
    assert (settings.rootdirectory, settings.secure, settings.forcepathstyle) == (
        "prod",
        False,
        True,
    )
    # the tag is where the parsed settings say, read with a client made from them alone
    key = settings.key(tag_link_key("ci/app", "v1"))
    assert key == tag_link_key("ci/app", "v1", "prod")
    link = s3_client(settings).get_object(Bucket=settings.bucket, Key=key)
    assert link["Body"].read().decode() == image.digest

    # the cache: redis at the address, password and database of the registry's file
    assert registry.cache is CacheKind.REDIS and registry.redis_url is not None
    RedisCache(registry.redis_url).check()
    cached = run(
        [
            *(REDIS_CLI, "-h", protected_redis.host, "-p", str(protected_redis.port)),
            *("-a", REDIS_PASSWORD, "--no-auth-warning", "-n", str(REDIS_DB), "--scan"),
        ]
    ).stdout.split()
    assert any(name.startswith("blobs::sha256:") for name in cached), cached
