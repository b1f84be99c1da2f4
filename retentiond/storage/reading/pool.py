"""Forked worker processes for the read phases, and how many of them a phase wants.

Phase 1 (the blob store) runs in a pool of its own, closed when it is done: it builds the blob
table. Phases 2 to 4 share one :class:`WorkerPool`, forked once, when first needed, after the
table exists, so that the workers have it through the fork without a copy. Tasks go to the
workers as small values (indexes, ids, names) and come back as compact ones (arrays, packed
records); the readers of :class:`~retentiond.storage.reading.tree.Tree` go with the tasks,
pickled as the descriptors the workers inherited.

A process that runs threads (the daemon) reads in-process instead: forking it is not safe.
A tree in an object store waits on the network more than on the CPU: it is read by
:data:`NETWORK_THREADS` threads of the process (``network``), in every command, which share
the blob table without a fork. (Forked processes, 8 of them, read it while botocore made every
request, its CPU per request under the interpreter lock; with the requests signed by
:mod:`retentiond.storage.s3_signed`, one process's threads were faster, 7.5 to 8.2 s against
9.2 to 11.5 s for a 5k-tag bucket on 2 CPUs, in half the memory.) A worker process that
dies (the kernel's out-of-memory killer) fails the read with a StorageError instead of a wait
forever.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import multiprocessing.process
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from retentiond.core.inventory import BlobTable
from retentiond.errors import StorageError

T = TypeVar("T")
R = TypeVar("R")

#: ``progress(stage, done, total)``: stage is "blob directories", "repositories" or "manifests"
Progress = Callable[[str, int, int], None]

#: below these sizes the tree is read in-process (starting workers costs more than it saves)
PARALLEL_MIN_REPOSITORIES = 16
PARALLEL_MIN_MANIFESTS = 2000
#: tasks per worker: small enough to balance, large enough to amortize their cost
TASKS_PER_WORKER = 8

#: the threads that read a tree in an object store: the requests in flight at once
NETWORK_THREADS = 32

#: the fewest processes for the phases that mostly wait on the disk (listing directories,
#: reading link files, stat'ing ``data``): reads in flight at once when the tree's metadata is
#: not cached. A fresh 250,000-tag tree (21 GB of directories and link files, more than the
#: page cache holds) read cold on 2 CPUs: 72-76 s with 4 processes, 64 s with 8, 54 s with 16,
#: 49 s with 32; read cached, 16 cost 0.4 to 1.3 s more than 4 (7.0-7.4 s).
DISK_READERS = 16

#: the blob table, for the workers of a WorkerPool (set while they are forked)
_SHARED_TABLE: BlobTable | None = None
#: what else the workers of a WorkerPool have through the fork (:attr:`WorkerPool.shared`)
_SHARED_EXTRA: object = None


def shared_blobs(blobs: BlobTable | None) -> BlobTable:
    """The blob table a task was given, or, in a worker (given None), the one it was forked
    with."""
    table = blobs if blobs is not None else _SHARED_TABLE
    assert table is not None, "the blob table is set before the workers are forked"
    return table


def shared_extra(blobs: BlobTable | None, extra: T) -> T:
    """``extra`` as a task was given it with the table ``blobs``; in a worker (given None for
    both), the pool's :attr:`WorkerPool.shared`, which it was forked with."""
    return extra if blobs is not None else _SHARED_EXTRA  # type: ignore[return-value]


