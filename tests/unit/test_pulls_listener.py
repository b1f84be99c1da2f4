"""The notification endpoint over real HTTP on loopback, its SQLite store, and the envelope
filter. The registry's own envelopes are in tests/integration/test_pull_tracking.py."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retentiond.errors import RetentiondError, StorageError
from retentiond.pulls.events import EnvelopeError, Pull, manifest_pulls
from retentiond.pulls.listener import PullListener
from retentiond.pulls.settings import PullsConfig
from retentiond.pulls.store import PullStore, pull_counts, read_pull_times
from retentiond.registry import USER_AGENT

TOKEN = "s3cret-token"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()


def event(
    action: str = "pull",
    repository: str = "app",
    digest: str = DIGEST,
    media_type: str = MANIFEST,
    url: str | None = None,
    agent: str = "docker/20.10.24",
    timestamp: str = "2026-12-01T11:00:00.123456789Z",
) -> dict[str, Any]:
    kind = "manifests" if media_type == MANIFEST else "blobs"
    return {
        "id": "x",
        "timestamp": timestamp,
        "action": action,
        "target": {
            "mediaType": media_type,
            "repository": repository,
            "digest": digest,
            "url": url or f"http://registry:5000/v2/{repository}/{kind}/{digest}",
        },
        "request": {"method": "GET", "useragent": agent},
    }


def test_only_manifest_pulls_by_others_are_kept_at_their_time() -> None:
    found = manifest_pulls(
        {
            "events": [
                event(),
                event(action="push"),
                event(media_type="application/octet-stream"),
                event(media_type="application/vnd.oci.image.layer.v1.tar+gzip"),
                event(agent=USER_AGENT),
                event(digest="sha256:short"),
                event(repository=""),
                event(timestamp="yesterday", digest=OTHER),
                event(timestamp="2030-01-01T00:00:00Z", digest=OTHER),  # in the future
                "not an event",
            ]
        },
        NOW,
    )
    at = datetime(2026, 12, 1, 11, 0, 0, 123456, tzinfo=UTC).timestamp()
    unreadable_or_future = Pull("app", OTHER, NOW)  # at the time it arrived
    assert list(found.pulls) == [Pull("app", DIGEST, at), *[unreadable_or_future] * 2]
    assert found.ignored == 7


@pytest.mark.parametrize("envelope", [[], {"events": {}}, {"other": []}, "x", None])
def test_what_is_not_an_envelope_is_refused(envelope: object) -> None:
    with pytest.raises(EnvelopeError, match="events"):
        manifest_pulls(envelope, NOW)


def test_the_store_keeps_the_latest_pull_and_counts_them(tmp_path: Path) -> None:
    began = datetime(2026, 11, 1, tzinfo=UTC)
    store = PullStore(tmp_path, began)
    store.record({("app", DIGEST): (NOW, 3)})
    store.record({("app", DIGEST): (NOW - 60, 2), ("app", OTHER): (NOW - 5, 1)})
    store.close()
    again = PullStore(tmp_path, datetime(2026, 12, 2, tzinfo=UTC))  # a restart
    assert again.since == began
    again.close()
    times = read_pull_times(PullsConfig(listen="127.0.0.1:1"), tmp_path)
    assert times is not None and times.since == began
    assert times.of("app") == {
        DIGEST: datetime.fromtimestamp(NOW, UTC),
        OTHER: datetime.fromtimestamp(NOW - 5, UTC),
    }
    assert pull_counts(tmp_path) == {("app", DIGEST): 5, ("app", OTHER): 1}
    assert read_pull_times(PullsConfig(), tmp_path) is None  # tracking off
    assert read_pull_times(PullsConfig(listen="127.0.0.1:1"), tmp_path / "none") is None


def test_a_damaged_store_is_an_error_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "pulls.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError, match=r"pulls\.sqlite"):
        read_pull_times(PullsConfig(listen="127.0.0.1:1"), tmp_path)
    with pytest.raises(StorageError, match=r"moving it away"):
        PullStore(tmp_path, datetime.now(UTC))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[PullListener]:
    received: list[int] = []
    made = PullListener(
        "127.0.0.1:0",
        ("127.0.0.1", 0),
        TOKEN,
        tmp_path,
        on_pulls=received.append,
        batch_seconds=0.2,
        batch_events=50,
        busy_timeout=0.1,
    )
    made.start()
    yield made
    made.stop()


def post(
    listener: PullListener, body: bytes, token: str | None = TOKEN, path: str = "/events"
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{listener.port}{path}", body, headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def test_the_endpoint_wants_the_token_and_an_envelope(listener: PullListener) -> None:
    body = envelope(event())
    assert post(listener, body, token=None) == 401
    assert post(listener, body, token="wrong") == 401
    assert post(listener, body, path="/other") == 404
    assert post(listener, b"{", token=TOKEN) == 400
    assert post(listener, b"[]", token=TOKEN) == 400
    assert post(listener, body) == 200
    listener.stop()  # writes what is queued
    assert pull_counts(listener.state_dir) == {("app", DIGEST): 1}


def test_a_burst_from_many_clients_is_written_whole(listener: PullListener) -> None:
    def send(worker: int) -> None:
        for n in range(50):
            digest = "sha256:" + f"{worker * 1000 + n % 5:064x}"
            assert post(listener, envelope(event(digest=digest), event(digest=digest))) == 200

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 10
    while listener.written < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.written == 400  # written by the batches, before any stop
    counts = pull_counts(listener.state_dir)
    assert len(counts) == 20 and sum(counts.values()) == 400


def test_a_taken_address_is_an_error_naming_the_setting(
    listener: PullListener, tmp_path: Path
) -> None:
    other = PullListener(
        f"127.0.0.1:{listener.port}", ("127.0.0.1", listener.port), TOKEN, tmp_path / "b"
    )
    with pytest.raises(RetentiondError, match=r"pulls\.listen"):
        other.start()


def test_a_batch_the_store_refuses_is_kept_and_written_later(listener: PullListener) -> None:
    path = listener.state_dir / "pulls.sqlite"
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer's transactions fail while this lasts
    try:
        assert post(listener, envelope(event())) == 200
        time.sleep(0.8)  # a few batch periods, each failing after busy_timeout
        assert listener.written == 0
    finally:
        blocker.rollback()
        blocker.close()
    deadline = time.monotonic() + 10
    while listener.written < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pull_counts(listener.state_dir) == {("app", DIGEST): 1}
