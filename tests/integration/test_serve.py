"""`retentiond serve` end to end: a real registry container (2.8.2 and 3.1.1), a real Prometheus
server (Debian's `prometheus`, on loopback) scraping the daemon, real pulls and pushes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import pull_ok, push_oci_image, push_oci_index
from tests.harness.registry import RunningRegistry
from tests.harness.tree import set_pushed_at, tag_dir

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 150.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Served:
    def __init__(
        self, registry: RunningRegistry, tmp: Path, window: str, window_length: str, policy: str
    ) -> None:
        self.registry = registry
        self.tmp = tmp
        self.port = free_port()
        self.state = tmp / "state"
        self.policy_file = tmp / "policies" / "p.yaml"
        self.policy_file.parent.mkdir(exist_ok=True)
        self.policy_file.write_text(textwrap.dedent(policy))
        self.config = tmp / "retentiond.yaml"
        self.config.write_text(
            textwrap.dedent(f"""\
            registry:
              root: {registry.root}
              url: {registry.url}
            runtime:
              kind: docker
              container: {registry.name}
            policies: [policies/]
            schedule:
              plan_every: 2s
              window: "{window}"
              window_length: {window_length}
            metrics:
              listen: 127.0.0.1:{self.port}
            state_dir: {self.state}
            log:
              format: json
            """)
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log = tmp / "serve.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), "serve"],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "a"),  # noqa: SIM115
        )
        wait_for("serve to answer /healthz", lambda: self.http("/healthz")[0] == 200, 30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def http(self, path: str) -> tuple[int, bytes]:
        return get(f"http://127.0.0.1:{self.port}{path}")

    def metric(self, name: str) -> float | None:
        _, body = self.http("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def history(self) -> list[dict[str, Any]]:
        path = self.state / "runs.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def served(registry: RunningRegistry, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def make(window: str = "* * * * *", window_length: str = "10m", policy: str = "") -> Served:
        s = Served(registry, tmp_path, window, window_length, policy or KEEP_LATEST)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            textwrap.dedent(f"""\
            global:
              scrape_interval: 1s
            scrape_configs:
              - job_name: retentiond
                static_configs:
                  - targets: ["127.0.0.1:{target_port}"]
            """)
        )
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path}/tsdb",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for("prometheus to be ready", lambda: get(f"{url}/-/ready")[0] == 200, 60)
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def promql(url: str, query: str) -> float | None:
    status, body = get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result = json.loads(body)["data"]["result"] if status == 200 else []
    return float(result[0]["value"][1]) if result else None


KEEP_LATEST = """
    policies:
      - name: app
        repositories: ["app"]
        keep: {tags: ["latest"]}
