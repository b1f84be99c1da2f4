"""The registry's redis blob descriptor cache after a GC, with a real redis-server and a real
registry 2.8 container using it (``storage.cache.blobdescriptor: redis``).

A restart does not clear redis: unless retentiond deletes the entries of the blobs the GC
deleted, a re-push of a collected image skips its blobs ("already exists") and then fails to
pull. These tests fill the cache with real pushes and pulls and check what a user would.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retentiond.cache import CHUNK, RedisCache
from retentiond.core.blob_table import BlobTable
from retentiond.errors import RegistryError
from tests.harness.gc import gc_run
from tests.harness.images import OciImage, make_oci_image, pull_error, pull_ok, push_oci
from tests.harness.redis import RunningRedis
from tests.harness.registry import (
    RunningRegistry,
    free_port,
    restart_registry,
    start_registry,
    stop_registry,
)
from tests.harness.tree import blob_exists, repo_dir, set_pushed_at

REPO_ROOT = Path(__file__).resolve().parents[2]

SHARED = b"a layer both images hold" * 100
KEPT = make_oci_image([SHARED, b"the kept image's own layer" * 100], seed="kept")
OLD = make_oci_image([SHARED, b"the deleted image's own layer" * 100], seed="old")
#: what a GC deletes once OLD is untagged: its manifest, config and own layer
GONE = OLD.blob_digests - KEPT.blob_digests


@pytest.fixture
def cached_registry(redis: RunningRedis, tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry container whose blob descriptor cache is ``redis`` (2.8's
    ``storage.cache.blobdescriptor`` and ``redis.addr``, set through its environment)."""
    env = {"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis", "REGISTRY_REDIS_ADDR": redis.addr}
    reg = start_registry(tmp_path / "registry", env=env)
    try:
        yield reg
    finally:
        stop_registry(reg)


def push_and_pull(reg: RunningRegistry, repo: str, tag: str, image: OciImage) -> None:
    push_oci(reg, repo, tag, image)
    assert pull_ok(reg, repo, tag)


def cached(redis: RunningRedis, repo: str, digests: set[str]) -> set[str]:
    """The keys redis holds for ``digests``: global and in ``repo``."""
    keys = {f"blobs::{d}" for d in digests} | {f"repository::{repo}::blobs::{d}" for d in digests}
    return keys & redis.keys()


# --------------------------------------------------------------------------------------------
# forget, against what the registry itself cached


def test_forget_deletes_exactly_the_gone_entries(
    redis: RunningRedis, cached_registry: RunningRegistry
) -> None:
    push_and_pull(cached_registry, "team/kept", "v1", KEPT)
    push_and_pull(cached_registry, "team/old", "v1", OLD)
    push_and_pull(cached_registry, "team/kept", "old", OLD)  # OLD's blobs in two repositories
    before = redis.keys()
    assert {f"blobs::{d}" for d in GONE} <= before
    old_layer = set(OLD.layer_digests) & GONE
    assert old_layer and old_layer <= redis.members("repository::team/old::blobs")
    kept_members = redis.members("repository::team/kept::blobs")
    old_members = redis.members("repository::team/old::blobs")
    others = [f"other/r{i}" for i in range(300)]  # repositories with nothing cached
    never_cached = {f"sha256:{i:064x}" for i in range(3 * CHUNK)}
    gone = GONE | never_cached

    redis.reset_stats()
    sent = RedisCache(redis.url).forget(
        BlobTable.from_items((d, 0) for d in gone), ["team/kept", "team/old", *others]
    )
    commands = redis.commands()

    deleted = {f"blobs::{d}" for d in GONE}
    for repo in ("team/kept", "team/old"):
        deleted |= {f"repository::{repo}::blobs::{d}" for d in GONE}
    assert redis.keys() == before - deleted
    assert redis.members("repository::team/kept::blobs") == kept_members - GONE
    assert redis.members("repository::team/old::blobs") == old_members - GONE
    # a DEL per CHUNK digests, an SMEMBERS per repository, and a DEL and an SREM per
    # repository holding gone members: nothing per repository and digest
    chunks = math.ceil(len(gone) / CHUNK)
    assert commands == {"del": chunks + 2, "smembers": 2 + len(others), "srem": 2}
    assert sent == chunks + 2 + len(others) + 2 * 2


