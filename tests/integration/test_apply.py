"""`retentiond apply` against a real registry container, checked with real pulls and pushes.

Each scenario is one of the classic failures of the hand-made recipe (delete through the API,
`garbage-collect --delete-untagged`, GC with pushes on, no restart); each must pass with ours,
on registry 2.8.2 and 3.1.1. retentiond runs as a real process (`python -m retentiond`), so
crashes are real `kill -9`s. ``runtime.registry_config`` is not set: retentiond finds the
config file in the container, as it must for the users of either image.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import (
    CommandError,
    make_oci_image,
    push_oci,
    push_oci_image,
    push_oci_index,
    tag_alias,
)
from tests.harness.registry import RunningRegistry
from tests.harness.tree import data_bytes, revision_dir, set_pushed_at, tag_dir

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
REPO_ROOT = Path(__file__).resolve().parents[2]


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@dataclass
class Setup:
    registry: RunningRegistry
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


def make_setup(
    registry: RunningRegistry, tmp_path: Path, policy: str, gc_mode: str = "readonly"
) -> Setup:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(textwrap.dedent(policy))
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        registry:
          root: {registry.root}
          url: {registry.url}
        runtime:
          kind: docker
          container: {registry.name}
          gc_mode: {gc_mode}
        policies: [policies/]
        safety:
          untagged_min_age: 1h
        state_dir: {tmp_path / "state"}
        log:
          format: json
        """)
    )
    return Setup(registry, config, tmp_path / "state")


def pullable(reg: RunningRegistry, repo: str, ref: str) -> bool:
    from tests.harness.images import pull_ok

    return pull_ok(reg, repo, ref)


def catalog(reg: RunningRegistry) -> list[str]:
    with urllib.request.urlopen(f"{reg.url}/v2/_catalog") as response:
        return list(json.load(response)["repositories"])


def assert_tree_tidy(root: Path) -> None:
    v2 = root / "docker/registry/v2"
    for prefix in (v2 / "blobs/sha256").iterdir():
        assert any(prefix.iterdir()), f"empty blob directory {prefix}"
    for layers in v2.glob("repositories/**/_layers/sha256/*"):
        blob = v2 / "blobs/sha256" / layers.name[:2] / layers.name / "data"
        assert blob.exists(), f"dangling _layers link {layers}"
    assert not any((root / "retentiond-quarantine").glob("*/*")), "quarantine left behind"


KEEP_LATEST = """
    policies:
      - name: app
        repositories: ["app"]
        keep: {tags: ["latest"]}
"""


def test_deleting_an_alias_keeps_the_other_tag_pullable(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "app", "v2", layers=[b"app v2" * 1000], seed="v2")
    push_oci_image(registry, "app", "v3", layers=[b"app v3" * 1000], seed="v3")
    tag_alias(registry, "app", "v3", "latest")
    set_pushed_at(registry.root, "app", "v2", ago(3))
    set_pushed_at(registry.root, "app", "v3", ago(2))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    planned = setup.plan()["summary"]["bytes_reclaimed"]
    before = data_bytes(registry.root)
    setup.run("apply", "--yes")
    assert pullable(registry, "app", "latest")
    assert not pullable(registry, "app", "v3") and not pullable(registry, "app", "v2")
    record = setup.history()[-1]
    assert record["status"] == "ok", record
    assert record["bytes_reclaimed"] == planned == before - data_bytes(registry.root)
    assert planned > 0
    assert_tree_tidy(registry.root)


def test_repush_after_gc_pulls_back(registry: RunningRegistry, tmp_path: Path) -> None:
    old = make_oci_image([b"collected then pushed again" * 500], seed="again")
    push_oci(registry, "app", "old", old)
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    setup.run("apply", "--yes")
    assert not pullable(registry, "app", "old")
    push_oci(registry, "app", "old", old)  # the stale-cache trap: "Layer already exists"
    assert pullable(registry, "app", "old")


