"""`retentiond apply` on a registry whose storage is a bucket: a real registry container (2.8.2
and 3.1.1) on its ``s3`` driver against the session's Ceph RADOS Gateway, retentiond as a real
process configured with the registry's own ``storage.s3`` keys, real skopeo pushes and pulls.

What a user checks: the kept image pulls, the deleted one does not, the bytes of blob objects
in the bucket went down by what the run reported, nothing is left in the quarantine prefix;
``kill -9`` in the middle of the removals (copies and deletes, no rename on S3) is finished by
the next run; ``undo`` copies everything back; a wrong secret or a missing bucket is a clear
error with every object unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import make_oci_image, make_oci_index, pull_ok
from tests.harness.proc import docker
from tests.harness.registry import RunningRegistry, stop_registry
from tests.harness.s3 import V2_PREFIX, S3Bucket, push_oci_to_s3, start_s3_registry

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
REPO_ROOT = Path(__file__).resolve().parents[2]
QUARANTINE_PREFIX = "retentiond-quarantine/"

KEEP_NEWEST = """
policies:
  - name: newest
    repositories: ["**"]
    keep: {last: 1}
"""


@pytest.fixture
def s3_registry(
    docker_ready: None, registry_version: str, s3_bucket: S3Bucket, tmp_path: Path
) -> Iterator[RunningRegistry]:
    reg = start_s3_registry(s3_bucket, tmp_path / "registry", version=registry_version)
    try:
        yield reg
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ({reg.url}, bucket {s3_bucket.name}) ---")
        print((logs.stdout + logs.stderr).strip())
        stop_registry(reg)


@dataclass
class Setup:
    registry: RunningRegistry
    bucket: S3Bucket
    config: Path
    state: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"retentiond {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def history(self) -> list[dict[str, Any]]:
        path = self.state / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def plan(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("plan", "--json").stdout)
        return doc

    def objects(self) -> dict[str, int]:
        """Every object in the bucket and its size."""
        out: dict[str, int] = {}
        pages = self.bucket.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket.name):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def data_bytes(self) -> int:
        """The bytes of the blobs' ``data`` objects (what a GC frees)."""
        return sum(
            size
            for key, size in self.objects().items()
            if key.startswith(f"{V2_PREFIX}blobs/") and key.endswith("/data")
        )

    def quarantined(self) -> list[str]:
        """What the quarantine holds (its own zero-byte marker, the directory a disk would
        keep, is not a removal held)."""
        return [
            k for k in self.objects() if k.startswith(QUARANTINE_PREFIX) and k != QUARANTINE_PREFIX
        ]