def test_a_removed_repository_forgotten_whole_takes_a_repush_for_real(
    redis: RunningRedis, cached_registry: RunningRegistry
) -> None:
    """A repository removed whole loses the ``_layers`` links of blobs other repositories
    keep: with its cache entries left, a re-push into it skips those blobs (no link made) and
    pulls only while redis remembers. Forgotten whole, the re-push uploads them again, and the
    image pulls from the same registry without the cache."""
    push_and_pull(cached_registry, "team/kept", "v1", KEPT)
    push_and_pull(cached_registry, "team/gone", "v1", OLD)
    shutil.rmtree(repo_dir(cached_registry.root, "team/gone"))
    assert gc_run(cached_registry.root).eligible == GONE

    cache = RedisCache(redis.url)
    cache.forget(GONE, ["team/kept"])
    cache.forget_repositories(["team/gone"])

    assert not any(key.startswith("repository::team/gone::") for key in redis.keys(db=0))
    push_oci(cached_registry, "team/gone", "v1", OLD)
    restart_registry(cached_registry, env={})  # no cache: storage alone answers
    assert pull_error(cached_registry, "team/gone", "v1") is None


def test_forget_logs_in_with_the_password_in_the_url(redis: RunningRedis) -> None:
    digest = "sha256:" + "ab" * 32
    redis.cli("HSET", f"blobs::{digest}", "size", "1")
    redis.cli("CONFIG", "SET", "requirepass", "s3cret")
    with pytest.raises(RegistryError, match=r"NOAUTH.*redis://:PASSWORD@host:port/db"):
        RedisCache(redis.url).forget({digest}, [])
    RedisCache(f"redis://:s3cret@{redis.addr}/0").forget({digest}, [])
    RedisCache(f"redis://:s3cret@{redis.addr}/0").check()
    redis.cli("-a", "s3cret", "--no-auth-warning", "CONFIG", "SET", "requirepass", "")
    assert redis.keys() == set()


def test_forget_over_a_unix_socket_in_another_database(redis: RunningRedis) -> None:
    """``registry.redis_url`` may be ``unix://PATH?db=N``: forget speaks it too."""
    digest = "sha256:" + "ab" * 32
    redis.cli("HSET", f"blobs::{digest}", "size", "1", db=3)
    redis.cli("SADD", "repository::app::blobs", digest, "sha256:" + "cd" * 32, db=3)
    redis.cli("HSET", f"repository::app::blobs::{digest}", "mediatype", "x", db=3)
    redis.cli("HSET", f"blobs::{digest}", "size", "1")  # database 0: not the cache's

    RedisCache(f"unix://{redis.socket}?db=3").forget({digest}, ["app"])

    assert redis.keys(db=3) == {"repository::app::blobs"}
    assert redis.keys() == {f"blobs::{digest}"}


def test_a_redis_that_does_not_answer_names_the_setting() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(
        RegistryError, match=r"at redis://127\.0\.0\.1:\d+/0: .*registry\.redis_url"
    ):
        RedisCache(nobody).forget({"sha256:" + "a" * 64}, ["app"])
    with pytest.raises(RegistryError, match=r"registry\.redis_url"):
        RedisCache(nobody).check()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with pytest.raises(RegistryError, match=r"timed out; .*registry\.redis_url"):
            RedisCache(url, timeout=0.5).forget({"sha256:" + "a" * 64}, ["app"])


# --------------------------------------------------------------------------------------------
# `retentiond apply`, as an operator runs it


KEEP_LATEST = """\
policies:
  - name: app
    repositories: [app]
    keep: {tags: [latest]}
"""


