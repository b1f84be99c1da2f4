"""Measure the run's verification (`retentiond.verification.verify_run`) against a real registry
container serving a tree, at several thread counts: seconds, requests/s, and the CPU the
registry, docker's port proxy and this process used, to see which one is the limit.

    .venv/bin/python -m bench.verify bench/trees/500x100 [--workers 1,2,4,8,16] [--keep 20]

from the repository root, with the development venv's python. Needs Docker and the test
registry image (bash scripts/start-docker.sh). The tree is only read: the registry runs in
read-only mode with upload purging off, and only GET and HEAD are sent. As after a run that
keeps the last ``--keep`` tags of every repository, those tags are verified as kept and the
others as deleted; the tree still holds them, so they are asked under a name no tag has
(``<tag>.gone``), which the registry answers 404 the way it answers a deleted tag.
``--direct`` talks to the container's own address instead of the published port (no
docker-proxy in between); ``--quiet-registry`` has the registry log errors only (by default it
logs two lines per request, which docker's log driver then stores).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retentiond.registry import RegistryClient
from retentiond.storage.reader import read_inventory
from retentiond.verification import verify_run
from tests.harness.proc import docker
from tests.harness.registry import start_registry, stop_registry

READ_ONLY = {
    "REGISTRY_STORAGE_MAINTENANCE": '{"readonly": {"enabled": true}, '
    '"uploadpurging": {"enabled": false}}'
}
#: with --quiet-registry: no access log, no line per request
QUIET = {"REGISTRY_LOG_LEVEL": "error", "REGISTRY_LOG_ACCESSLOG_DISABLED": "true"}
TICKS = os.sysconf("SC_CLK_TCK")

Kept = list[tuple[str, str, str]]
Deleted = list[tuple[str, str]]


@dataclass(frozen=True)
class Row:
    workers: int
    seconds: float
    requests: int
    broken: int
    ours: float
    registry: float
    proxy: float

    def line(self) -> str:
        rate = self.requests / self.seconds
        per = 1e6 / self.requests
        return (
            f"{self.workers:>7} {self.seconds:>8.1f} {self.requests:>8} {rate:>10.0f} "
            f"{self.ours / self.seconds:>6.0%} {self.registry / self.seconds:>6.0%} "
            f"{self.proxy / self.seconds:>6.0%} {self.ours * per:>6.0f} "
            f"{self.registry * per:>6.0f} {self.proxy * per:>6.0f} {self.broken:>6}"
        )


HEADER = (
    "                                         CPU/wall              CPU us/request\n"
    "workers  seconds requests requests/s   ours   reg.  proxy   ours   reg.  proxy broken"
)


def split_tags(root: Path, keep: int, repositories: int) -> tuple[Kept, Deleted]:
    """The newest ``keep`` tags of each repository as kept, the others as deleted (of the
    first ``repositories`` repositories, 0 for all)."""
    kept: Kept = []
    deleted: Deleted = []
    every = read_inventory(root).repositories
    for repository in every[: repositories or len(every)]:
        tags = sorted(repository.tags, key=lambda t: (t.pushed_at, t.name), reverse=True)
        kept += [(repository.name, t.name, t.digest) for t in tags[:keep]]
        deleted += [(repository.name, f"{t.name}.gone") for t in tags[keep:]]
    return kept, deleted


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def proxy_pid(port: int) -> int:
    """The docker-proxy that publishes ``port`` (0 when there is none)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"docker-proxy") and str(port).encode() in args:
            return int(entry.name)
    return 0


def measure(url: str, kept: Kept, deleted: Deleted, workers: int, pids: tuple[int, int]) -> Row:
    registry_pid, proxy = pids
    before = (os.times(), cpu_seconds(registry_pid), cpu_seconds(proxy))
    with RegistryClient(url) as client:
        result = verify_run(
            client, iter(kept), iter(deleted), reappeared=lambda r, t: False, workers=workers
        )
    after = (os.times(), cpu_seconds(registry_pid), cpu_seconds(proxy))
    ours = (after[0].user + after[0].system) - (before[0].user + before[0].system)
    return Row(
        workers,
        result.seconds,
        result.requests,
        len(result.broken),
        ours,
        after[1] - before[1],
        after[2] - before[2],
    )


def rounds(workers: list[int], repeat: int) -> Iterator[int]:
    for _ in range(repeat):
        yield from workers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a registry root (holds docker/registry/v2)")
    parser.add_argument("--workers", default="1,2,4,8,16,32")
    parser.add_argument("--keep", type=int, default=20, help="tags kept per repository")
    parser.add_argument("--repositories", type=int, default=0, help="the first N only")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over --workers")
    parser.add_argument("--quiet-registry", action="store_true", help="registry logs errors only")
    parser.add_argument("--direct", action="store_true", help="bypass docker-proxy")
    args = parser.parse_args()
    kept, deleted = split_tags(args.root, args.keep, args.repositories)
    print(f"{len(kept)} kept tags, {len(deleted)} deleted tags, {os.cpu_count()} cores", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the container
    reg = start_registry(args.root, env=READ_ONLY | (QUIET if args.quiet_registry else {}))
    try:
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", reg.name).stdout)
        url = reg.url
        proxy = proxy_pid(reg.port)
        if args.direct:
            address = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", reg.name)
            url, proxy = f"http://{address.stdout.strip()}:5000", 0
        print(HEADER)
        print(measure(url, kept, deleted, 8, (pid, proxy)).line(), "(warm-up)", flush=True)
        for workers in rounds([int(w) for w in args.workers.split(",")], args.repeat):
            print(measure(url, kept, deleted, workers, (pid, proxy)).line(), flush=True)
    finally:
        stop_registry(reg)
    print(
        "CPU/wall: CPU seconds used over the wall time (100% = one core); CPU us/request: "
        "microseconds of CPU per request; reg. = the registry process, proxy = docker-proxy"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