def test_multiarch_kept_by_policy_still_pulls_every_platform(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_index(registry, "base/os", "1.0", seed="os1")
    push_oci_index(registry, "base/os", "2.0", seed="os2")
    set_pushed_at(registry.root, "base/os", "1.0", ago(30))
    setup = make_setup(
        registry,
        tmp_path,
        """
        policies:
          - name: base
            repositories: ["base/**"]
            keep: {last: 1}
            untagged: delete
    """,
    )
    setup.run("apply", "--yes")
    assert pullable(registry, "base/os", "2.0")  # skopeo copy --all: every platform
    assert not pullable(registry, "base/os", "1.0")
    assert_tree_tidy(registry.root)


def test_empty_repository_disappears_from_the_catalog(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "tmp/pr-1", "build", layers=[b"pr"], seed="pr")
    push_oci_image(registry, "keep/me", "x", layers=[b"keep"], seed="keep")
    set_pushed_at(registry.root, "tmp/pr-1", "build", ago(30))
    repo = registry.root / "docker/registry/v2/repositories/tmp/pr-1"
    for path in [*repo.rglob("*"), repo]:
        os.utime(path, (ago(30).timestamp(),) * 2, follow_symlinks=False)
    setup = make_setup(
        registry,
        tmp_path,
        """
        policies:
          - name: previews
            repositories: ["tmp/**"]
            keep: {within: 7d}
            allow_empty: true
    """,
    )
    setup.run("apply", "--yes")
    assert catalog(registry) == ["keep/me"]
    assert pullable(registry, "keep/me", "x")
    assert not (registry.root / "docker/registry/v2/repositories/tmp").exists()


def test_push_during_read_only_phase_gets_405_then_works(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old"], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    push_oci_image(registry, "other", "before", layers=[b"pushed before"], seed="before")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    proc = subprocess.Popen(
        [sys.executable, "-m", "retentiond", "--config", str(setup.config), "apply", "--yes"],
        cwd=REPO_ROOT,
        env={**os.environ, "RETENTIOND_PAUSE": "removed=6"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not (setup.state / "journal.json").exists()
            or json.loads((setup.state / "journal.json").read_text())["phase"] != "removed"
        ):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        request = urllib.request.Request(f"{registry.url}/v2/other/blobs/uploads/", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 405
        with pytest.raises(CommandError):
            push_oci_image(registry, "other", "during", layers=[b"during"], seed="during")
        assert pullable(registry, "other", "before")  # pulls go on while read-only
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    push_oci_image(registry, "other", "during", layers=[b"during"], seed="during")
    push_oci_image(registry, "other", "after", layers=[b"after"], seed="after")
    for tag in ("before", "during", "after"):
        assert pullable(registry, "other", tag)
    assert pullable(registry, "app", "latest")


def test_pull_loop_fails_only_during_the_two_switches(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 100], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest" * 100], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    samples: list[tuple[float, bool]] = []
    stop = threading.Event()

    def pull_loop() -> None:
        accept = "application/vnd.oci.image.manifest.v1+json"
        while not stop.is_set():
            request = urllib.request.Request(
                f"{registry.url}/v2/app/manifests/latest", headers={"Accept": accept}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    ok = response.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            samples.append((time.monotonic(), ok))
            time.sleep(0.02)

    thread = threading.Thread(target=pull_loop)
    thread.start()
    try:
        time.sleep(0.3)
        setup.run("apply", "--yes", env={"RETENTIOND_PAUSE": "gc-done=2"})
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    outages = sum(1 for (_, a), (_, b) in itertools.pairwise(samples) if a and not b)
    assert samples[0][1] and samples[-1][1]
    assert 1 <= outages <= 2, f"{outages} separate outages"
    failed = sum(1 for _, ok in samples if not ok)
    assert failed < len(samples) / 2


CRASH_POINTS = [
    "started",
    "maintenance",
    "planned",
    "removing",
    "removing:1",
    "removing:3",
    "removed",
    "gc",
    "gc-done",
    "cleaned",
    "left",
    "recorded",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_9_at_every_step_is_finished_or_rolled_back(
    point: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    for i in range(3):
        push_oci_image(
            registry, "ci/app", f"old-{i}", layers=[f"old {i}".encode() * 300], seed=f"old{i}"
        )
        set_pushed_at(registry.root, "ci/app", f"old-{i}", ago(20 + i))
    push_oci_image(registry, "ci/app", "main", layers=[b"main"], seed="main")
    push_oci_index(registry, "ci/app", "multi", seed="multi")
    setup = make_setup(
        registry,
        tmp_path,
        """
        policies:
          - name: ci
            repositories: ["ci/**"]
            keep: {within: 7d}
    """,
    )
    planned = setup.plan()
    crashed = setup.run("apply", "--yes", env={"RETENTIOND_FAULT": point}, check=False)
    assert crashed.returncode == -9, crashed.stderr
    setup.run("apply", "--yes")
    for tag in ("main", "multi"):
        assert pullable(registry, "ci/app", tag), f"kept tag {tag} lost after a crash at {point}"
    for i in range(3):
        assert not tag_dir(registry.root, "ci/app", f"old-{i}").exists()
        assert not pullable(registry, "ci/app", f"old-{i}")
    for m in planned["manifests"]:
        assert not revision_dir(registry.root, m["repository"], m["digest"]).exists()
    push_oci_image(registry, "ci/app", "new", layers=[b"pushed after"], seed="after")
    assert pullable(registry, "ci/app", "new")  # read-write again
    assert_tree_tidy(registry.root)
    assert not (setup.state / "journal.json").exists()
    assert not list(setup.state.glob("runs/*/removals.jsonl")), "a list of removals left behind"
    statuses = [r["status"] for r in setup.history()]
    assert statuses[-1] == "ok", setup.history()


@pytest.mark.parametrize("mode", ["stop", "online"])
def test_other_gc_modes(mode: str, registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 500], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST, gc_mode=mode)
    planned = setup.plan()["summary"]["bytes_reclaimed"]
    setup.run("apply", "--yes")
    record = setup.history()[-1]
    assert record["status"] == "ok" and record["bytes_reclaimed"] == planned > 0
    assert pullable(registry, "app", "latest") and not pullable(registry, "app", "old")


def test_no_gc_then_undo_puts_everything_back(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old"], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    setup.run("apply", "--yes", "--no-gc")
    assert not pullable(registry, "app", "old")
    run_id = setup.history()[-1]["run_id"]
    # what undo puts back is listed in state_dir, not in the quarantine under the storage root
    listing = setup.state / "runs" / run_id / "removals.jsonl"
    listed = [json.loads(line) for line in listing.read_text().splitlines()]
    assert "repositories/app/_manifests/tags/old" in [r["live"] for r in listed]
    run_dir = registry.root / "retentiond-quarantine" / run_id  # a hundred to a bucket
    held = sorted(p.name for bucket in run_dir.iterdir() for p in bucket.iterdir())
    assert held == [f"{r['index']:07d}" for r in listed]
    setup.run("undo", run_id)
    assert pullable(registry, "app", "old") and pullable(registry, "app", "latest")
    assert not listing.exists()
    # after a GC has run, undo refuses
    setup.run("apply", "--yes")
    refused = setup.run("undo", setup.history()[-1]["run_id"], check=False)
    assert refused.returncode == 1 and "cannot be undone" in refused.stderr


def test_grace_holds_removals_for_undo_then_reclaims(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 400], seed="old")
    push_oci_image(registry, "app", "older", layers=[b"older" * 400], seed="older")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "older", ago(6))
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    setup.config.write_text(
        setup.config.read_text().replace(
            "  untagged_min_age: 1h\n", "  untagged_min_age: 1h\n  grace: 2s\n"
        )
    )
    before = data_bytes(registry.root)
    setup.run("apply", "--yes", env={"RETENTIOND_FAULT": "never"})
    held = setup.history()[-1]
    assert held["status"] == "ok" and held["held_until"] and not held["gc_ran"]
    assert data_bytes(registry.root) == before, "nothing is reclaimed during the grace"
    assert not pullable(registry, "app", "old")
    setup.run("undo", held["run_id"])
    assert pullable(registry, "app", "old") and pullable(registry, "app", "older")
    # untag again, wait out the grace: the next run collects the held run first
    setup.run("apply", "--yes")
    first = setup.history()[-1]
    time.sleep(2.5)
    push_oci_image(registry, "app", "newer", layers=[b"newer"], seed="newer")
    set_pushed_at(registry.root, "app", "newer", ago(1))
    setup.run("apply", "--yes")
    second = setup.history()[-1]
    assert (
        second["gc_before_removals"]
        and second["bytes_reclaimed"] == first["plan"]["bytes_reclaimed"]
    )
    refused = setup.run("undo", first["run_id"], check=False)
    assert refused.returncode == 1 and "cannot be undone" in refused.stderr
    assert pullable(registry, "app", "latest")
    assert not (registry.root / "retentiond-quarantine" / first["run_id"]).exists()
    assert not (setup.state / "runs" / first["run_id"] / "removals.jsonl").exists()


def test_registry_that_does_not_answer_changes_nothing(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old"], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    text = setup.config.read_text().replace(registry.url, "http://127.0.0.1:9")
    setup.config.write_text(text)
    failed = setup.run("apply", "--yes", check=False)
    assert failed.returncode == 1
    assert "did not answer" in failed.stderr
    assert tag_dir(registry.root, "app", "old").exists()
