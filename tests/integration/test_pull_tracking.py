"""Pull tracking end to end: a real registry container configured (through its environment,
``REGISTRY_NOTIFICATIONS_ENDPOINTS``) to notify a real ``retentiond serve`` on the Docker
bridge's gateway, pulls by skopeo, docker and plain HTTP, ``retentiond plan --json`` deciding
``keep.pulled_within`` with real waiting, a restart of serve, a burst of 1,000 pulls."""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retentiond.core.pulls import PullTimes
from retentiond.pulls.settings import PullsConfig
from retentiond.pulls.store import pull_counts, read_pull_times
from retentiond.registry import USER_AGENT, Answers, RegistryClient
from tests.harness.images import (
    docker_pull_ok,
    pull_ok,
    push_docker_image,
    push_oci_image,
    push_oci_index,
)
from tests.harness.proc import docker
from tests.harness.redis import bridge_gateway
from tests.harness.registry import RunningRegistry, start_registry, stop_registry
from tests.harness.tree import set_pushed_at

pytestmark = [pytest.mark.registry]
REPO_ROOT = Path(__file__).resolve().parents[2]
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Tracked:
    """A registry that notifies ``retentiond serve`` (started by :meth:`start`) of its pulls."""

    def __init__(self, tmp: Path, version: str, policy: str) -> None:
        self.tmp = tmp
        self.gateway = bridge_gateway()
        self.pulls_port = free_port(self.gateway)
        self.metrics_port = free_port("127.0.0.1")
        self.token = secrets.token_hex(16)
        self.token_file = tmp / "pulls.token"
        self.token_file.write_text(self.token + "\n")
        self.state = tmp / "state"
        (tmp / "policies").mkdir()
        (tmp / "policies" / "p.yaml").write_text(textwrap.dedent(policy))
        self.config = tmp / "retentiond.yaml"
        self.write_config(tmp / "registry", "http://127.0.0.1:5000")
        # the registry is configured with what `retentiond check` prints, the token filled in
        self.endpoints = self.checked_endpoints()
        self.registry: RunningRegistry = start_registry(
            tmp / "registry",
            version=version,
            env={"REGISTRY_NOTIFICATIONS_ENDPOINTS": self.endpoints},
        )
        self.write_config(self.registry.root, self.registry.url)
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[str] | None = None

    def write_config(self, root: Path, url: str) -> None:
        self.config.write_text(
            textwrap.dedent(f"""\
            registry:
              root: {root}
              url: {url}
            runtime:
              kind: none
            policies: [policies/]
            schedule:
              plan_every: 1h
              window: "0 3 1 1 *"
            metrics:
              listen: 127.0.0.1:{self.metrics_port}
            pulls:
              listen: {self.gateway}:{self.pulls_port}
              token_file: pulls.token
            state_dir: {self.state}
            log:
              format: json
            """)
        )

    def checked_endpoints(self) -> str:
        """``REGISTRY_NOTIFICATIONS_ENDPOINTS`` as ``retentiond check`` prints it, with the
        token in place of its placeholder."""
        res = subprocess.run(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), "check"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        prefix = "REGISTRY_NOTIFICATIONS_ENDPOINTS="
        line = next(x for x in res.stdout.splitlines() if x.startswith(prefix))
        value = line.removeprefix(prefix).strip("'")
        placeholder = f"<the token in {self.token_file}>"
        assert placeholder in value and self.token not in res.stdout
        endpoints = json.loads(value.replace(placeholder, self.token))
        assert endpoints[0]["url"] == f"http://{self.gateway}:{self.pulls_port}/events"
        endpoints[0]["backoff"] = "500ms"  # the restart test: a retry comes quickly
        return json.dumps(endpoints)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), "serve"],
            cwd=REPO_ROOT,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "a"),  # noqa: SIM115
        )
        wait_for("serve's pull listener", lambda: answers(self.gateway, self.pulls_port), 30)
        wait_for("serve's metrics", lambda: self.metric("retentiond_pull_events_total") is not None)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        stop_registry(self.registry)

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as response:
                body = response.read().decode()
        except OSError:
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def counts(self) -> dict[str, int]:
        """digest -> pull events recorded (every repository here is "app")."""
        if not (self.state / "pulls.sqlite").exists():
            return {}
        return {digest: n for (_, digest), n in pull_counts(self.state).items()}

    def times(self) -> PullTimes:
        found = read_pull_times(PullsConfig(listen="x:1"), self.state)
        assert found is not None
        return found

    def head(self, ref: str) -> None:
        request = urllib.request.Request(
            f"{self.registry.url}/v2/app/manifests/{ref}", method="HEAD", headers={"Accept": ACCEPT}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def plan(self) -> dict[str, Any]:
        res = subprocess.run(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), "plan", "--json"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        doc: dict[str, Any] = json.loads(res.stdout)
        return doc

    def post(self, body: bytes, authorization: str | None) -> int:
        headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        request = urllib.request.Request(
            f"http://{self.gateway}:{self.pulls_port}/events", body, headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@pytest.fixture
def tracked(
    docker_ready: None, registry_version: str, tmp_path: Path
) -> Iterator[Callable[[str], Tracked]]:
    made: list[Tracked] = []

    def make(policy: str = "policies: []\n") -> Tracked:
        t = Tracked(tmp_path, registry_version, policy)
        made.append(t)
        return t

    yield make
    for t in made:
        if t.proc is not None:
            print(t.log.read_text()[-3000:])
        t.close()


@pytest.mark.both_registries
def test_pulls_by_skopeo_docker_and_http_are_recorded_not_blobs_nor_retentiond(
    tracked: Callable[[str], Tracked],
) -> None:
    t = tracked("policies: []\n")
    reg = t.registry
    by_skopeo = push_oci_image(reg, "app", "skopeo", layers=[b"skopeo"], seed="skopeo")
    by_docker = push_docker_image(reg, "app", "docker", layers=[b"docker"], seed="docker")
    index, children = push_oci_index(reg, "app", "multi", seed="multi")
    own = push_oci_image(reg, "app", "own", layers=[b"own"], seed="own")
    untouched = push_oci_image(reg, "app", "untouched", layers=[b"untouched"], seed="untouched")
    t.start()

    assert pull_ok(reg, "app", "skopeo")
    assert docker_pull_ok(reg, "app", "docker")
    assert pull_ok(reg, "app", children[1])  # a platform manifest, by digest
    with RegistryClient(reg.url) as client:  # what verification sends: retentiond's User-Agent
        assert client.tag_status("app", "own") == 200
        assert client.check_manifest("app", "own", own, Answers()) == ""
    t.head("untouched")  # a marker: the registry notifies in order
    recorded = wait_for(
        "the pulls to be recorded",
        lambda: (
            (c := t.counts()) and {by_skopeo, by_docker, children[1], untouched} <= c.keys() and c
        ),
    )
    # blobs (skopeo and docker fetched every layer and config) and retentiond's own requests
    # are not recorded; nor is the index, pulled by nobody (its child was)
    assert set(recorded) == {by_skopeo, by_docker, children[1], untouched}
    assert own not in recorded and index not in recorded
    assert t.metric("retentiond_pull_events_total") == sum(recorded.values())

    # the index counts as pulled when its child was: resolved at plan time
    times = t.times()
    assert times.of("app")[children[1]] > times.since

    # the endpoint wants the registry's token
    envelope = json.dumps({"events": []}).encode()
    assert t.post(envelope, None) == 401
    assert t.post(envelope, "Bearer wrong") == 401
    assert t.post(envelope, f"Bearer {t.token}") == 200
    assert t.post(b"not json", f"Bearer {t.token}") == 400


KEEP_PULLED = """
    policies:
      - name: pulled
        repositories: ["app"]
        keep: {pulled_within: 3s}
"""


def test_pulled_within_decides_with_real_waiting_and_pull_times_survive_a_restart(
    tracked: Callable[[str], Tracked],
) -> None:
    t = tracked(KEEP_PULLED)
    reg = t.registry
    digests = {
        name: push_oci_image(reg, "app", name, layers=[name.encode()], seed=name)
        for name in ("a", "b", "c")
    }
    index, children = push_oci_index(reg, "app", "multi", seed="multi")
    now = datetime.now(UTC)
    for age, name in enumerate(("c", "multi", "b", "a")):  # c is the newest: never deleted
        set_pushed_at(reg.root, "app", name, now - timedelta(hours=1 + age))
    t.start()
    since = t.times().since

    # tracking has just begun: every manifest counts as pulled now
    assert t.plan()["tags"] == []

    time.sleep(3.5)
    t.head("b")
    t.head(children[0])  # only a child of the index
    wait_for("the pulls", lambda: {digests["b"], children[0]} <= t.counts().keys())
    plan = t.plan()
    deleted = {entry["tag"]: entry for entry in plan["tags"]}
    assert set(deleted) == {"a"}
    assert deleted["a"]["reason"] == "not pulled within 3s"
    assert deleted["a"]["pulled_at"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")

    # a restart of serve keeps the pull times and when tracking began
    before = t.times()
    t.stop()
    t.start()
    after = t.times()
    assert after == before
    assert after.since == since

    # once b's pull is older than 3s, b goes too, with its recorded pull time (not `since`)
    wait_for(
        "b's pull to age",
        lambda: datetime.now(UTC) - before.of("app")[digests["b"]] > timedelta(seconds=3.2),
        10,
    )
    deleted = {entry["tag"]: entry for entry in t.plan()["tags"]}
    assert set(deleted) == {"a", "b", "multi"}
    pulled_b = before.of("app")[digests["b"]].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert deleted["b"]["pulled_at"] == pulled_b
    assert deleted["multi"]["pulled_at"] == before.of("app")[children[0]].strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert index not in before.of("app")

    # a maintenance decides the same on its frozen tree; its verification's pulls (retentiond's
    # User-Agent) are not recorded as uses
    counts = t.counts()
    res = subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(t.config), "apply", "--yes"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (reg.v2 / "repositories/app/_manifests/tags").iterdir()} == {"c"}
    access = docker("logs", reg.name, check=False)
    asked = [
        line
        for line in (access.stdout + access.stderr).splitlines()
        if f"/v2/app/manifests/{digests['c']}" in line or "/v2/app/manifests/c " in line
    ]
    assert any(USER_AGENT in line for line in asked), asked  # verification asked for c
    marker = push_oci_image(reg, "app", "marker", layers=[b"marker"], seed="marker")
    t.head("marker")  # the registry notifies in order: all it sent before has arrived
    wait_for("the marker", lambda: t.counts().get(marker))
    assert {d: n for d, n in t.counts().items() if d != marker} == counts
    assert digests["c"] not in counts  # never pulled but by retentiond's verification


def test_a_burst_of_1000_pulls_is_recorded_without_loss(
    tracked: Callable[[str], Tracked],
) -> None:
    t = tracked("policies: []\n")
    reg = t.registry
    digests = [
        push_oci_image(reg, "app", f"t{n}", layers=[b"burst"], seed=f"burst-{n}") for n in range(10)
    ]
    t.start()
    per_thread = 125

    def pull_many(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        try:
            for n in range(per_thread):
                conn.request(
                    "HEAD", f"/v2/app/manifests/t{(worker + n) % 10}", headers={"Accept": ACCEPT}
                )
                response = conn.getresponse()
                response.read()
                assert response.status == 200
        finally:
            conn.close()

    threads = [threading.Thread(target=pull_many, args=(w,)) for w in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for("1000 pulls recorded", lambda: sum(t.counts().values()) == 1000, 120)
    print(f"1000 pulls recorded {time.monotonic() - started:.1f}s after the burst began")
    counts = t.counts()
    assert set(counts) == set(digests)
    assert sum(counts.values()) == 1000
    assert t.metric("retentiond_pull_events_total") == 1000
    time.sleep(1)  # nothing more arrives: no event was counted twice
    assert sum(t.counts().values()) == 1000
