"""The preview: the plan ``apply`` makes before it freezes the registry, in a process of its own.

A run plans twice: once while the registry still takes pushes (the preview: is there anything
to do, would the GC abort, which blobs' data to stat before the window), and once on the frozen
tree (what is removed). The preview's tree is as large as the frozen one; made in this process,
the allocator keeps much of it after it is dropped and the frozen tree is read on top (at
250,000 tags: 128 MiB still held of a 149 MiB preview). Made in a child process (:func:`main`),
its memory goes back to the system when the child exits; the parent receives only what it
needs: the plan's summary, the GC's objections, the sizes of the reclaimable blobs' data
(a :class:`~retentiond.core.blob_table.BlobTable`, 40 bytes a blob) and the count of blobs.

The same child then reads the frozen tree when asked (:class:`PreviewChild`): it keeps the
manifests it parsed (packed: about 100 bytes a manifest and 40 a blob), which that read takes
instead of parsing them again where they are the same bytes, and answers with the inventory
(11 MB of pickle at 50,000 tags). A process without threads, it forks its readers: the daemon,
whose threads keep it from forking, read the frozen tree in one process before (3.8 to 4.8 s
at 50,000 tags, against 2.5 to 2.9 s forked).

An interactive ``apply`` (without ``--yes``) needs the whole plan to show it: its preview is made
in the process (:func:`make_preview`), and so is its frozen read (:func:`read_frozen`). The
child is given its requests and returns its answers as pickles over its stdin and stdout (both
ends are this program; nothing else writes them); its logs go to the same stderr as the
parent's. An error in the child is raised again in the parent with its type and message; a
child that dies says so, and nothing has been removed either way (the child only reads).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from retentiond import errors
from retentiond.core.blob_table import BlobTable
from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import Plan
from retentiond.core.protection import Protection
from retentiond.errors import RetentiondError
from retentiond.logs import configure_logging, logging_setup
from retentiond.policy.model import Policy, Safety
from retentiond.pulls.settings import PullsConfig
from retentiond.pulls.store import read_pull_times
from retentiond.render import plan_summary
from retentiond.storage.location import Location
from retentiond.storage.reader import (
    ParsedBefore,
    data_sizes,
    read_inventory,
    read_inventory_keeping,
)


@dataclass(frozen=True)
class PreviewRequest:
    """What the preview plans with: the tree, the policies, and what was read before it."""

    location: Location
    policies: Sequence[Policy]
    safety: Safety
    now: datetime
    read_created: bool
    gc_reads_schema1: bool
    pulls: PullsConfig
    state_dir: Path
    protection: Protection


@dataclass(frozen=True)
class Preview:
    """What the run needs of the preview."""

    #: :func:`retentiond.render.plan_summary` of the plan
    summary: dict[str, Any]
    #: tags to delete, manifests to unlink or blobs to reclaim: False is ``nothing-to-do``
    to_do: bool
    #: :attr:`Plan.gc_blocked`: the registry's GC would abort or destroy data on this tree
    gc_blocked: bool
    #: the plan's problems about the GC, as the plan says them
    gc_problems: tuple[str, ...]
    #: the reclaimable blobs that have data, with its size (stat'ed before the freeze)
    sizes: BlobTable
    #: the blobs in the store (what a GC walks: the daemon's estimate of a run's time)
    blobs: int
    #: the manifests the preview parsed, for the frozen read to take where they are the same
    #: (:mod:`retentiond.storage.reading.reuse`; None: nothing to do, or none to take)
    parsed: ParsedBefore | None = None


def make_preview(request: PreviewRequest) -> tuple[Preview, Plan]:
    """The preview made in this process, with its whole plan (for a confirmation prompt)."""
    inventory, parsed = read_inventory_keeping(request.location, read_created=request.read_created)
    plan = make_plan(
        inventory,
        request.policies,
        request.safety,
        request.now,
        gc_reads_schema1=request.gc_reads_schema1,
        pulls=read_pull_times(request.pulls, request.state_dir),
        protected=request.protection,
    )
    to_do = bool(plan.tags_deleted or plan.manifests_unlinked or plan.reclaimable)
    preview = Preview(
        summary=plan_summary(plan),
        to_do=to_do,
        gc_blocked=plan.gc_blocked,
        gc_problems=tuple(str(p) for p in plan.problems if p.kind.value.startswith("gc-")),
        # the reclaimable blobs' data stat'ed now, before the freeze: the frozen plan stats
        # only the ones this did not (a digest's data does not change)
        sizes=data_sizes(request.location, iter(plan.reclaimable)) if to_do else BlobTable(),
        blobs=len(inventory.blobs),
        parsed=parsed if to_do else None,
    )
    return preview, plan


#: the child's program: this module, imported from where the parent imported it (-P: not from
#: the working directory, where a ``retentiond`` would not be us)
_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from retentiond.preview import main; main()"


@dataclass(frozen=True)
class FrozenRead:
    """The read of the frozen tree: its inventory, and how many of the manifests the preview
    had parsed were ``offered`` to it and ``reused`` (taken instead of parsed again)."""

    inventory: Inventory
    offered: int
    reused: int


def read_frozen(location: Location, read_created: bool, parsed: ParsedBefore | None) -> FrozenRead:
    """The frozen tree read in this process, taking ``parsed`` (the preview's) where it can."""
    offered = len(parsed) if parsed is not None else 0  # (let go of as the read takes them)
    inventory = read_inventory(location, read_created=read_created, parsed_before=parsed)
    return FrozenRead(inventory, offered, parsed.reused if parsed is not None else 0)


class PreviewChild:
    """The preview made by a child process (:data:`_CHILD`), which then waits for the freeze:
    :meth:`read_frozen` has it read the frozen tree (its readers forked from it, a process
    without threads, even when the parent is the daemon, whose threads keep it from forking;
    the manifests it parsed for the preview taken where they are the same) and answer with the
    inventory, then end. :meth:`close` (a run that does not go on) ends it: it reads the end of
    its input and exits. Errors in the child are raised here with their type and message."""

    def __init__(self, request: PreviewRequest) -> None:
        fmt, level = logging_setup()
        self._child = subprocess.Popen(
            [sys.executable, "-P", "-c", _CHILD, str(Path(__file__).resolve().parents[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            self._ask((fmt, level, request))
            preview = self._answer(
                "the preview (planning before the freeze, in a process of its own)",
                "nothing was changed",
            )
        except BaseException:  # Ctrl-C, a stop, an error: the child is not left behind
            self.kill()
            raise
        assert isinstance(preview, Preview)
        self.preview = preview

    def read_frozen(self) -> FrozenRead:
        """The frozen tree, read by the child (asked once; the child ends after it)."""
        try:
            self._ask(("frozen",))
            frozen = self._answer(
                "the read of the frozen tree (in a process of its own)", "nothing was removed"
            )
        except BaseException:
            self.kill()
            raise
        self.close()  # (it exits as soon as its answer is written)
        assert isinstance(frozen, FrozenRead)
        return frozen

    def close(self) -> None:
        """End the child: its input closed, it exits (killed if it has not after
        :data:`CLOSE_SECONDS`)."""
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        with suppress(BrokenPipeError):
            child.stdin.close()
        try:
            child.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()

    def kill(self) -> None:
        """End the child now (an error, a stop)."""
        child = self._child
        if child.returncode is None:
            child.kill()
        self.close()

    def __enter__(self) -> PreviewChild:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()

    def _ask(self, request: object) -> None:
        assert self._child.stdin is not None
        try:
            pickle.dump(request, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._child.stdin.flush()
        except BrokenPipeError:  # the child ended before it read: its status says how
            pass

    def _answer(self, what: str, nothing: str) -> object:
        """The child's answer, read as it comes (tens of MB on a large tree, not to be held
        twice, as bytes then as values); its error raised here."""
        assert self._child.stdout is not None
        answer = _answer(self._child.stdout)
        if answer is None:  # it ended (or was killed) before its whole answer
            try:
                returncode = self._child.wait(timeout=CLOSE_SECONDS)
            except subprocess.TimeoutExpired:  # (an answer that is not one: a bug)
                self._child.kill()
                returncode = self._child.wait()
            raise RetentiondError(
                f"{what} {_how(returncode)}; {nothing}. Its error, if any, is logged above; run "
                "`retentiond plan` to see whether planning itself fails"
            )
        kind, value = answer
        if kind == "error":
            name, message = value
            error = getattr(errors, name, None)
            if not (isinstance(error, type) and issubclass(error, RetentiondError)) or (
                error is errors.ConfigError
            ):
                error = RetentiondError
            raise error(message)
        return value


#: seconds a child has to exit once its input is closed, before it is killed
CLOSE_SECONDS = 10.0


def _how(returncode: int) -> str:
    return f"was killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"


def _answer(stream: IO[bytes]) -> tuple[str, Any] | None:
    """The child's answer, read from its stdout as it is written (by our own child: see
    :func:`main`); None when it ended before its whole answer."""
    try:
        kind, value = pickle.load(stream)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError):
        return None
    return kind, value


def main() -> None:
    """The child's side: the preview's request from stdin, its answer on stdout; then, when
    asked, the frozen read and its answer. Its input closed instead, it exits."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    fmt, level, request = pickle.load(requests)  # written by our parent
    configure_logging(fmt, level)
    parsed: ParsedBefore | None = None
    answer: tuple[str, object]
    try:
        preview = make_preview(request)[0]  # (its plan and inventory let go here)
        parsed = preview.parsed
        answer = ("preview", replace(preview, parsed=None))  # kept here for the frozen read
        del preview
    except RetentiondError as exc:  # expected, explained: raised again in the parent
        answer = ("error", (type(exc).__name__, str(exc)))
    _write(answer, answers)
    del answer
    try:
        pickle.load(requests)  # ("frozen",): the registry is frozen
    except EOFError:  # the run does not go on
        return
    try:
        answer = ("frozen", read_frozen(request.location, request.read_created, parsed))
    except RetentiondError as exc:
        answer = ("error", (type(exc).__name__, str(exc)))
    _write(answer, answers)
    # the parent waits for this answer inside the window: ended now, without freeing a tree
    # of a million manifests object by object on the way out
    sys.stderr.flush()
    os._exit(0)


def _write(answer: tuple[str, object], stream: IO[bytes]) -> None:
    """Written as it is pickled: no copy of the whole answer in memory."""
    pickle.dump(answer, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()