def make_setup(
    reg: RunningRegistry,
    bucket: S3Bucket,
    tmp_path: Path,
    policy: str = KEEP_NEWEST,
    *,
    secret: str | None = None,
    bucket_name: str | None = None,
) -> Setup:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_text(textwrap.dedent(policy))
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        registry:
          storage:
            s3:
              bucket: {bucket_name or bucket.name}
              region: {bucket.region}
              regionendpoint: {bucket.endpoint}
              accesskey: {bucket.access_key}
              secretkey: {secret or bucket.secret_key}
              secure: false
              v4auth: true
              forcepathstyle: true
          url: {reg.url}
        runtime:
          kind: docker
          container: {reg.name}
          gc_mode: readonly
        policies: [policies/]
        safety:
          untagged_min_age: 1h
        state_dir: {tmp_path / "state"}
        log:
          format: json
        """)
    )
    return Setup(reg, bucket, config, tmp_path / "state")


def push_history(reg: RunningRegistry, bucket: S3Bucket, repo: str, count: int) -> list[str]:
    """``count`` tags of ``repo``, oldest first: a second apart, as LastModified (a tag's push
    time on S3, which cannot be set) has a resolution of a second on some stores."""
    tags = []
    for i in range(count):
        tag = f"build-{i}"
        image = make_oci_image([f"{repo} {tag} ".encode() * 200], seed=f"{repo}-{tag}")
        push_oci_to_s3(reg, bucket, repo, tag, image)
        tags.append(tag)
        time.sleep(1.1)
    return tags


def test_apply_on_s3_keeps_what_the_policy_keeps_and_reclaims_what_it_reported(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    tags = push_history(s3_registry, s3_bucket, "ci/app", 3)
    index = make_oci_index(seed="multi-old")
    push_oci_to_s3(s3_registry, s3_bucket, "ci/multi", "old", index)
    time.sleep(1.1)
    push_oci_to_s3(s3_registry, s3_bucket, "ci/multi", "new", make_oci_index(seed="multi-new"))
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    plan = setup.plan()
    assert plan["root"].startswith(f"s3://{s3_bucket.name}")
    deleted = {f"{t['repository']}:{t['tag']}" for t in plan["tags"]}
    assert deleted == {"ci/app:build-0", "ci/app:build-1", "ci/multi:old"}
    before = setup.data_bytes()
    setup.run("apply", "--yes")
    record = setup.history()[-1]
    assert record["status"] == "ok", record
    assert record["bytes_reclaimed"] == plan["summary"]["bytes_reclaimed"] > 0
    assert before - setup.data_bytes() == record["bytes_reclaimed"]
    assert pull_ok(s3_registry, "ci/app", tags[-1])
    assert pull_ok(s3_registry, "ci/multi", "new")
    for repo, tag in (("ci/app", "build-0"), ("ci/app", "build-1"), ("ci/multi", "old")):
        assert not pull_ok(s3_registry, repo, tag)
    assert setup.quarantined() == []
    # read-write again, and a re-push of a deleted image pulls (no stale cache)
    push_oci_to_s3(
        s3_registry,
        s3_bucket,
        "ci/app",
        "again",
        make_oci_image([b"ci/app build-0 " * 200], seed="ci/app-build-0"),
    )
    assert pull_ok(s3_registry, "ci/app", "again")


@pytest.mark.parametrize("point", ["removing:1", "removed", "gc", "cleaned"])
def test_kill_9_during_s3_removals_is_finished_by_the_next_run(
    point: str, s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    push_history(s3_registry, s3_bucket, "app", 4)
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    planned = setup.plan()
    crashed = setup.run("apply", "--yes", env={"RETENTIOND_FAULT": point}, check=False)
    assert crashed.returncode == -9, crashed.stderr
    setup.run("apply", "--yes")
    assert pull_ok(s3_registry, "app", "build-3"), f"kept tag lost after a crash at {point}"
    for t in planned["tags"]:
        assert not pull_ok(s3_registry, t["repository"], t["tag"])
    keys = setup.objects()
    for t in planned["tags"]:
        prefix = f"{V2_PREFIX}repositories/{t['repository']}/_manifests/tags/{t['tag']}/"
        assert not [k for k in keys if k.startswith(prefix)], f"{prefix} left after {point}"
    assert setup.quarantined() == []
    assert setup.history()[-1]["status"] == "ok", setup.history()
    assert not (setup.state / "journal.json").exists()


def test_undo_on_s3_copies_everything_back(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    push_history(s3_registry, s3_bucket, "app", 2)
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    before = {k: v for k, v in setup.objects().items() if k.startswith(V2_PREFIX)}
    planned = setup.plan()["tags"]
    setup.run("apply", "--yes", "--no-gc")
    assert not pull_ok(s3_registry, "app", "build-0")
    assert setup.quarantined(), "the removals are held in the quarantine prefix"
    run_id = setup.history()[-1]["run_id"]
    setup.run("undo", run_id)
    assert pull_ok(s3_registry, "app", "build-0") and pull_ok(s3_registry, "app", "build-1")
    after = {k: v for k, v in setup.objects().items() if k.startswith(V2_PREFIX)}
    assert after == before
    assert setup.quarantined() == []
    # a copy has a new LastModified: the tag link put back keeps its push time (in its
    # metadata), so the same tag is still the oldest and the plan is the same
    assert setup.plan()["tags"] == planned


@pytest.mark.parametrize("fault", ["wrong secret", "missing bucket"])
def test_bad_credentials_or_bucket_is_a_clear_error_and_changes_nothing(
    fault: str, s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    push_history(s3_registry, s3_bucket, "app", 2)
    if fault == "wrong secret":
        setup = make_setup(s3_registry, s3_bucket, tmp_path, secret="not-the-secret")
    else:
        setup = make_setup(s3_registry, s3_bucket, tmp_path, bucket_name="no-such-bucket-here")
    before = setup.objects()
    planned = setup.run("plan", check=False)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    applied = setup.run("apply", "--yes", check=False)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    message = applied.stderr
    if fault == "wrong secret":
        assert "credential" in message.lower() or "secret" in message.lower(), message
    else:
        assert "no-such-bucket-here" in message, message
    assert "Traceback" not in message
    assert setup.objects() == before
    assert pull_ok(s3_registry, "app", "build-0") and pull_ok(s3_registry, "app", "build-1")
    # the registry was never switched: it takes pushes
    push_oci_to_s3(
        s3_registry, s3_bucket, "app", "new", make_oci_image([b"new"], seed="after-error")
    )


def test_grace_on_s3_holds_the_removals_then_reclaims(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    push_history(s3_registry, s3_bucket, "app", 3)
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    setup.config.write_text(
        setup.config.read_text().replace(
            "  untagged_min_age: 1h\n", "  untagged_min_age: 1h\n  grace: 2s\n"
        )
    )
    planned = setup.plan()
    before = setup.data_bytes()
    setup.run("apply", "--yes")
    held = setup.history()[-1]
    assert held["status"] == "ok" and held["held_until"] and not held["gc_ran"], held
    assert setup.data_bytes() == before, "nothing is reclaimed during the grace"
    assert setup.quarantined(), "the removals wait in the quarantine prefix"
    assert not pull_ok(s3_registry, "app", "build-0")
    time.sleep(2.5)
    setup.run("apply", "--yes")
    second = setup.history()[-1]
    assert second["gc_before_removals"], second
    assert second["bytes_reclaimed"] == planned["summary"]["bytes_reclaimed"] > 0
    assert before - setup.data_bytes() == second["bytes_reclaimed"]
    assert pull_ok(s3_registry, "app", "build-2")
    assert setup.quarantined() == []


def test_serve_on_s3_plans_and_runs_its_window(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """``serve`` (which reads the bucket with threads: it may not fork) plans on a schedule,
    reports the bucket's bytes, and runs the window."""
    push_history(s3_registry, s3_bucket, "app", 2)
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    setup.config.write_text(
        setup.config.read_text()
        + textwrap.dedent(f"""\
        schedule:
          plan_every: 2s
          window: "* * * * *"
          window_length: 10m
        metrics:
          listen: 127.0.0.1:{port}
        """)
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "retentiond", "--config", str(setup.config), "serve"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not [r for r in setup.history() if r["status"] == "ok"]:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        assert pull_ok(s3_registry, "app", "build-1") and not pull_ok(s3_registry, "app", "build-0")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as metrics:
            text = metrics.read().decode()
        stored = [
            line for line in text.splitlines() if line.startswith("retentiond_storage_bytes ")
        ]
        assert stored and float(stored[0].split()[1]) > 0, text
    finally:
        proc.terminate()
        assert proc.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()
        log.close()


def test_verify_on_s3_finds_a_kept_image_whose_blob_is_gone(
    s3_registry: RunningRegistry, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """``retentiond verify`` reads the bucket (tags, manifests, ``_layers`` links, blobs):
    every tag whole, until a layer's ``data`` object of a kept image is deleted behind the
    registry's back."""
    image = make_oci_image([b"verify me " * 100], seed="verify")
    push_oci_to_s3(s3_registry, s3_bucket, "app", "kept", image)
    setup = make_setup(s3_registry, s3_bucket, tmp_path)
    report = json.loads(setup.run("verify", "--json").stdout)
    assert report["tags"] == 1 and report["broken"] == [], report
    layer = image.layer_digests[0]
    hexpart = layer.removeprefix("sha256:")
    key = f"{V2_PREFIX}blobs/sha256/{hexpart[:2]}/{hexpart}/data"
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=key)
    broken = setup.run("verify", "--json", check=False)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert [b["tag"] for b in json.loads(broken.stdout)["broken"]] == ["kept"]
