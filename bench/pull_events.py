"""Measure the pull-tracking endpoint: how many manifest pull events per second ``POST /events``
accepts and the store records, sustained.

    .venv/bin/python -m bench.pull_events [--events 20000] [--senders 4] [--per-envelope 1]
        [--digests 5000]

from the repository root. The listener (:class:`retentiond.pulls.listener.PullListener`, the
one ``serve`` runs, with its default batches) runs in a process of its own with its store in a
temporary directory; ``--senders`` processes POST envelopes over keep-alive connections, as
the registry does (one event an envelope by default: the registry sends its queue one event at
a time), pulls of ``--digests`` distinct manifests in 50 repositories. Printed: the rate the
endpoint answered at (all answered 200), and the sustained rate: events recorded in the store,
from the first POST until the last batch is committed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import multiprocessing.synchronize
import tempfile
import time
from pathlib import Path

from retentiond.pulls.listener import PullListener
from retentiond.pulls.store import pull_counts

TOKEN = "bench-token"


def _listen(state_dir: str, ready: multiprocessing.synchronize.Event, port: list[int]) -> None:
    listener = PullListener("127.0.0.1:0", ("127.0.0.1", 0), TOKEN, Path(state_dir))
    listener.start()
    port.append(listener.port)
    ready.set()
    while True:
        time.sleep(3600)


def _envelope(first: int, count: int, digests: int) -> bytes:
    events = []
    for n in range(first, first + count):
        d = n % digests
        events.append(
            {
                "action": "pull",
                "timestamp": "2026-12-02T07:00:00.000000000Z",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "repository": f"team-{d % 50}/app",
                    "digest": "sha256:" + f"{d:064x}",
                    "url": f"http://registry:5000/v2/team-{d % 50}/app/manifests/sha256:{d:064x}",
                },
                "request": {"method": "HEAD", "useragent": "docker/20.10.24"},
            }
        )
    return json.dumps({"events": events}).encode()


def _send(port: int, first: int, envelopes: int, per: int, digests: int) -> int:
    """POST ``envelopes`` envelopes; the number answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/vnd.docker.distribution.events.v1+json",
    }
    ok = 0
    for n in range(envelopes):
        conn.request("POST", "/events", _envelope(first + n * per, per, digests), headers)
        response = conn.getresponse()
        response.read()
        ok += response.status == 200
    conn.close()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--per-envelope", type=int, default=1)
    parser.add_argument("--digests", type=int, default=5000)
    args = parser.parse_args(argv)
    per = args.per_envelope
    envelopes = args.events // per // args.senders
    total = envelopes * per * args.senders
    with tempfile.TemporaryDirectory(prefix="retentiond-bench-pulls-") as state_dir:
        manager = multiprocessing.Manager()
        port: list[int] = manager.list()  # type: ignore[assignment]
        ready = multiprocessing.Event()
        listener = multiprocessing.Process(target=_listen, args=(state_dir, ready, port))
        listener.start()
        try:
            if not ready.wait(30):
                raise SystemExit("the listener did not start")
            started = time.monotonic()
            with multiprocessing.Pool(args.senders) as pool:
                answered = sum(
                    pool.starmap(
                        _send,
                        [
                            (port[0], s * envelopes * per, envelopes, per, args.digests)
                            for s in range(args.senders)
                        ],
                    )
                )
            sent = time.monotonic() - started
            recorded = 0
            while recorded < total and time.monotonic() - started < sent + 60:
                time.sleep(0.05)
                try:
                    recorded = sum(pull_counts(Path(state_dir)).values())
                except Exception:  # a read racing the first commit: try again
                    continue
            done = time.monotonic() - started
        finally:
            listener.terminate()
            listener.join()
            manager.shutdown()
    print(
        f"{total} pull events, {per} an envelope, {args.senders} senders, "
        f"{min(args.digests, total)} manifests"
    )
    print(
        f"answered: {answered}/{total // per} envelopes (200) in {sent:.2f}s = "
        f"{answered * per / sent:,.0f} events/s"
    )
    print(
        f"recorded: {recorded}/{total} in {done:.2f}s = {recorded / done:,.0f} events/s sustained"
    )
    return 0 if recorded == total and answered == total // per else 1


if __name__ == "__main__":
    raise SystemExit(main())