def write_config(
    tmp_path: Path, reg: RunningRegistry, cache: str, redis_url: str, policy: str = KEEP_LATEST
) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(policy)
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        registry:
          root: {reg.root}
          url: {reg.url}
          cache: {cache}
          redis_url: {redis_url}
        runtime:
          kind: docker
          container: {reg.name}
          gc_mode: readonly
        policies: [policies/]
        state_dir: {tmp_path / "state"}
        log:
          format: json
        """)
    )
    return config


def apply(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), "apply", "--yes"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ},
    )


def seed(reg: RunningRegistry, redis: RunningRedis) -> None:
    """``app:latest`` (kept) and ``app:old`` (deleted by the policy), pushed and pulled: the
    registry cached every blob of both."""
    push_and_pull(reg, "app", "latest", KEPT)
    push_and_pull(reg, "app", "old", OLD)
    set_pushed_at(reg.root, "app", "old", datetime.now(UTC) - timedelta(days=2))  # not newest
    old_layer = set(OLD.layer_digests) & GONE
    expected = {f"blobs::{d}" for d in GONE} | {f"repository::app::blobs::{d}" for d in old_layer}
    assert expected <= cached(redis, "app", GONE)


def test_apply_forgets_the_collected_blobs_so_a_repush_pulls(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    seed(cached_registry, redis)
    result = apply(write_config(tmp_path, cached_registry, "redis", redis.url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(blob_exists(cached_registry.root, d) for d in GONE)  # the GC ran
    assert cached(redis, "app", GONE) == set()
    assert cached(redis, "app", KEPT.blob_digests)  # the kept image's entries stay
    assert pull_ok(cached_registry, "app", "latest")

    push_oci(cached_registry, "app", "old", OLD)  # the same digests again
    assert pull_error(cached_registry, "app", "old") is None
    assert all(blob_exists(cached_registry.root, d) for d in GONE)


def test_without_the_flush_the_repush_does_not_pull(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    """The hazard the flush exists for: retentiond not told about redis (``cache: none``)
    runs the same maintenance, and the re-pushed image is broken. This is what the test above
    would see if the flush were missing."""
    seed(cached_registry, redis)
    result = apply(write_config(tmp_path, cached_registry, "none", "null"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(blob_exists(cached_registry.root, d) for d in GONE)
    assert cached(redis, "app", GONE)  # stale

    push_oci(cached_registry, "app", "old", OLD)  # "succeeds": the blobs "already exist"
    assert pull_error(cached_registry, "app", "old") is not None


def test_apply_with_a_redis_that_does_not_answer_says_which_setting(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    seed(cached_registry, redis)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = apply(write_config(tmp_path, cached_registry, "redis", nowhere))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "registry.redis_url" in result.stderr and nowhere in result.stderr
    # refused before anything changed: after the GC an unreachable cache would stay stale
    assert pull_ok(cached_registry, "app", "latest") and pull_ok(cached_registry, "app", "old")
    assert not (tmp_path / "state" / "runs.jsonl").exists()


def test_a_repository_removed_whole_takes_a_repush_for_real(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    """A removed repository's entries of blobs other repositories keep must go too: else a
    re-push into it skips them (no ``_layers`` link made) and pulls only while redis
    remembers; here the registry is restarted without the cache to see what storage holds."""
    push_and_pull(cached_registry, "app", "latest", KEPT)
    push_and_pull(cached_registry, "tmp/pr-1", "build", OLD)  # shares a layer with KEPT
    repo = repo_dir(cached_registry.root, "tmp/pr-1")
    month_ago = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    for path in [*repo.rglob("*"), repo]:
        os.utime(path, (month_ago, month_ago), follow_symlinks=False)
    policy = KEEP_LATEST + textwrap.indent(
        "- name: previews\n  repositories: [tmp/**]\n  keep: {within: 7d}\n  allow_empty: true\n",
        "  ",
    )
    result = apply(write_config(tmp_path, cached_registry, "redis", redis.url, policy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not repo.exists()

    push_oci(cached_registry, "tmp/pr-1", "build", OLD)
    restart_registry(cached_registry, env={})
    assert pull_error(cached_registry, "tmp/pr-1", "build") is None
