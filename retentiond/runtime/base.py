"""The interface every runtime implements, and what a GC run reports.

A maintenance run calls, in order: ``recover()`` (undo what a crashed run left: a read-only twin,
a stopped registry), ``enter_maintenance()`` (the registry refuses writes, or is stopped),
``run_gc()`` (exactly once, never with ``--delete-untagged``), ``leave_maintenance()`` (the
registry runs read-write again with an empty blob descriptor cache). Errors are
:class:`~retentiond.errors.RuntimeControlError` with the fix in the message.

The GC of a large registry prints millions of lines: ``run_gc`` hands each to the caller's
``on_line`` as it arrives (:class:`GcLines` cuts the bytes into lines) and keeps only the last
:data:`GC_TAIL_LINES` in :attr:`GcOutcome.output`.
"""

from __future__ import annotations

import codecs
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: lines of the GC's output kept in :attr:`GcOutcome.output`
GC_TAIL_LINES = 200


class MaintenanceState(enum.Enum):
    """What ``enter_maintenance`` achieved, so the run knows whether to probe for 405."""

    READ_ONLY = "read-only"  # pulls work, pushes get 405
    STOPPED = "stopped"  # nothing answers
    ONLINE = "online"  # nothing changed: writes are still accepted (gc_mode: online)


@dataclass(frozen=True, slots=True)
class GcOutcome:
    """How the GC ended: its exit code, the last :data:`GC_TAIL_LINES` lines of its output
    (stdout and stderr, one line each, joined by newlines), how long it ran, and how many lines
    it printed in all."""

    returncode: int
    output: str
    seconds: float
    lines: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Runtime(Protocol):
    """Controls one registry. Every method is idempotent where it can be."""

    def describe(self) -> str:
        """One line for logs: ``docker container registry (gc_mode readonly)``."""
        ...

    def check(self) -> list[str]:
        """Problems that stop a run before it starts (container missing, socket forbidden...)."""
        ...

    def registry_config_text(self) -> str | None:
        """The registry's config file as the registry process sees it, if it can be read."""
        ...

    def registry_major(self) -> int | None:
        """The registry's major version (2 or 3) when the runtime can ask it, else None."""
        ...

    def recover(self) -> bool:
        """Undo what a crashed run left behind; True when something had to be restored."""
        ...

    def enter_maintenance(self) -> MaintenanceState: ...

    def switched_at(self) -> float | None:
        """When (``time.time()``) the last :meth:`enter_maintenance` began to stop the
        registry taking writes (the original container asked to stop, after the read-only
        twin was made), when the runtime knows it; None: from the start of the call."""
        ...

    def run_gc(
        self, *, dry_run: bool = False, on_line: Callable[[str], None] | None = None
    ) -> GcOutcome:
        """Run the registry's garbage-collect and wait for its end; ``on_line`` receives every
        line it prints (stdout and stderr, without the line end) as it arrives. A GC that
        exits non-zero is returned, not raised; an exception of ``on_line`` propagates."""
        ...

    def leave_maintenance(self) -> None: ...

    def instances(self) -> list[tuple[str, str]]:
        """``(name, URL)`` of each registry instance to verify through, when there are several
        (``runtime.containers``); empty: verify through ``registry.url``."""
        ...


class GcLines:
    """Receives the GC's output as it arrives and passes each line to ``on_line``, keeping the
    last ``tail`` lines. Output comes in chunks cut anywhere; :meth:`stream` gives one cutter
    per stream, so a line of stdout never mixes with a line of stderr."""

    def __init__(
        self, on_line: Callable[[str], None] | None = None, *, tail: int = GC_TAIL_LINES
    ) -> None:
        self._on_line = on_line
        self._tail: deque[str] = deque(maxlen=tail)
        self.count = 0

    def line(self, text: str) -> None:
        """One whole line, without its line end."""
        self.count += 1
        self._tail.append(text)
        if self._on_line is not None:
            self._on_line(text)

    def stream(self) -> LineCutter:
        """A cutter for one stream of bytes (stdout, stderr, or both merged by the OS)."""
        return LineCutter(self.line)

    @property
    def output(self) -> str:
        """The last lines, joined by newlines."""
        return "\n".join(self._tail)


class LineCutter:
    """Cuts a stream of UTF-8 bytes, given in chunks cut anywhere (even inside a character),
    into lines for ``sink``. Bytes that are not UTF-8 become U+FFFD."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if "\n" not in text:
            self._partial += text
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        sink = self._sink
        for line in lines:
            sink(line)

    def close(self) -> None:
        """The stream ended: a last line without a line end is a line too."""
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        if rest:
            self._sink(rest)