def chunks(items: list[T], count: int) -> list[list[T]]:
    """``items`` in at most ``count`` tasks of about the same size, in order."""
    size = max(1, -(-len(items) // count))
    return [items[i : i + size] for i in range(0, len(items), size)]


def workers_for(
    requested: int | None, size: int, threshold: int, network: bool = False, *, disk: bool = False
) -> int:
    """How many processes (threads, for a ``network`` tree) to read ``size`` things with (1:
    in-process); ``disk``: for a phase that mostly waits on the disk (see :func:`wanted`)."""
    count = wanted(requested, size, threshold, disk=disk)
    return count if count > 1 and (network or can_fork()) else 1


def wanted(requested: int | None, size: int, threshold: int, *, disk: bool = False) -> int:
    """:func:`workers_for`, were this process free to fork (a pool's own threads make it look
    as if it were not, once the pool runs): two per CPU, at most 16 (more than the CPUs: a
    cold cache waits on the disk), and with ``disk`` at least :data:`DISK_READERS`."""
    if requested is not None:
        return requested
    if size < threshold:
        return 1
    count = min(16, 2 * (os.cpu_count() or 1))
    return max(count, DISK_READERS) if disk else count


def run_in_fresh_pool(
    fn: Callable[[T], R], tasks: list[T], workers: int, network: bool = False
) -> Iterator[R]:
    """``fn`` over ``tasks``, in any order, in a pool of forked worker processes made for
    them (threads for a ``network`` tree; in-process when ``workers`` or the tasks are fewer
    than two)."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    if network:
        with multiprocessing.pool.ThreadPool(min(workers, len(tasks))) as threads:
            yield from threads.imap_unordered(fn, tasks)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
        yield from _results(pool, _processes(pool), fn, tasks)


class WorkerPool:
    """The workers of phases 2 to 4: forked once, when a phase first has tasks for more than
    one of them, after the blob table exists (they share it through the fork); starting a
    pool for each phase would cost more than reusing one.

    A phase asks for ``count`` workers of the pool's ``size`` (fewer for a small phase); what
    its tasks get as the blob table is :meth:`table_for`."""

    def __init__(
        self, blobs: BlobTable, size: int, network: bool = False, shared: object = None
    ) -> None:
        self.table, self.size, self.network = blobs, size, network
        #: a value the tasks read besides the table, given to the workers through the fork
        #: (see :func:`shared_extra`; set before the first phase that forks)
        self.shared = shared
        self._pool: multiprocessing.pool.Pool | None = None
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def forks(self, count: int, tasks: int) -> bool:
        """Whether ``tasks`` tasks for ``count`` workers run in the workers."""
        return min(count, self.size) > 1 and tasks > 1

    def table_for(self, count: int, tasks: int) -> BlobTable | None:
        """What a task passes on as the blob table: None when it runs in a worker (which
        has the table through the fork: see :func:`shared_blobs`), the table itself when the
        phase runs in-process."""
        return None if self.forks(count, tasks) and not self.network else self.table

    def run(self, fn: Callable[[T], R], tasks: list[T], count: int) -> Iterator[R]:
        """``fn`` over ``tasks``, in any order; in the workers when ``forks(count, ...)``."""
        if not self.forks(count, len(tasks)):
            yield from map(fn, tasks)
            return
        if self.network:
            if self._pool is None:
                self._pool = multiprocessing.pool.ThreadPool(self.size)
            yield from self._pool.imap_unordered(fn, tasks)
            return
        if self._pool is None:
            global _SHARED_TABLE, _SHARED_EXTRA
            _SHARED_TABLE, _SHARED_EXTRA = self.table, self.shared
            try:
                self._pool = multiprocessing.get_context("fork").Pool(self.size)
                self._processes = _processes(self._pool)
            finally:
                _SHARED_TABLE = _SHARED_EXTRA = None  # the workers have their copy
        yield from _results(self._pool, self._processes, fn, tasks)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def can_fork() -> bool:
    """Whether this process may fork readers (no other thread runs)."""
    return _can_fork()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _processes(pool: multiprocessing.pool.Pool) -> list[multiprocessing.process.BaseProcess]:
    return list(getattr(pool, "_pool", []))  # the pool's workers (not a public attribute)


def _results(
    pool: multiprocessing.pool.Pool,
    workers: list[multiprocessing.process.BaseProcess],
    fn: Callable[[T], R],
    tasks: list[T],
) -> Iterator[R]:
    """``pool.imap_unordered(fn, tasks)``, but a worker that dies (killed by the OOM killer,
    say) is a StorageError, not a wait forever for the task it took with it (the pool starts
    another worker and never says)."""
    results = pool.imap_unordered(fn, tasks)
    while True:
        try:
            yield results.next(timeout=1.0)
        except StopIteration:
            return
        except multiprocessing.TimeoutError:
            for worker in workers:
                if worker.exitcode is not None and worker.exitcode != 0:
                    raise StorageError(
                        f"a reader process (pid {worker.pid}) ended with exit code "
                        f"{worker.exitcode} (a negative code is the signal that killed it, "
                        "9 often the kernel's out-of-memory killer); run again, and give "
                        "retentiond more memory if it happens again"
                    ) from None
