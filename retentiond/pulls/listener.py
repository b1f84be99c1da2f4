"""``POST /events``: the registry's notifications, received by ``serve`` on ``pulls.listen``.

The handler checks the bearer token, keeps the manifest pulls of the envelope
(:mod:`~retentiond.pulls.events`), puts them on a queue and answers 200 at once; one writer
thread drains the queue into the store (:class:`~retentiond.pulls.store.PullStore`) in batches,
every :data:`BATCH_SECONDS` or :data:`BATCH_EVENTS` events, whichever comes first, coalescing
the pulls of one manifest into one row. A batch the store refuses (disk full, say) is kept and
tried again with the next one. Stopping the listener writes what is queued.

The registry keeps its notification queue in memory and retries a failed POST with backoff,
so what ``serve`` misses while it is down is sent again when it answers, unless the registry
restarts in between (``registry-internals.md``, "Notifications").
"""

from __future__ import annotations

import hmac
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retentiond.config import Config, split_listen
from retentiond.errors import RetentiondError
from retentiond.logs import get_logger
from retentiond.pulls.events import EnvelopeError, Pull, manifest_pulls
from retentiond.pulls.settings import TokenError, read_token
from retentiond.pulls.store import PullStore

BATCH_SECONDS = 0.5
BATCH_EVENTS = 500
#: the largest envelope accepted (the registry sends one event per envelope by default)
MAX_BODY = 8 << 20
PATH = "/events"
#: a connection that sends nothing for this long is closed (the registry opens a new one)
IDLE_SECONDS = 120

_STOP = None  # the queue's last item


class PullListener:
    """The notification endpoint and its writer thread; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        listen: str,
        address: tuple[str, int],
        token: str,
        state_dir: Path,
        *,
        on_pulls: Callable[[int], None] = lambda n: None,
        batch_seconds: float = BATCH_SECONDS,
        batch_events: int = BATCH_EVENTS,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.listen = listen
        self.address = address
        self._expected = f"Bearer {token}".encode()
        self.state_dir = state_dir
        self.on_pulls = on_pulls
        self.batch_seconds = batch_seconds
        self.batch_events = batch_events
        self.busy_timeout = busy_timeout
        self.clock = clock
        self.log = get_logger(job="pulls")
        self._queue: queue.SimpleQueue[Sequence[Pull] | None] = queue.SimpleQueue()
        self._store: PullStore | None = None
        self._http: ThreadingHTTPServer | None = None
        self._writer: threading.Thread | None = None
        #: pull events written to the store so far
        self.written = 0

    @property
    def port(self) -> int:
        assert self._http is not None
        return int(self._http.server_address[1])

    def start(self) -> None:
        """Open the store (recording when tracking began, the first time), listen, and start
        the writer. RetentiondError when the store cannot be opened or the address is taken."""
        self._store = PullStore(
            self.state_dir,
            datetime.fromtimestamp(self.clock(), UTC),
            busy_timeout=self.busy_timeout,
        )
        try:
            self._http = ThreadingHTTPServer(self.address, self._handler())
        except OSError as exc:
            self._store.close()
            raise RetentiondError(
                f"cannot listen on pulls.listen {self.listen}: {exc.strerror}; change pulls.listen"
            ) from exc
        self._http.daemon_threads = True
        self._writer = threading.Thread(target=self._drain, name="pull-writer", daemon=True)
        self._writer.start()
        threading.Thread(target=self._http.serve_forever, name="pulls-http", daemon=True).start()
        self.log.info(
            "listening for the registry's notifications",
            listen=self.listen,
            path=PATH,
            tracking_since=self._store.since.isoformat(),
        )

    def stop(self) -> None:
        """Stop answering, write what is queued, close the store."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
        if self._store is not None:
            self._store.close()

    # -- the writer ---------------------------------------------------------------------------

    def _drain(self) -> None:
        pending: dict[tuple[str, str], tuple[float, int]] = {}
        events = 0
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is _STOP:
                self._flush(pending, events)
                return
            for pull in item:
                key = (pull.repository, pull.digest)
                last, count = pending.get(key, (pull.at, 0))
                pending[key] = (max(last, pull.at), count + 1)
            if item and events == 0:
                deadline = time.monotonic() + self.batch_seconds
            events += len(item)
            if pending and (events >= self.batch_events or time.monotonic() >= deadline):
                if self._flush(pending, events):
                    pending, events = {}, 0
                else:  # kept; tried again a batch period later
                    deadline = time.monotonic() + self.batch_seconds

    def _flush(self, pending: dict[tuple[str, str], tuple[float, int]], events: int) -> bool:
        if not pending:
            return True
        assert self._store is not None
        try:
            self._store.record(pending)
        except Exception as exc:  # sqlite3.Error, OSError: kept for the next batch
            self.log.error(
                "cannot write pull times; kept in memory and tried again",
                store=str(self._store.path),
                error=str(exc),
                pending=len(pending),
            )
            return False
        self.written += events
        return True

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the registry reuses its connection
            timeout = IDLE_SECONDS  # a connection silent this long is closed (no thread kept)

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, code: int, text: str, **headers: str) -> None:
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(405, f"POST the registry's notifications to {PATH}\n", Allow="POST")

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != PATH:
                    self.close_connection = True  # its body is not read
                    self._send(404, f"not found: POST {PATH}\n")
                    return
                given = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(given, listener._expected):
                    self.close_connection = True
                    self._send(
                        401,
                        "missing or wrong bearer token: the registry's endpoint must send "
                        "headers: {Authorization: [Bearer <pulls.token_file's token>]}\n",
                        WWW_Authenticate="Bearer",
                    )
                    return
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self.close_connection = True
                    self._send(411, "Content-Length required\n")
                    return
                if int(length) > MAX_BODY:
                    self.close_connection = True
                    self._send(413, f"envelope larger than {MAX_BODY} bytes\n")
                    return
                body = self.rfile.read(int(length))
                try:
                    sorted_ = manifest_pulls(json.loads(body), listener.clock())
                # JSONDecodeError is a ValueError; a body nested too deep for json is a
                # RecursionError: both are a bad envelope, answered 400
                except (ValueError, RecursionError, EnvelopeError) as exc:
                    self._send(400, f"not a notification envelope: {exc}\n")
                    return
                if sorted_.pulls:
                    listener._queue.put(sorted_.pulls)
                    listener.on_pulls(len(sorted_.pulls))
                self._send(200, "")

        return Handler


def pull_listener(
    config: Config, on_pulls: Callable[[int], None] = lambda n: None
) -> PullListener | None:
    """The listener ``config.pulls`` asks for, not started; None when tracking is off.
    RetentiondError when the token cannot be read."""
    settings = config.pulls
    if settings.listen is None:
        return None
    if settings.token_file is None:  # check_config refuses it; a Config built by hand
        raise RetentiondError("pulls.listen needs pulls.token_file")
    try:
        token = read_token(settings.token_file)
    except TokenError as exc:
        raise RetentiondError(str(exc)) from exc
    return PullListener(
        settings.listen,
        split_listen(settings.listen),
        token,
        config.state_dir,
        on_pulls=on_pulls,
    )