"""


def old_and_latest(registry: RunningRegistry) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 2000], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    push_oci_index(registry, "app", "multi", seed="multi")
    set_pushed_at(registry.root, "app", "old", datetime.now(UTC) - timedelta(days=3))
    set_pushed_at(registry.root, "app", "multi", datetime.now(UTC) - timedelta(days=2))


def test_window_runs_maintenance_and_prometheus_sees_the_bytes(
    registry: RunningRegistry,
    served: Callable[..., Served],
    prometheus: Callable[[int], str],
) -> None:
    old_and_latest(registry)
    s = served()
    s.start()
    prom = prometheus(s.port)
    runs = wait_for("a maintenance run", lambda: [r for r in s.history() if r["status"] == "ok"])
    reclaimed = runs[0]["bytes_reclaimed"]
    assert reclaimed > 0
    assert pull_ok(registry, "app", "latest") and not pull_ok(registry, "app", "old")
    value = wait_for(
        "prometheus to scrape the reclaimed bytes",
        lambda: promql(prom, "retentiond_reclaimed_bytes_total") == reclaimed,
        60,
    )
    assert value
    assert s.http("/readyz")[0] == 200
    status = json.loads(s.http("/status")[1])
    assert status["last_run"]["run_id"] == runs[0]["run_id"]
    assert status["next_window"]
    assert s.stop() == 0


def test_bad_policy_edit_is_rejected_and_old_policies_stay(
    registry: RunningRegistry,
    served: Callable[..., Served],
) -> None:
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    s = served(window="0 0 1 1 *", window_length="1m")  # no window during the test
    s.start()
    s.policy_file.write_text(s.policy_file.read_text().replace("keep:", "keeep:"))
    wait_for(
        "the reload to be rejected",
        lambda: s.metric("retentiond_policy_reload_failures_total") == 1,
        30,
    )
    assert f"{s.policy_file}:" in s.logs() and "did you mean" in s.logs()
    assert s.metric("retentiond_policies_loaded") == 1
    # the old policies are still in force: a maintenance now deletes per the old policy
    push_oci_image(registry, "app", "old", layers=[b"old"], seed="old")
    set_pushed_at(registry.root, "app", "old", datetime.now(UTC) - timedelta(days=3))
    s.stop()
    text = s.config.read_text().replace('window: "0 0 1 1 *"', 'window: "* * * * *"')
    s.config.write_text(text.replace("window_length: 1m", "window_length: 10m"))
    bad = s.policy_file.read_text()
    s.policy_file.write_text(bad.replace("keeep:", "keep:"))
    s.start()
    s.policy_file.write_text(bad)  # an invalid edit again, while serving
    wait_for("a maintenance run", lambda: [r for r in s.history() if r["status"] == "ok"])
    assert not tag_dir(registry.root, "app", "old").exists()
    assert pull_ok(registry, "app", "latest")
    s.stop()


def test_sigterm_during_maintenance_leaves_registry_read_write(
    registry: RunningRegistry,
    served: Callable[..., Served],
) -> None:
    old_and_latest(registry)
    s = served()
    s.start(env={"RETENTIOND_PAUSE": "gc=4"})  # tags removed, GC about to run
    journal = s.state / "journal.json"
    wait_for(
        "the run to reach the gc phase",
        lambda: journal.exists() and json.loads(journal.read_text())["phase"] == "gc",
        60,
    )
    assert s.stop() == 0
    # read-write again, kept images pull, a push works
    assert pull_ok(registry, "app", "latest")
    push_oci_image(registry, "app", "pushed-after-sigterm", layers=[b"x"], seed="x")
    assert journal.exists(), "the journal stays for the next start to finish the run"
    # the next start finishes the run: the deleted tag is gone, its blobs are collected
    s.start()
    wait_for(
        "the interrupted run to be finished",
        lambda: [r for r in s.history() if r.get("resumed") and r["status"] == "ok"],
        90,
    )
    assert not pull_ok(registry, "app", "old")
    assert pull_ok(registry, "app", "pushed-after-sigterm")
    s.stop()


def test_restart_never_runs_a_missed_window(
    registry: RunningRegistry, served: Callable[..., Served]
) -> None:
    old_and_latest(registry)
    past = datetime.now(UTC) - timedelta(minutes=5)
    s = served(window=f"{past.minute} {past.hour} * * *", window_length="2m")
    s.start()
    wait_for("a plan", lambda: s.metric("retentiond_planned_tags") == 2, 30)
    time.sleep(3)
    assert s.history() == []
    assert tag_dir(registry.root, "app", "old").exists()
    status = json.loads(s.http("/status")[1])
    next_window = datetime.fromisoformat(status["next_window"].replace("Z", "+00:00"))
    assert next_window > datetime.now(UTC)
    assert s.stop() == 0


def test_sighup_reloads_policies(registry: RunningRegistry, served: Callable[..., Served]) -> None:
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    s = served(window="0 0 1 1 *", window_length="1m")
    s.start()
    wait_for("the policies", lambda: s.metric("retentiond_policies_loaded") == 1, 30)
    stat = s.policy_file.stat()
    s.policy_file.write_text(
        s.policy_file.read_text()
        + ('  - name: more\n    repositories: ["more/**"]\n    keep: {last: 3}\n')
    )
    os.utime(s.policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the watcher sees nothing
    time.sleep(3)
    assert s.metric("retentiond_policies_loaded") == 1
    assert s.proc is not None
    s.proc.send_signal(signal.SIGHUP)
    wait_for("the SIGHUP reload", lambda: s.metric("retentiond_policies_loaded") == 2, 30)
    assert s.stop() == 0


def skipped(s: Served, reason: str) -> float:
    _, body = s.http("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'retentiond_windows_skipped_total{{reason="{reason}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_window_too_short_for_the_run_is_skipped_and_nothing_changes(
    registry: RunningRegistry, served: Callable[..., Served]
) -> None:
    """The daemon counts the blobs from the run's preview (a child process; it reads no tree
    of its own for it) and skips a window the run would not fit: a minute is less than the
    estimate of a first run (60 s besides the GC, retentiond/windows.py)."""
    old_and_latest(registry)
    s = served(window="* * * * *", window_length="1m")
    s.start()
    wait_for("a skipped window", lambda: skipped(s, "not_enough_time") >= 1, 150)
    lines = [json.loads(x) for x in s.logs().splitlines() if x.startswith("{")]
    skips = [x for x in lines if x.get("event") == "maintenance window skipped"]
    assert skips[0]["reason"] == "not_enough_time"
    assert skips[0]["blobs"] > 0 and skips[0]["reclaimable"] > 0
    assert skips[0]["estimate_seconds"] > skips[0]["seconds_left"]
    assert s.history() == [] and not (s.state / "journal.json").exists()
    assert not [x for x in lines if "twin" in x.get("event", "") or "GC" in x.get("event", "")]
    assert tag_dir(registry.root, "app", "old").exists()
    assert pull_ok(registry, "app", "old") and pull_ok(registry, "app", "latest")
    push_oci_image(registry, "app", "pushed-after-the-skip", layers=[b"new"], seed="new")
    assert pull_ok(registry, "app", "pushed-after-the-skip")
    assert s.stop() == 0
