"""Two registry instances on ONE storage and ONE redis (``runtime.containers: [a, b]``),
against real registry containers (2.8.2 and 3.1.1), a real redis-server and real clients
(skopeo): a window freezes both, one GC, both come back, the shared redis is flushed once, and
every kept tag is verified through each instance. retentiond runs as a real process, so the
crashes are real ``kill -9``s.

The storage is a parameter. The runtime's own tests (switches, a failed switch, recovery,
``check``) run on a shared host directory and on a shared S3 bucket (the session's RGW).
``apply`` (``APPLY_STORAGES``) runs on both too: retentiond reads and removes on the shared
directory or in the shared bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from retentiond.config import GcMode, RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.registry import RegistryClient
from retentiond.runtime.base import MaintenanceState
from retentiond.runtime.docker_specs import TWIN_LABEL, TWIN_SUFFIX
from retentiond.runtime.replicas import ReplicatedDockerRuntime
from retentiond.storage.layout import RESTORED_LINKS
from retentiond.storage.s3_objects import PUSHED_AT
from retentiond.verification import verify_instances
from tests.harness.images import CommandError, OciImage, make_oci_image, pull_error, push_oci
from tests.harness.proc import docker
from tests.harness.redis import RunningRedis
from tests.harness.registry import (
    LABEL,
    RunningRegistry,
    container_running,
    start_registry,
    stop_registry,
)
from tests.harness.s3 import (
    V2_PREFIX,
    S3Bucket,
    create_bucket,
    delete_bucket,
    push_oci_to_s3,
    registry_s3_env,
    tag_link_key,
)
from tests.harness.tree import set_pushed_at

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
REPO_ROOT = Path(__file__).resolve().parents[2]

#: the storages two instances share in the runtime's tests
STORAGES = ["filesystem", "s3"]
#: the storages ``apply`` runs on across two instances
APPLY_STORAGES = ["filesystem", "s3"]

SHARED = b"a layer both images hold" * 100
KEPT = make_oci_image([SHARED, b"the kept image's own layer" * 100], seed="replica-kept")
OLD = make_oci_image([SHARED, b"the deleted image's own layer" * 100], seed="replica-old")
#: what the GC deletes once OLD is untagged: its manifest, config and own layer
GONE = OLD.blob_digests - KEPT.blob_digests


@dataclass
class Replicas:
    """Two registry containers ``a`` and ``b`` serving one storage, caching in one redis;
    ``bucket`` is the bucket both use when ``storage`` is "s3"."""

    a: RunningRegistry
    b: RunningRegistry
    redis: RunningRedis
    storage: str
    bucket: S3Bucket | None = None

    @property
    def both(self) -> tuple[RunningRegistry, RunningRegistry]:
        return self.a, self.b

    def push(self, reg: RunningRegistry, repo: str, tag: str, image: OciImage) -> str:
        """Push ``image`` through ``reg`` (skopeo) and check the storage names it."""
        if self.bucket is not None:
            return push_oci_to_s3(reg, self.bucket, repo, tag, image)
        return push_oci(reg, repo, tag, image)

    def age(self, repo: str, tag: str, days: float) -> None:
        """Make ``repo:tag`` look pushed ``days`` ago (in a bucket, whose LastModified cannot
        be set: as a run puts a tag back, the push time in the link's metadata, which
        retentiond reads, after a record under ``retentiond-restored/`` that tells it not to
        take the link's time from a listing)."""
        when = datetime.now(UTC) - timedelta(days=days)
        if self.bucket is None:
            set_pushed_at(self.a.root, repo, tag, when)
            return
        key = tag_link_key(repo, tag)
        tag_dir = key[len(V2_PREFIX) :].rpartition("/current/")[0]
        self.bucket.client().put_object(
            Bucket=self.bucket.name, Key=f"{RESTORED_LINKS}/{tag_dir}/aged@test", Body=b""
        )
        self.bucket.client().copy_object(
            Bucket=self.bucket.name,
            Key=key,
            CopySource={"Bucket": self.bucket.name, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={PUSHED_AT: f"{when.timestamp():.6f}"},
        )

    def storage_config(self) -> str:
        """retentiond's ``registry`` lines that say where the storage is."""
        if self.bucket is None:
            return f"  root: {self.a.root}\n"
        b = self.bucket
        return textwrap.indent(
            textwrap.dedent(f"""\
            storage:
              s3:
                bucket: {b.name}
                region: {b.region}
                regionendpoint: {b.endpoint}
                accesskey: {b.access_key}
                secretkey: {b.secret_key}
                secure: false
                forcepathstyle: true
            """),
            "  ",
        )


def redis_env(redis: RunningRedis, version: str) -> dict[str, str]:
    """The registry's redis blob descriptor cache: 2.8's ``redis.addr``, v3's ``redis.addrs``
    (a list, parsed as YAML from the environment)."""
    addr = (
        {"REGISTRY_REDIS_ADDR": redis.addr}
        if version.startswith("2.")
        else {"REGISTRY_REDIS_ADDRS": f"[{redis.addr}]"}
    )
    return {"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis", **addr}


def start_replicas(
    version: str,
    redis: RunningRedis,
    tmp_path: Path,
    roots: tuple[str, str],
    buckets: tuple[S3Bucket, S3Bucket] | None = None,
) -> tuple[RunningRegistry, RunningRegistry]:
    """Two instances of ``version``: on the host directories ``tmp_path/roots[i]`` (the same
    name twice: one directory for both), or on ``buckets`` (the same one twice: one bucket)."""
    env = redis_env(redis, version)
    suffix = uuid.uuid4().hex[:8]
    started: list[RunningRegistry] = []
    try:
        for n, side in enumerate("ab"):
            storage = registry_s3_env(buckets[n]) if buckets else {}
            started.append(
                start_registry(
                    tmp_path / roots[n],
                    f"retentiond-test-rep-{side}-{suffix}",
                    env=env | storage,
                    version=version,
                )
            )
    except BaseException:
        for reg in started:
            stop_registry(reg)
        raise
    return started[0], started[1]


def remove_with_leftovers(reg: RunningRegistry) -> None:
    for suffix in (TWIN_SUFFIX, "-retentiond-gc"):
        docker("rm", "-f", reg.name + suffix, check=False)
    logs = docker("logs", "--tail", "15", reg.name, check=False)
    print(f"--- last log lines of {reg.name} ({reg.url}) ---")
    print((logs.stdout + logs.stderr).strip())
    stop_registry(reg)


def make_replicas(
    request: pytest.FixtureRequest, storage: str, version: str, redis: RunningRedis, tmp: Path
) -> Iterator[Replicas]:
    bucket = None
    if storage == "s3":
        bucket = create_bucket(request.getfixturevalue("s3_server"))
    try:
        a, b = start_replicas(
            version, redis, tmp, ("shared", "shared"), (bucket, bucket) if bucket else None
        )
        try:
            yield Replicas(a, b, redis, storage, bucket)
        finally:
            remove_with_leftovers(a)
            remove_with_leftovers(b)
    finally:
        if bucket is not None:
            delete_bucket(bucket)


@pytest.fixture(params=STORAGES)
def replicas(
    request: pytest.FixtureRequest,
    docker_ready: None,
    registry_version: str,
    redis: RunningRedis,
    tmp_path: Path,
) -> Iterator[Replicas]:
    """Two instances on one storage of each of :data:`STORAGES`."""
    yield from make_replicas(request, request.param, registry_version, redis, tmp_path)


@pytest.fixture(params=APPLY_STORAGES)
def apply_replicas(
    request: pytest.FixtureRequest,
    docker_ready: None,
    registry_version: str,
    redis: RunningRedis,
    tmp_path: Path,
) -> Iterator[Replicas]:
    """Two instances on one storage of each of :data:`APPLY_STORAGES`."""
    yield from make_replicas(request, request.param, registry_version, redis, tmp_path)


def leftovers(reg: RunningRegistry) -> list[str]:
    out = docker("ps", "-a", "--filter", f"label={TWIN_LABEL}", "--format", "{{.Names}}")
    return [n for n in out.stdout.split() if n.startswith(reg.name)]


def container_id(reg: RunningRegistry) -> str:
    return docker("inspect", "-f", "{{.Id}}", reg.name).stdout.strip()


def upload_status(reg: RunningRegistry) -> int:
    """``POST /v2/other/blobs/uploads/``: 202 read-write, 405 read-only (an accepted upload is
    cancelled)."""
    response = httpx.post(f"{reg.url}/v2/other/blobs/uploads/", timeout=5)
    if response.status_code == 202:
        location = response.headers["Location"]
        httpx.delete(location if "://" in location else reg.url + location, timeout=5)
    return response.status_code


def cached(redis: RunningRedis, digests: set[str]) -> set[str]:
    """The keys the shared redis holds for ``digests``: global and in repository ``app``."""
    keys = {f"blobs::{d}" for d in digests} | {f"repository::app::blobs::{d}" for d in digests}
    return keys & redis.keys()


def seed(rep: Replicas) -> None:
    """``app:latest`` (kept) pushed through a, ``app:old`` (deleted) through b, each pulled
    through both: both instances used the shared cache."""
    rep.push(rep.a, "app", "latest", KEPT)
    rep.push(rep.b, "app", "old", OLD)
    for reg in rep.both:
        for tag in ("latest", "old"):
            assert pull_error(reg, "app", tag) is None
    assert cached(rep.redis, GONE)


def write_config(rep: Replicas, tmp_path: Path, *, instance_urls: bool = False) -> Path:
    """retentiond's config: ``registry.url`` is instance a (standing for a load balancer),
    ``runtime.containers`` both, the shared redis."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(
        "policies:\n  - name: app\n    repositories: [app]\n    keep: {tags: [latest]}\n"
    )
    urls = f"  instance_urls: [{rep.a.url}, {rep.b.url}]\n" if instance_urls else ""
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        "registry:\n"
        + rep.storage_config()
        + textwrap.dedent(f"""\
          url: {rep.a.url}
          cache: redis
          redis_url: {rep.redis.url}
        runtime:
          kind: docker
          containers: [{rep.a.name}, {rep.b.name}]
          gc_mode: readonly
        """)
        + urls
        + textwrap.dedent(f"""\
        policies: [policies/]
        state_dir: {tmp_path / "state"}
        log:
          format: json
        """)
    )
    return config


def retentiond(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def history(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def log_events(output: str) -> list[str]:
    events = []
    for line in output.splitlines():
        try:
            events.append(str(json.loads(line).get("event", "")))
        except (json.JSONDecodeError, AttributeError):
            continue
    return events


def assert_back_and_collected(rep: Replicas, originals: dict[str, str]) -> None:
    """Both original containers run read-write, nothing of retentiond's is left; the kept
    image pulls through each instance, the deleted one through neither; the shared redis
    forgot the collected blobs, so a re-push through b pulls through a."""
    for reg in rep.both:
        assert container_running(reg.name) and container_id(reg) == originals[reg.name]
        assert leftovers(reg) == []
        assert upload_status(reg) == 202
        assert pull_error(reg, "app", "latest") is None, f"kept image through {reg.name}"
        assert pull_error(reg, "app", "old") is not None, f"deleted image through {reg.name}"
    assert cached(rep.redis, GONE) == set()
    rep.push(rep.b, "app", "old", OLD)  # the same digests again, through b
    assert pull_error(rep.a, "app", "old") is None, "a re-push through b pulls through a"


# ------------------------------------------------------------------------------------------
# apply across two instances


def test_apply_freezes_both_runs_one_gc_and_verifies_through_each(
    apply_replicas: Replicas, tmp_path: Path
) -> None:
    rep = apply_replicas
    seed(rep)
    rep.age("app", "old", days=2)
    originals = {reg.name: container_id(reg) for reg in rep.both}
    config = write_config(rep, tmp_path)
    journal = tmp_path / "state" / "journal.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "retentiond", "--config", str(config), "apply", "--yes"],
        cwd=REPO_ROOT,
        env={**os.environ, "RETENTIOND_PAUSE": "removed=6"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not journal.exists() or json.loads(journal.read_text())["phase"] != "removed":
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        for reg in rep.both:  # in the window: each instance refuses writes, serves pulls
            assert upload_status(reg) == 405, reg.name
            with pytest.raises(CommandError):
                rep.push(reg, "other", "during", make_oci_image([b"during"], seed=reg.name))
            assert pull_error(reg, "app", "latest") is None
            assert leftovers(reg) == [reg.name + TWIN_SUFFIX]
    finally:
        out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    events = log_events(err)
    assert events.count("garbage collection finished") == 1, events
    assert events.count("redis cache cleaned") == 1, events
    record = history(tmp_path)[-1]
    assert record["status"] == "ok" and record["broken"] == [], record
    assert record["removed"]["tags"] == 1 and record["gc_ran"]
    assert_back_and_collected(rep, originals)
    for reg in rep.both:
        rep.push(reg, "other", "after", make_oci_image([b"after"], seed=reg.name))


@pytest.mark.parametrize("point", ["maintenance", "gc-done"])
def test_kill_9_in_the_window_then_the_next_start_recovers_both(
    apply_replicas: Replicas, tmp_path: Path, point: str
) -> None:
    """Killed with both frozen (before the removals: rolled back; after the GC: finished):
    the next ``apply`` brings both instances back and finishes or undoes the run."""
    rep = apply_replicas
    seed(rep)
    rep.age("app", "old", days=2)
    originals = {reg.name: container_id(reg) for reg in rep.both}
    config = write_config(rep, tmp_path, instance_urls=True)
    crashed = retentiond(config, "apply", "--yes", env={"RETENTIOND_FAULT": point})
    assert crashed.returncode == -9, crashed.stderr
    for reg in rep.both:  # left read-only: twins serve, originals stopped
        assert upload_status(reg) == 405, reg.name
        assert not container_running(reg.name) and leftovers(reg) == [reg.name + TWIN_SUFFIX]

    again = retentiond(config, "apply", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    statuses = [r["status"] for r in history(tmp_path)]
    # rolled back, then a new run deletes; or the interrupted run finished
    assert statuses == (["rolled-back", "ok"] if point == "maintenance" else ["ok"]), statuses
    assert history(tmp_path)[-1]["broken"] == []
    assert_back_and_collected(rep, originals)


# ------------------------------------------------------------------------------------------
# the runtime: a switch that fails, recovery, check


def test_a_replica_that_cannot_switch_brings_the_other_back(replicas: Replicas) -> None:
    """b's twin cannot be created (its name is taken by a container retentiond did not make):
    a, switched already, is brought back; nothing is left read-only or stopped."""
    rep = replicas
    squatter = rep.b.name + TWIN_SUFFIX
    docker("create", "--name", squatter, "--label", LABEL, rep.b.image)
    try:
        rt = ReplicatedDockerRuntime(RuntimeConfig(containers=(rep.a.name, rep.b.name)))
        assert rt.check() == []
        with pytest.raises(RuntimeControlError, match=squatter):
            rt.enter_maintenance()
        for reg in rep.both:
            assert container_running(reg.name) and upload_status(reg) == 202
        assert leftovers(rep.a) == []
    finally:
        docker("rm", "-f", squatter, check=False)


def test_recover_after_a_process_killed_in_the_window_restores_both(replicas: Replicas) -> None:
    rep = replicas
    code = textwrap.dedent(f"""
        import os, signal
        from retentiond.config import GcMode, RuntimeConfig
        from retentiond.runtime.replicas import ReplicatedDockerRuntime
        config = RuntimeConfig(containers=({rep.a.name!r}, {rep.b.name!r}))
        ReplicatedDockerRuntime(config, run_id="crashed").enter_maintenance()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == -9, res.stderr
    assert [upload_status(reg) for reg in rep.both] == [405, 405]
    # one more left half-way: b's original stopped, its twin not started
    docker("stop", rep.b.name + TWIN_SUFFIX)
    rt = ReplicatedDockerRuntime(RuntimeConfig(containers=(rep.a.name, rep.b.name)))
    assert rt.recover() is True
    for reg in rep.both:
        assert container_running(reg.name) and leftovers(reg) == []
        assert upload_status(reg) == 202
    assert rt.recover() is False, "nothing left to do"


def test_stop_mode_stops_both_and_collects_once(replicas: Replicas) -> None:
    rep = replicas
    seed(rep)
    rt = ReplicatedDockerRuntime(
        RuntimeConfig(containers=(rep.a.name, rep.b.name), gc_mode=GcMode.STOP)
    )
    assert rt.enter_maintenance() is MaintenanceState.STOPPED
    try:
        assert not any(container_running(reg.name) for reg in rep.both)
        gc = rt.run_gc(dry_run=True)
        assert gc.ok, gc.output
    finally:
        rt.leave_maintenance()
    for reg in rep.both:
        assert container_running(reg.name) and pull_error(reg, "app", "latest") is None


@pytest.mark.parametrize("storage", STORAGES)
def test_check_refuses_instances_on_different_storage(
    request: pytest.FixtureRequest,
    docker_ready: None,
    registry_version: str,
    redis: RunningRedis,
    tmp_path: Path,
    storage: str,
) -> None:
    buckets = None
    if storage == "s3":
        server = request.getfixturevalue("s3_server")
        buckets = (create_bucket(server), create_bucket(server))
    try:
        a, b = start_replicas(registry_version, redis, tmp_path, ("one", "two"), buckets)
        try:
            rt = ReplicatedDockerRuntime(RuntimeConfig(containers=(a.name, b.name)))
            problems = rt.check()
            assert len(problems) == 1, problems
            assert "do not serve the same storage" in problems[0]
            if buckets is None:
                assert f"{a.name}: filesystem {tmp_path / 'one'}" in problems[0]
                assert f"{b.name}: filesystem {tmp_path / 'two'}" in problems[0]
            else:
                endpoint = buckets[0].container_endpoint
                assert f"{a.name}: s3 {endpoint}/{buckets[0].name}/" in problems[0]
                assert f"{b.name}: s3 {endpoint}/{buckets[1].name}/" in problems[0]
            assert upload_status(a) == 202 and upload_status(b) == 202  # nothing changed
        finally:
            remove_with_leftovers(a)
            remove_with_leftovers(b)
    finally:
        for bucket in buckets or ():
            delete_bucket(bucket)


def test_check_reports_each_instance(replicas: Replicas, tmp_path: Path) -> None:
    rep = replicas
    config = write_config(rep, tmp_path)
    checked = retentiond(config, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert any(f"in containers {rep.a.name}, {rep.b.name}" in line for line in lines), lines
    storage = (
        f"s3 {rep.bucket.container_endpoint}/{rep.bucket.name}/"
        if rep.bucket is not None
        else f"filesystem {rep.a.root}"
    )
    for reg in rep.both:
        assert f"instance {reg.name}: storage {storage}, verified at {reg.url}" in lines, lines
    assert "warning" not in checked.stderr, checked.stderr


def test_verification_names_the_instance_a_tag_is_broken_on(
    docker_ready: None, registry_version: str, redis: RunningRedis, tmp_path: Path
) -> None:
    """b serves an empty storage (a misconfigured replica): the kept tag answers through a
    and is reported broken through b, with b's name."""
    a, b = start_replicas(registry_version, redis, tmp_path, ("one", "two"))
    try:
        digest = push_oci(a, "app", "latest", KEPT)
        instances = [(a.name, a.url), (b.name, b.url), ("c", "")]
        with RegistryClient(a.url) as client:
            result = verify_instances(
                client,
                instances,
                lambda: [("app", "latest", digest)],
                lambda: [],
                reappeared=lambda repository, tag: False,
            )
        assert result.broken == [
            f"app:latest: GET manifest latest answered 404 (through instance {b.name} at {b.url})",
            "instance c: its address is unknown; set runtime.instance_urls",
        ]
        # through a: the manifest and its 3 blobs; through b: the manifest only
        assert result.requests == len(KEPT.blob_digests) + 1
    finally:
        remove_with_leftovers(a)
        remove_with_leftovers(b)
