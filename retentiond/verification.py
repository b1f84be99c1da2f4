"""Verify a run over HTTP: every kept tag answers with its digest, with every child manifest and
blob, and every deleted tag answers 404 (unless pushed again since).

The requests go out from a pool of threads, each with a client of its own (its connection kept
alive from one request to the next).
Both lists are read as they come, a bounded window of checks ahead of the one whose answer is
collected next, so a million tags take no more memory than some thousands; answers are
collected in input order, so the problems come out in the same order whatever the number of
threads.

A kept tag's manifest is fetched (GET: its digest, blobs and children are in it); its blobs are
asked with HEAD, its children like it. Each blob and child manifest is asked once per repository
(blobs are linked per repository, so one repository's answer says nothing of another's); what a
repository proved is forgotten after its last kept tag, so the kept tags come grouped by
repository (a repository seen again later is only asked again, never judged wrongly).

The deleted tags of a repository are first looked up in its tag list (``tags/list``, once per
repository): the registry lists a tag when, and answers a tag's manifest only when, the tag's
directory is there, so a tag it does not list answers 404 without being asked (except a tag
whose name extends a listed one: distribution 3.1.0-3.1.1 can leave such a tag out of the
list, so it is asked). A listed tag is asked with HEAD; one that answers gets its own problem.
Deleted tags come grouped by repository too (or the list is asked again for each group).

Replicas (``runtime.containers``): :func:`verify_instances` runs all of this through each
instance in turn, not through ``registry.url`` (a load balancer would show each request to
one instance only): a tag broken on one instance is reported with that instance's name.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from retentiond.errors import RegistryError
from retentiond.registry import Answers, RegistryClient

#: threads asking the registry at once: enough to keep a registry on 2 cores busy (more
#: gained nothing in bench/verify.py)
WORKERS = 8
#: checks started ahead of the one collected next, per thread
AHEAD = 8
#: deleted tags of one repository checked in one step
CHUNK = 256

#: what collects a step's answers, in input order, when its turn comes: its problems
Collect = Callable[[], list[str]]


@dataclass(slots=True)
class Verification:
    #: one text per problem: ``repo:tag: reason`` or ``repo:tag was deleted but answers N``
    broken: list[str]
    #: HTTP requests sent
    requests: int
    seconds: float


def verify_run(
    registry: RegistryClient,
    kept: Iterable[tuple[str, str, str]],
    deleted: Iterable[tuple[str, str]],
    *,
    reappeared: Callable[[str, str], bool],
    workers: int = WORKERS,
) -> Verification:
    """Check ``kept`` ``(repository, tag, digest)``, grouped by repository, and ``deleted``
    ``(repository, tag)`` against the registry.

    ``reappeared(repository, tag)`` is called, from this thread, only for a deleted tag that
    does not answer 404: True (its directory is on disk again, pushed since) excuses it. A
    :class:`~retentiond.errors.RegistryError` (the registry stopped answering) is raised once
    the requests under way have finished; the checks not started yet are dropped.
    """
    started = time.monotonic()
    clients = _Clients(registry)
    broken: list[str] = []
    window: deque[Collect] = deque()
    with clients, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        try:
            for step in _steps(pool, clients, kept, deleted, reappeared):
                window.append(step)
                if len(window) > workers * AHEAD:
                    broken += window.popleft()()
            while window:
                broken += window.popleft()()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # what is under way finishes; nothing new starts
            raise
    return Verification(broken, clients.requests, time.monotonic() - started)


def verify_instances(
    registry: RegistryClient,
    instances: Sequence[tuple[str, str]],
    kept: Callable[[], Iterable[tuple[str, str, str]]],
    deleted: Callable[[], Iterable[tuple[str, str]]],
    *,
    reappeared: Callable[[str, str], bool],
    workers: int = WORKERS,
) -> Verification:
    """:func:`verify_run` through ``registry`` when ``instances`` is empty (one registry);
    else through each instance ``(name, URL)`` in turn, with ``registry``'s credentials and
    TLS settings, every kept and deleted tag through every instance (``kept()`` and
    ``deleted()`` give the lists again for each). Each problem names the instance it was seen
    through; an instance without a URL, or that stops answering, is a problem of its own and
    the others are still verified."""
    if not instances:
        return verify_run(registry, kept(), deleted(), reappeared=reappeared, workers=workers)
    started = time.monotonic()
    broken: list[str] = []
    requests = 0
    for name, url in instances:
        if not url:
            broken.append(f"instance {name}: its address is unknown; set runtime.instance_urls")
            continue
        through = f"(through instance {name} at {url})"
        client = registry.at(url)
        try:
            result = verify_run(client, kept(), deleted(), reappeared=reappeared, workers=workers)
        except RegistryError as exc:
            broken.append(f"instance {name} at {url} stopped answering: {exc}")
            continue
        finally:
            client.close()  # (its clones asked: their requests are in the result)
        requests += result.requests
        broken += [f"{problem} {through}" for problem in result.broken]
    return Verification(broken, requests, time.monotonic() - started)


class _Clients:
    """A clone of the registry client for each thread that asks, closed at the end."""

    def __init__(self, registry: RegistryClient) -> None:
        self._registry = registry
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[RegistryClient] = []
        self.requests = 0

    def mine(self) -> RegistryClient:
        """The calling thread's client."""
        client: RegistryClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._registry.clone()
            with self._lock:
                self._made.append(client)
        return client

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close every client (the threads are done: the pool has shut down before)."""
        for client in self._made:
            self.requests += client.requests
            client.close()


def _steps(
    pool: Executor,
    clients: _Clients,
    kept: Iterable[tuple[str, str, str]],
    deleted: Iterable[tuple[str, str]],
    reappeared: Callable[[str, str], bool],
) -> Iterator[Collect]:
    """Start each check as it is drawn; yield what collects it, in input order."""
    yield from _kept_steps(pool, clients, kept)
    listing = _Listing("")
    for repository, tags in _chunks(deleted):
        if repository != listing.repository:
            listing = _Listing(repository)
        future = pool.submit(_still_answering, clients, listing, tags)
        yield _deleted_problems(future.result, repository, reappeared)


def _kept_steps(
    pool: Executor, clients: _Clients, kept: Iterable[tuple[str, str, str]]
) -> Iterator[Collect]:
    """One step per kept tag; the tags of a repository share its :class:`Answers` (dropped
    with the repository's last step)."""
    current: str | None = None
    answers = Answers()
    for repository, tag, digest in kept:
        if repository != current:
            current, answers = repository, Answers()
        future = pool.submit(_check_kept, clients, repository, tag, digest, answers)
        yield _kept_problem(future.result, repository, tag)


def _check_kept(clients: _Clients, repository: str, tag: str, digest: str, answers: Answers) -> str:
    return clients.mine().check_manifest(repository, tag, digest, answers)


def _kept_problem(result: Callable[[], str], repository: str, tag: str) -> Collect:
    def collect() -> list[str]:
        problem = result()
        return [f"{repository}:{tag}: {problem}"] if problem else []

    return collect


def _chunks(deleted: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """``(repository, tags)``: consecutive deleted tags of one repository, at most CHUNK."""
    current: str | None = None
    tags: list[str] = []
    for repository, tag in deleted:
        if tags and (repository != current or len(tags) == CHUNK):
            yield current or "", tags
            tags = []
        current = repository
        tags.append(tag)
    if tags:
        yield current or "", tags


class _Listing:
    """The tags the registry lists for one repository, asked once, by the first chunk of its
    deleted tags that needs them (the others wait for that answer)."""

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self._lock = threading.Lock()
        self._asked = False
        self._tags: set[str] | None = None

    def tags(self, client: RegistryClient) -> set[str] | None:
        """None when the registry would not list them: then every tag is asked."""
        with self._lock:
            if not self._asked:
                self._tags = client.listed_tags(self.repository)
                self._asked = True
            return self._tags


def _still_answering(
    clients: _Clients, listing: _Listing, tags: list[str]
) -> list[tuple[str, int]]:
    """``(tag, status)`` of each of ``tags`` that does not answer 404. A tag the registry
    does not list answers 404 (the list and the tag's manifest are read from the same tag
    directory), so only listed tags are asked, and those the list may leave out although
    they are there: distribution 3.1.0 and 3.1.1 can drop from ``tags/list`` a tag whose
    name extends another tag's (distribution#4891), so a tag that extends a listed one is
    asked too."""
    client = clients.mine()
    listed = listing.tags(client)
    statuses = (
        (tag, client.tag_status(listing.repository, tag))
        for tag in tags
        if listed is None or tag in listed or _extends_one_of(tag, listed)
    )
    return [(tag, status) for tag, status in statuses if status != 404]


def _extends_one_of(tag: str, listed: set[str]) -> bool:
    """Whether another tag in ``listed`` is a proper prefix of ``tag``."""
    return any(tag[:end] in listed for end in range(1, len(tag)))


def _deleted_problems(
    result: Callable[[], list[tuple[str, int]]],
    repository: str,
    reappeared: Callable[[str, str], bool],
) -> Collect:
    def collect() -> list[str]:
        return [
            f"{repository}:{tag} was deleted but answers {status}"
            for tag, status in result()
            if not reappeared(repository, tag)
        ]

    return collect
