"""notify.webhooks end to end: a real registry container, a real maintenance through the CLI
(``apply --yes``, then ``serve`` in a window), and a real HTTP receiver started by the test
(``tests/harness/webhook_receiver.py``). A second webhook points at a closed port (connection
refused): it is logged as failed, counted on ``/metrics`` by ``serve``, and the run succeeds.

Registry 2.8.2 only: what is tested here (the run's end, its record, the HTTP POST) does not
depend on the registry's version, which tests/integration/test_apply.py covers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import pull_ok, push_oci_image
from tests.harness.registry import RunningRegistry
from tests.harness.tree import data_bytes, set_pushed_at
from tests.harness.webhook_receiver import WebhookReceiver, closed_port, webhook_receiver

pytestmark = [pytest.mark.registry]
REPO_ROOT = Path(__file__).resolve().parents[2]

KEEP_LATEST = """\
policies:
  - name: app
    repositories: ["app"]
    keep: {tags: ["latest"]}
"""


def old_and_latest(registry: RunningRegistry) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 3000], seed="old")
    push_oci_image(registry, "app", "older", layers=[b"older" * 3000], seed="older")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", datetime.now(UTC) - timedelta(days=3))
    set_pushed_at(registry.root, "app", "older", datetime.now(UTC) - timedelta(days=4))


def write_config(
    registry: RunningRegistry,
    tmp_path: Path,
    receiver: WebhookReceiver,
    dead_port: int,
    extra: str = "",
) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(KEEP_LATEST)
    (tmp_path / "hook.headers").write_text("Authorization: Bearer t0ken\n")
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        registry:
          root: {registry.root}
          url: {registry.url}
        runtime:
          kind: docker
          container: {registry.name}
        policies: [policies/]
        state_dir: {tmp_path / "state"}
        log:
          format: json
        notify:
          webhooks:
            - url: {receiver.url("/hooks/secret-path")}
              headers: {{X-Team: registry}}
              headers_file: hook.headers
            - url: http://127.0.0.1:{dead_port}/hooks/other
              timeout: 3s
        """)
        + extra
    )
    return config


def retentiond(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


def history(state: Path) -> list[dict[str, Any]]:
    path = state / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_apply_posts_the_summary_and_a_dead_webhook_does_not_fail_the_run(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    old_and_latest(registry)
    dead = closed_port()
    with webhook_receiver() as receiver:
        config = write_config(registry, tmp_path, receiver, dead)
        assert retentiond(config, "check").returncode == 0
        planned = json.loads(retentiond(config, "plan", "--json").stdout)["summary"]
        before = data_bytes(registry.root)
        started = time.monotonic()
        proc = retentiond(config, "apply", "--yes")
        elapsed = time.monotonic() - started
        received = receiver.requests()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pull_ok(registry, "app", "latest") and not pull_ok(registry, "app", "old")
    [record] = history(tmp_path / "state")
    assert record["status"] == "ok"

    [request] = received
    assert request.path == "/hooks/secret-path"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.headers["X-Team"] == "registry"
    body = request.body
    assert body["run_id"] == record["run_id"]
    assert body["status"] == "ok" and body["ok"] is True
    assert body["tags_deleted"] == record["removed"]["tags"] == planned["tags_deleted"] == 2
    assert body["manifests_unlinked"] == record["removed"]["manifests"] == 2
    assert body["bytes_reclaimed"] == record["bytes_reclaimed"] == planned["bytes_reclaimed"]
    assert body["bytes_reclaimed"] == before - data_bytes(registry.root) > 0
    assert body["blobs_deleted"] == record["blobs_deleted"] > 0
    assert body["broken_tags"] == 0 and body["broken"] == [] and body["errors"] == []
    assert body["started_at"] == record["started_at"]
    assert body["finished_at"] == record["finished_at"]
    # the run's started_at and finished_at are whole seconds: its duration may exceed the
    # time measured around the process by up to one
    assert 0 < body["duration_seconds"] < elapsed + 1
    assert body["registry"] == registry.url
    assert body["text"].startswith(f"retentiond: run {record['run_id']} ok: 2 tags deleted, ")
    assert "reclaimed" in body["text"]

    [sent] = log_events(proc.stderr, "webhook notified")
    assert sent["webhook"] == 0 and sent["status"] == 200 and sent["run_id"] == record["run_id"]
    [failed] = log_events(proc.stderr, "webhook failed; the run is not affected")
    assert failed["webhook"] == 1 and failed["level"] == "warning"
    assert failed["url"] == f"http://127.0.0.1:{dead}"  # never the path (it may be the secret)
    assert "ConnectError" in failed["error"]
    assert "secret-path" not in proc.stderr and "t0ken" not in proc.stderr


def test_a_run_finished_after_a_crash_is_notified_too(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    """kill -9 in the middle of the removals: the next apply rolls the run back (one webhook,
    ``rolled-back``), then runs its own (another, ``ok``)."""
    old_and_latest(registry)
    with webhook_receiver() as receiver:
        config = write_config(registry, tmp_path, receiver, closed_port())
        crashed = retentiond(config, "apply", "--yes", env={"RETENTIOND_FAULT": "removing:1"})
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert receiver.requests() == []  # killed: nothing was sent
        proc = retentiond(config, "apply", "--yes")
        received = receiver.requests()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = history(tmp_path / "state")
    assert [r["status"] for r in records] == ["rolled-back", "ok"]
    bodies = [r.body for r in received]
    assert [(b["run_id"], b["status"], b["resumed"]) for b in bodies] == [
        (records[0]["run_id"], "rolled-back", True),
        (records[1]["run_id"], "ok", False),
    ]
    assert "nothing removed, everything put back" in bodies[0]["text"]
    assert bodies[1]["tags_deleted"] == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 150.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_serve_counts_failed_webhooks_on_metrics(registry: RunningRegistry, tmp_path: Path) -> None:
    old_and_latest(registry)
    port = free_port()
    extra = textwrap.dedent(f"""\
        schedule:
          plan_every: 2s
          window: "* * * * *"
          window_length: 10m
        metrics:
          listen: 127.0.0.1:{port}
        """)
    log = tmp_path / "serve.log"
    with webhook_receiver(status=500) as receiver:  # answers, but not 2xx: a failure too
        config = write_config(registry, tmp_path, receiver, closed_port(), extra)
        with open(log, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "retentiond", "--config", str(config), "serve"],
                cwd=REPO_ROOT,
                env=dict(os.environ),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        try:
            failures = "retentiond_notify_failures_total"
            wait_for("serve's /metrics", lambda: metric(port, failures) == 0, 30)
            [record] = wait_for("a maintenance run", lambda: history(tmp_path / "state"))
            wait_for("two failed webhooks counted", lambda: metric(port, failures) == 2, 30)
            assert record["status"] == "ok"
            [request] = receiver.requests()
            assert request.body["run_id"] == record["run_id"]
            assert request.body["bytes_reclaimed"] == record["bytes_reclaimed"] > 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = log_events(log.read_text(), "webhook failed; the run is not affected")
    assert sorted((f["webhook"], f["status"]) for f in failed) == [(0, 500), (1, None)]
    assert pull_ok(registry, "app", "latest") and not pull_ok(registry, "app", "old")
