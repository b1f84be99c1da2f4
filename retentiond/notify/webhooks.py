"""The webhook adapter: POST a run's summary to every ``notify.webhooks`` entry.

Every webhook is sent in its own thread, all at once, and the run waits for them at most the
longest ``timeout`` (plus a second): a receiver that accepts the connection and then drips its
answer cannot hold the run. A failure (no connection, timeout, an answer other than 2xx, an
unreadable ``headers_file``) is logged with the webhook's index and its URL's scheme and host
only (a Slack or Mattermost webhook URL is itself a secret; header values are never logged) and
reported to ``on_failure`` (the daemon counts it in ``retentiond_notify_failures_total``).
Nothing here raises into the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from retentiond import __version__
from retentiond.logs import get_logger
from retentiond.notify.payload import webhook_payload
from retentiond.notify.settings import HeadersFileError, Webhook, read_headers_file
from retentiond.run_records import RunRecord

USER_AGENT = f"retentiond/{__version__} (webhook)"
#: added to the longest timeout before the run stops waiting (connection setup, thread start)
GRACE_SECONDS = 1.0


def public_url(url: str) -> str:
    """What the log says of a webhook URL: scheme and host, no path, query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass
class Delivery:
    """How sending to one webhook ended: ``error`` is None when it answered 2xx."""

    index: int
    webhook: Webhook
    error: str | None = None
    status: int | None = None
    seconds: float = 0.0


def send(webhook: Webhook, body: dict[str, Any]) -> tuple[int | None, str | None]:
    """POST ``body`` to one webhook: (HTTP status or None, error or None). Never raises."""
    headers = dict(webhook.headers)
    if webhook.headers_file is not None:
        try:
            headers.update(read_headers_file(webhook.headers_file))
        except HeadersFileError as exc:
            return None, f"headers_file {exc}"
    headers["User-Agent"] = USER_AGENT
    try:
        response = httpx.post(
            webhook.url,
            json=body,
            headers=headers,
            timeout=webhook.timeout.total_seconds(),
            follow_redirects=False,
        )
    except httpx.TimeoutException as exc:
        return None, f"no answer within {webhook.timeout.total_seconds():g}s ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except (OSError, ValueError) as exc:  # e.g. an invalid header value built at run time
        return None, f"{type(exc).__name__}: {exc}"
    if not 200 <= response.status_code < 300:
        return response.status_code, f"answered HTTP {response.status_code}"
    return response.status_code, None


class WebhookNotifier:
    """Call it with a finished run's record; it returns once every webhook answered or timed out.

    ``on_failure`` is called once per failed webhook (in the caller's thread).
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        registry_url: str,
        on_failure: Callable[[], None] | None = None,
        sender: Callable[[Webhook, dict[str, Any]], tuple[int | None, str | None]] = send,
    ) -> None:
        self.webhooks = tuple(webhooks)
        self.registry_url = registry_url
        self.on_failure = on_failure
        self.sender = sender
        self.log = get_logger(job="notify")

    def __call__(self, record: RunRecord) -> list[Delivery]:
        if not self.webhooks:
            return []
        body = webhook_payload(record, registry_url=self.registry_url)
        started = time.monotonic()
        slots: list[Delivery | None] = [None] * len(self.webhooks)
        threads = [
            threading.Thread(
                target=self._deliver, args=(slots, i, webhook, body), name="webhook", daemon=True
            )
            for i, webhook in enumerate(self.webhooks)
        ]
        for thread in threads:
            thread.start()
        longest = max(w.timeout.total_seconds() for w in self.webhooks)
        deadline = started + longest + GRACE_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        deliveries = []
        for i, webhook in enumerate(self.webhooks):
            # a thread still running goes on in the background; its answer is not waited for
            delivery = slots[i] or Delivery(
                i, webhook, "no answer in time", seconds=round(time.monotonic() - started, 3)
            )
            self._report(record, delivery)
            deliveries.append(delivery)
        return deliveries

    def _deliver(
        self, slots: list[Delivery | None], index: int, webhook: Webhook, body: dict[str, Any]
    ) -> None:
        started = time.monotonic()
        try:
            status, error = self.sender(webhook, body)
        except Exception as exc:  # a bug in a sender must not end the run
            status, error = None, f"{type(exc).__name__}: {exc}"
        slots[index] = Delivery(index, webhook, error, status, round(time.monotonic() - started, 3))

    def _report(self, record: RunRecord, delivery: Delivery) -> None:
        fields = {
            "run_id": record.run_id,
            "webhook": delivery.index,
            "url": public_url(delivery.webhook.url),
            "seconds": delivery.seconds,
        }
        if delivery.error is None:
            self.log.info("webhook notified", status=delivery.status, **fields)
            return
        self.log.warning(
            "webhook failed; the run is not affected",
            error=delivery.error,
            status=delivery.status,
            **fields,
        )
        if self.on_failure is not None:
            try:
                self.on_failure()
            except Exception:
                self.log.exception("counting a webhook failure failed (a bug; please report it)")
