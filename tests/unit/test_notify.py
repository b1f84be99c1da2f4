"""notify.webhooks: the JSON summary of a run, the config section, and the adapter against a
real HTTP receiver on 127.0.0.1 (answering 2xx, 500, slowly, or not listening at all)."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import timedelta
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from retentiond.config import check_config, load_config
from retentiond.notify.payload import MAX_LISTED, duration_seconds, summary_text, webhook_payload
from retentiond.notify.settings import (
    DEFAULT_TIMEOUT,
    HeadersFileError,
    NotifyConfig,
    Webhook,
    parse_headers_file,
)
from retentiond.notify.webhooks import USER_AGENT, WebhookNotifier, public_url
from retentiond.run_records import RunRecord, RunStatus
from tests.harness.webhook_receiver import closed_port, webhook_receiver

RECORD = RunRecord(
    run_id="20261128T030000Z-abcdef",
    status=RunStatus.OK,
    started_at="2026-11-28T03:00:00Z",
    finished_at="2026-11-28T03:03:12Z",
    gc_mode="readonly",
    plan={"bytes_reclaimed": 5 * 1024**3},
    removed={"tags": 130, "manifests": 97, "repositories": 1},
    removed_by_policy={"tags": {"ci": 130}, "manifests": {"ci": 97}},
    repositories_removed=["ci/old"],
    bytes_reclaimed=5 * 1024**3,
    blobs_deleted=412,
    durations={"plan": 0.4, "delete": 0.1, "gc": 150.0, "restart": 3.0, "verify": 1.5},
    read_only_seconds=160.5,
    unavailable_seconds=2.25,
    gc_ran=True,
)


def record(**changes: Any) -> RunRecord:
    return dataclasses.replace(RECORD, **changes)


# ---------------------------------------------------------------- the payload


def test_the_payload_carries_the_run_records_numbers() -> None:
    body = webhook_payload(RECORD, registry_url="http://registry:5000")
    assert body == {
        "text": "retentiond: run 20261128T030000Z-abcdef ok: 130 tags deleted,"
        " 5.0 GiB reclaimed (3m 12s)",
        "source": "retentiond",
        "event": "maintenance",
        "version": 1,
        "registry": "http://registry:5000",
        "run_id": "20261128T030000Z-abcdef",
        "status": "ok",
        "ok": True,
        "resumed": False,
        "started_at": "2026-11-28T03:00:00Z",
        "finished_at": "2026-11-28T03:03:12Z",
        "duration_seconds": 192.0,
        "tags_deleted": 130,
        "manifests_unlinked": 97,
        "repositories_removed": 1,
        "blobs_deleted": 412,
        "bytes_reclaimed": 5 * 1024**3,
        "bytes_planned": 5 * 1024**3,
        "gc_ran": True,
        "held_until": None,
        "read_only_seconds": 160.5,
        "unavailable_seconds": 2.25,
        "broken_tags": 0,
        "broken": [],
        "errors": [],
    }
    json.dumps(body)  # all of it is JSON


def test_a_failed_run_says_what_broke_and_why() -> None:
    broken = [f"app:v{i} missing blob sha256:{i:064x}" for i in range(MAX_LISTED + 5)]
    failed = record(
        status=RunStatus.FAILED,
        broken=broken,
        errors=["verification found <25> broken tags & more " + "x" * 400],
    )
    text = summary_text(failed)
    assert text.startswith("retentiond: run 20261128T030000Z-abcdef failed: 130 tags deleted")
    assert "; 25 BROKEN tags; error: verification found &lt;25&gt; broken tags &amp; more" in text
    assert len(text) < 500 and text.endswith("…")
    body = webhook_payload(failed, registry_url="http://r")
    assert body["ok"] is False and body["broken_tags"] == 25
    assert body["broken"] == broken[:MAX_LISTED]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"status": RunStatus.ROLLED_BACK, "resumed": True},
            "retentiond: run 20261128T030000Z-abcdef rolled-back (an interrupted run, ended by"
            " the next apply or serve): nothing removed, everything put back (3m 12s)",
        ),
        (
            {"gc_ran": False, "held_until": "2026-11-29T03:00:00Z", "removed": {"tags": 1}},
            "retentiond: run 20261128T030000Z-abcdef ok: 1 tag deleted, GC held until"
            " 2026-11-29T03:00:00Z (undo possible) (3m 12s)",
        ),
        (
            {"gc_ran": False, "started_at": None},
            "retentiond: run 20261128T030000Z-abcdef ok: 130 tags deleted, GC not run",
        ),
        (
            {"finished_at": "2026-11-28T03:00:00.250000Z"},
            "retentiond: run 20261128T030000Z-abcdef ok: 130 tags deleted, 5.0 GiB reclaimed"
            " (0.2s)",
        ),
        (
            {"finished_at": "2026-11-28T05:05:00Z"},
            "retentiond: run 20261128T030000Z-abcdef ok: 130 tags deleted, 5.0 GiB reclaimed"
            " (2h 05m)",
        ),
    ],
)
def test_summary_text(changes: dict[str, Any], expected: str) -> None:
    assert summary_text(record(**changes)) == expected


def test_duration_is_none_when_a_time_is_missing_or_unreadable() -> None:
    assert duration_seconds(record(started_at=None)) is None
    assert duration_seconds(record(started_at="yesterday")) is None
    assert duration_seconds(record(started_at="2026-11-28T03:00:00")) is None  # naive vs aware
    assert duration_seconds(RECORD) == 192.0


# ---------------------------------------------------------------- the config section


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retentiond.yaml"
    path.write_text(dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    return [str(p).removeprefix(f"{path}:") for p in check_config(path).problems]


def test_webhooks_are_read_with_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook.headers").write_text("# token\nAuthorization: Bearer s3cret\n")
    config = load_config(
        write(
            tmp_path,
            """\
            notify:
              webhooks:
                - url: https://chat.example.com/hooks/abc
                - url: http://127.0.0.1:8080/retentiond
                  headers: {X-Source: retentiond, X-Empty: ""}
                  headers_file: secrets/hook.headers
                  timeout: 2s
            """,
        )
    )
    assert config.notify == NotifyConfig(
        (
            Webhook("https://chat.example.com/hooks/abc"),
            Webhook(
                "http://127.0.0.1:8080/retentiond",
                (("X-Source", "retentiond"), ("X-Empty", "")),
                tmp_path / "secrets" / "hook.headers",
                timedelta(seconds=2),
            ),
        )
    )
    assert config.notify.webhooks[0].timeout == DEFAULT_TIMEOUT == timedelta(seconds=10)


@pytest.mark.parametrize(
    "text", ["", "notify:\n", "notify: {webhooks: []}\n", "notify: {webhooks: null}\n"]
)
def test_no_webhooks(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text)).notify == NotifyConfig()


def test_every_webhook_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "bad.headers").write_text("Authorization Bearer x\n")
    assert problems(
        tmp_path,
        """\
        notify:
          webhooks:
            - url: ftp://chat.example.com/hook
            - headers: {X-A: b}
            - url: https://chat.example.com/hook
              headers: [X-A]
            - url: https://chat.example.com/hook
              headers: {X-Port: 8080, Bad Name: x, Content-Type: text/plain}
              timeout: 5m
            - url: "http://[::1"
              timeout: 10
              retries: 3
            - https://chat.example.com/hook
            - url: http:///no-host
              headers_file: bad.headers
          other: 1
        """,
    ) == [
        "3:12: notify.webhooks[0].url must be an http or https URL, like"
        " https://chat.example.com/hooks/abc; got 'ftp://chat.example.com/hook'",
        "4:7: notify.webhooks[1]: url is required, e.g. url: https://chat.example.com/hooks/abc",
        "6:16: notify.webhooks[2].headers must be a mapping of header names to strings, got a list",
        "8:25: notify.webhooks[3].headers.X-Port must be a string, got 8080; quote it",
        "8:31: notify.webhooks[3].headers: 'Bad Name' is not a valid HTTP header name"
        " (letters, digits, '-')",
        "8:44: notify.webhooks[3].headers: header Content-Type is set by retentiond; remove it",
        "9:16: notify.webhooks[3].timeout must be at most 60s: the run waits for its webhooks",
        "10:12: notify.webhooks[4].url is not a URL (Invalid IPv6 URL); got 'http://[::1'",
        "11:16: notify.webhooks[4].timeout: 10 has no unit; write e.g. 10s, 10m or 10d",
        "12:7: unknown key 'retries' in notify.webhooks[4]; expected one of: url, headers,"
        " headers_file, timeout",
        "13:7: notify.webhooks[5] must be a mapping; write - url: 'https://chat.example.com/hook'",
        "14:12: notify.webhooks[6].url must be an http or https URL, like"
        " https://chat.example.com/hooks/abc; got 'http:///no-host'",
        f"15:21: notify.webhooks[6].headers_file: {tmp_path / 'bad.headers'}, line 1: not a"
        " 'Name: value' line; write one header a line, as 'Name: value'",
        "16:3: unknown key 'other' in notify; expected one of: webhooks",
    ]


def test_webhooks_must_be_a_list(tmp_path: Path) -> None:
    assert problems(tmp_path, "notify:\n  webhooks: {url: http://x}\n") == [
        "2:13: notify.webhooks must be a list of {url: ..., headers: {...}}, got a mapping"
    ]


def test_a_missing_headers_file_is_a_warning(tmp_path: Path) -> None:
    """``check`` may run where the secret is not installed (the policies' CI)."""
    path = write(
        tmp_path,
        "notify:\n  webhooks:\n    - url: http://x/h\n      headers_file: nowhere.headers\n",
    )
    result = check_config(path)
    assert result.problems == ()
    assert [str(w).removeprefix(f"{path}:") for w in result.warnings] == [
        f"4:21: notify.webhooks[0].headers_file: {tmp_path / 'nowhere.headers'}: cannot read"
        " headers file: No such file or directory; this webhook fails until the file can be read"
    ]


def test_headers_file_format() -> None:
    assert parse_headers_file("\n# c\nAuthorization: Bearer a:b \n X-B:c\n") == (
        ("Authorization", "Bearer a:b"),
        ("X-B", "c"),
    )
    with pytest.raises(HeadersFileError, match=r"^line 2: not a 'Name: value' line$"):
        parse_headers_file("A: b\nBearer secret\n")  # the line itself is never quoted
    with pytest.raises(HeadersFileError, match="set by retentiond"):
        parse_headers_file("Host: evil\n")


# ---------------------------------------------------------------- the adapter


def test_public_url_hides_path_query_and_credentials() -> None:
    assert public_url("https://u:p@hooks.slack.com/services/T0/B0/XXX?x=1") == (
        "https://hooks.slack.com"
    )
    assert public_url("http://[::1]:8080/h") == "http://[::1]:8080"


def test_every_webhook_gets_the_summary_and_failures_are_counted(tmp_path: Path) -> None:
    headers_file = tmp_path / "h"
    headers_file.write_text("Authorization: Bearer from-file\n")
    failures: list[int] = []
    with webhook_receiver() as ok, webhook_receiver(status=500) as broken:
        notifier = WebhookNotifier(
            [
                Webhook(ok.url("/a"), (("X-Source", "test"),), headers_file),
                Webhook(broken.url("/b")),
                Webhook(f"http://127.0.0.1:{closed_port()}/c", timeout=timedelta(seconds=2)),
                Webhook(ok.url("/d"), headers_file=tmp_path / "missing"),
            ],
            registry_url="http://registry:5000",
            on_failure=lambda: failures.append(1),
        )
        deliveries = notifier(RECORD)
        received = ok.requests()
    assert [(d.index, d.status, d.error) for d in deliveries] == [
        (0, 200, None),
        (1, 500, "answered HTTP 500"),
        (2, None, deliveries[2].error),
        (3, None, deliveries[3].error),
    ]
    assert deliveries[2].error is not None and "ConnectError" in deliveries[2].error
    assert deliveries[3].error is not None and "cannot read headers file" in deliveries[3].error
    assert len(failures) == 3
    assert [r.path for r in received] == ["/a"]  # /d was never sent: its secret was missing
    request = received[0]
    assert request.body == webhook_payload(RECORD, registry_url="http://registry:5000")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer from-file"
    assert request.headers["X-Source"] == "test"
    assert request.headers["User-Agent"] == USER_AGENT


def test_a_slow_webhook_holds_the_run_no_longer_than_its_timeout() -> None:
    failures: list[int] = []
    with webhook_receiver(delay=5) as slow, webhook_receiver() as fast:
        notifier = WebhookNotifier(
            [Webhook(slow.url(), timeout=timedelta(seconds=1)), Webhook(fast.url())],
            registry_url="http://r",
            on_failure=lambda: failures.append(1),
        )
        started = time.monotonic()
        deliveries = notifier(RECORD)
        elapsed = time.monotonic() - started
        assert len(fast.requests()) == 1
    assert elapsed < 3, elapsed  # 1s timeout (+1s grace at most), not the receiver's 5s
    assert deliveries[0].error is not None and deliveries[0].error.startswith("no answer within 1s")
    assert deliveries[1].error is None
    assert failures == [1]


def test_a_receiver_that_never_finishes_is_abandoned_at_the_deadline() -> None:
    """httpx's timeout is per read: a sender that blocks longer is not waited for."""

    def stuck(webhook: Webhook, body: dict[str, Any]) -> tuple[int | None, str | None]:
        time.sleep(3)
        return 200, None

    notifier = WebhookNotifier(
        [Webhook("http://unused", timeout=timedelta(seconds=0.5))],
        registry_url="http://r",
        sender=stuck,
    )
    started = time.monotonic()
    deliveries = notifier(RECORD)
    assert time.monotonic() - started < 2.5
    assert deliveries[0].error == "no answer in time"


def test_no_webhooks_sends_nothing() -> None:
    assert WebhookNotifier([], registry_url="http://r")(RECORD) == []
