"""The preview: the plan ``apply`` makes before it freezes the registry, in a process of its own.

A run plans twice: once while the registry still takes pushes (the preview: is there anything
to do, would the GC abort, which blobs' data to stat before the window), and once on the frozen
tree (what is removed). The preview's tree is as large as the frozen one; made in this process,
the allocator keeps much of it after it is dropped and the frozen tree is read on top (at
250,000 tags: 128 MiB still held of a 149 MiB preview). Made in a child process (:func:`main`),
its memory goes back to the system when the child exits; the parent receives only what it
needs: the plan's summary, the GC's objections, the sizes of the reclaimable blobs' data
(a :class:`~retentiond.core.blob_table.BlobTable`, 40 bytes a blob), and the manifests it
parsed, packed (about 100 bytes a manifest and 40 a blob: 10 MB at 50,000 tags), which the
frozen read takes instead of parsing them again where they are the same bytes.

An interactive ``apply`` (without ``--yes``) needs the whole plan to show it: its preview is made
in the process (:func:`make_preview`). The child is given its input and returns its answer as
pickles over its stdin and stdout (both ends are this program; nothing else writes them); its
logs go to the same stderr as the parent's. An error in the child is raised again in the parent
with its type and message; a child that dies says so, and nothing has changed either way (the
preview only reads).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from retentiond import errors
from retentiond.core.blob_table import BlobTable
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
from retentiond.storage.reader import ParsedBefore, data_sizes, read_inventory_keeping


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


def preview_in_child(request: PreviewRequest) -> Preview:
    """The preview made by a child process (:data:`_CHILD`); its errors raised here."""
    fmt, level = logging_setup()
    payload = pickle.dumps((fmt, level, request), protocol=pickle.HIGHEST_PROTOCOL)
    with subprocess.Popen(
        [sys.executable, "-P", "-c", _CHILD, str(Path(__file__).resolve().parents[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            try:
                child.stdin.write(payload)
                child.stdin.close()
            except BrokenPipeError:  # the child ended before it read: its status says how
                with suppress(BrokenPipeError):
                    child.stdin.close()  # (closed even when its flush fails)
            # read as it comes: the manifests it parsed are tens of MB on a large tree, not
            # to be held twice (as bytes, then as values)
            answer = _answer(child.stdout)
            returncode = child.wait()
        except BaseException:  # Ctrl-C, a stop: the child is not left behind
            child.kill()
            raise
    if returncode != 0 or answer is None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
        raise RetentiondError(
            f"the preview (planning before the freeze, in a process of its own) {how}; "
            "nothing was changed. Its error, if any, is logged above; run `retentiond plan` "
            "to see whether planning itself fails"
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
    assert isinstance(value, Preview)
    return value


def _answer(stream: IO[bytes]) -> tuple[str, Any] | None:
    """The child's answer, read from its stdout as it is written (by our own child: see
    :func:`main`); None when it ended before its whole answer."""
    try:
        kind, value = pickle.load(stream)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError):
        return None
    stream.read()  # nothing more is written; read to its end all the same
    return kind, value


def main() -> None:
    """The child's side: read the request from stdin, answer on stdout."""
    fmt, level, request = pickle.loads(sys.stdin.buffer.read())  # written by our parent
    configure_logging(fmt, level)
    try:
        answer: tuple[str, object] = ("preview", make_preview(request)[0])
    except RetentiondError as exc:  # expected, explained: raised again in the parent
        answer = ("error", (type(exc).__name__, str(exc)))
    # written as it is pickled: no copy of the whole answer in memory
    pickle.dump(answer, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
