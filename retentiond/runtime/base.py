"""The interface every runtime implements, and what a GC run reports.

A maintenance run calls, in order: ``recover()`` (undo what a crashed run left: a read-only twin,
a stopped registry), ``enter_maintenance()`` (the registry refuses writes, or is stopped),
``run_gc()`` (exactly once, never with ``--delete-untagged``), ``leave_maintenance()`` (the
registry runs read-write again with an empty blob descriptor cache). Errors are
:class:`~retentiond.errors.RuntimeControlError` with the fix in the message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class MaintenanceState(enum.Enum):
    """What ``enter_maintenance`` achieved, so the run knows whether to probe for 405."""

    READ_ONLY = "read-only"  # pulls work, pushes get 405
    STOPPED = "stopped"  # nothing answers
    ONLINE = "online"  # nothing changed: writes are still accepted (gc_mode: online)


@dataclass(frozen=True, slots=True)
class GcOutcome:
    returncode: int
    output: str
    seconds: float

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

    def recover(self) -> bool:
        """Undo what a crashed run left behind; True when something had to be restored."""
        ...

    def enter_maintenance(self) -> MaintenanceState: ...

    def run_gc(self, *, dry_run: bool = False) -> GcOutcome: ...

    def leave_maintenance(self) -> None: ...
