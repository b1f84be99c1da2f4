"""The registry controlled by the operator's own shell commands (systemd, Kubernetes, scripts),
and the ``none`` runtime that never runs a GC.

``runtime.commands`` (each run with ``/bin/sh -c``):

- ``readonly``: restart the registry read-only (``REGISTRY_STORAGE_MAINTENANCE_READONLY``);
  used with ``gc_mode: readonly`` (the default; without it, ``stop`` is used instead).
- ``stop``: stop the registry; used with ``gc_mode: stop``.
  With ``gc_mode: online`` neither is run: the GC runs on the live registry.
- ``start``: start it read-write again; this also empties its blob descriptor cache. It must be
  safe to call when the registry is already running (restart it, or do nothing): retentiond
  calls it to recover after an interrupted run without knowing how far that run got.
- ``gc``: run the GC, e.g. ``docker-registry garbage-collect /etc/docker/registry/config.yml``;
  for a dry run retentiond inserts ``--dry-run`` after ``garbage-collect``.

The registry's config file (read for ``storage.delete.enabled``) is ``runtime.registry_config``
as written, read on this machine; without it, the 2.x default ``/etc/docker/registry/config.yml``.
Unlike ``kind: docker``, nothing is discovered: for registry 3 (``/etc/distribution/config.yml``)
or any other place, set ``runtime.registry_config``.

A command that fails (non-zero exit, or longer than its timeout) raises RuntimeControlError with
the command, its exit code and the last lines of its output. A command that leaves a background
process behind must redirect that process's output (``>>log 2>&1``): retentiond waits for the
command itself, not for the processes it starts. The output of ``gc`` is read from a pipe as
it is printed, until ``gc`` has exited; that of the others from a file once they have exited.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from retentiond.config import GcMode, RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.logs import get_logger
from retentiond.runtime.base import GcLines, GcOutcome, LineCutter, MaintenanceState
from retentiond.runtime.discovery import ConfigLocation, command_config_location

#: Lines of a failed command's output quoted in the error.
TAIL_LINES = 15
#: how often a GC that prints nothing is checked for its exit (and timeout)
_POLL_SECONDS = 0.2
_READ_BYTES = 1 << 16
_GC_WORD = re.compile(r"(?<![\w-])garbage-collect(?![\w-])")
_DELETE_UNTAGGED = re.compile(r"(?<![\w-])(--delete-untagged|-m)(?![\w-])")


class CommandRuntime:
    """Runs ``config.commands``. ``timeout`` bounds readonly/stop/start (seconds);
    ``gc_timeout`` bounds the GC (None: no limit, a GC of a large tree runs for hours).

    Recovery is explicit: the caller, who knows from its journal that a run was interrupted,
    calls :meth:`mark_interrupted`; :meth:`recover` then runs ``start``. Without that mark
    ``recover`` does nothing, since commands cannot tell whether the registry was left read-only.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        timeout: float = 300.0,
        gc_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.commands = config.commands
        self.timeout = timeout
        self.gc_timeout = gc_timeout
        self.interrupted = False
        self._log = get_logger(component="runtime", runtime="command")

    def mark_interrupted(self) -> None:
        """A previous run stopped half-way: the next :meth:`recover` runs ``start``."""
        self.interrupted = True

    # ---------------------------------------------------------------------------------------
    # Runtime protocol

    def describe(self) -> str:
        key = self._freeze_key()
        how = f"commands.{key}" if key else "none, gc_mode online"
        return f"command runtime (maintenance via {how})"

    def check(self) -> list[str]:
        problems = []
        if self._freeze_key() is not None and not (self.commands.readonly or self.commands.stop):
            problems.append(
                f"runtime.commands: gc_mode {self.config.gc_mode.value} needs "
                f"{'readonly' if self.config.gc_mode is GcMode.READONLY else 'stop'}, so "
                "retentiond can freeze the registry before the GC (readonly keeps pulls working)"
            )
        if not self.commands.start:
            problems.append(
                "runtime.commands.start is not set: retentiond could not bring the registry "
                "back after the GC; set it, e.g. `systemctl restart docker-registry`"
            )
        if not self.commands.gc:
            problems.append(
                "runtime.commands.gc is not set; set it, e.g. `docker-registry garbage-collect "
                "/etc/docker/registry/config.yml`"
            )
        elif _DELETE_UNTAGGED.search(self.commands.gc):
            problems.append(_DELETE_UNTAGGED_MESSAGE)
        return problems

    def config_location(self) -> ConfigLocation:
        """``runtime.registry_config``, else the 2.x default: nothing is discovered."""
        return command_config_location(self.config.registry_config)

    def registry_major(self) -> int | None:
        """Unknown: the commands run whatever registry the operator set up."""
        return None

    def registry_config_text(self) -> str | None:
        """:meth:`config_location` read from this machine (the registry runs here)."""
        path = self.config_location().path
        try:
            return Path(path).read_text(errors="replace")
        except OSError as exc:
            self._log.warning("registry config unreadable", path=path, error=str(exc))
            return None

    def recover(self) -> bool:
        """Run ``start`` when :meth:`mark_interrupted` was called; else do nothing."""
        if not self.interrupted:
            return False
        self._log.warning("a previous run was interrupted: starting the registry read-write")
        self._run("start", self._required("start"))
        self.interrupted = False
        return True

    def enter_maintenance(self) -> MaintenanceState:
        key = self._freeze_key()
        if key is None:
            self._log.warning("gc_mode online: the registry keeps accepting writes during GC")
            return MaintenanceState.ONLINE
        self._run(key, self._required(key))
        return MaintenanceState.READ_ONLY if key == "readonly" else MaintenanceState.STOPPED

    def switched_at(self) -> float | None:
        return None  # the command does what it does: from its start

    def run_gc(
        self, *, dry_run: bool = False, on_line: Callable[[str], None] | None = None
    ) -> GcOutcome:
        """The GC command, its output read line by line as it prints it (see
        :meth:`_stream`); its failure (non-zero exit) is returned, not raised."""
        command = gc_command(self._required("gc"), dry_run=dry_run)
        lines = GcLines(on_line)
        started = time.monotonic()
        code = self._stream(command, self.gc_timeout, lines)
        seconds = time.monotonic() - started
        self._log.info(
            "garbage collection finished",
            dry_run=dry_run,
            returncode=code,
            seconds=round(seconds, 3),
            lines=lines.count,
        )
        return GcOutcome(returncode=code, output=lines.output, seconds=seconds, lines=lines.count)

    def leave_maintenance(self) -> None:
        """``start``: read-write again with an empty cache (also after gc_mode online)."""
        self._run("start", self._required("start"))

    def instances(self) -> list[tuple[str, str]]:
        """Verified through ``registry.url`` (the commands' instances are not known here)."""
        return []

    # ---------------------------------------------------------------------------------------

    def _freeze_key(self) -> str | None:
        """The command that freezes the registry: ``readonly`` for gc_mode readonly (``stop``
        when only that is set), ``stop`` for gc_mode stop, none for gc_mode online."""
        mode = self.config.gc_mode
        if mode is GcMode.ONLINE:
            return None
        if mode is GcMode.READONLY and (self.commands.readonly or not self.commands.stop):
            return "readonly"
        return "stop"

    def _required(self, key: str) -> str:
        command: str | None = getattr(self.commands, key)
        if not command:
            raise RuntimeControlError(
                f"runtime.commands.{key} is not set: retentiond needs it to control the registry"
            )
        return command

    def _run(self, key: str, command: str) -> str:
        code, output = self._execute(command, self.timeout, key)
        if code != 0:
            raise RuntimeControlError(
                f"runtime.commands.{key} failed with exit code {code}: {command}\n{_tail(output)}"
            )
        return output

    def _execute(self, command: str, timeout: float | None, key: str) -> tuple[int, str]:
        """Run ``command`` with /bin/sh in its own process group; stdout and stderr go to one
        temporary file, so background processes it starts cannot make us wait for them."""
        self._log.info("running command", key=key, command=command)
        started = time.monotonic()
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    command,
                    shell=True,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeControlError(
                    f"cannot run runtime.commands.{key} ({command}): {exc}"
                ) from exc
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                _kill_group(proc)
                out.seek(0)
                output = out.read().decode("utf-8", errors="replace")
                raise RuntimeControlError(
                    f"runtime.commands.{key} did not finish within {timeout:g}s and was "
                    f"killed: {command}\n{_tail(output)}"
                ) from exc
            out.seek(0)
            output = out.read().decode("utf-8", errors="replace")
        self._log.info(
            "command finished",
            key=key,
            returncode=code,
            seconds=round(time.monotonic() - started, 3),
        )
        return code, output

    def _stream(self, command: str, timeout: float | None, lines: GcLines) -> int:
        """Run the GC ``command`` with /bin/sh in its own process group, its stdout and stderr
        on one pipe read as it comes (the lines stay whole: each is one write); its exit code.
        Reading stops when the command has exited and the pipe holds nothing more, so a
        background process it leaves behind is not waited for. On a timeout, or when
        ``on_line`` raises, the command's process group is killed."""
        self._log.info("running command", key="gc", command=command)
        read_end, write_end = os.pipe()
        try:
            try:
                proc = subprocess.Popen(
                    command,
                    shell=True,
                    stdin=subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeControlError(
                    f"cannot run runtime.commands.gc ({command}): {exc}"
                ) from exc
            finally:
                os.close(write_end)
            try:
                code = _read_until_exit(proc, read_end, lines.stream(), timeout)
            except BaseException:
                if proc.poll() is None:
                    _kill_group(proc)
                raise
        finally:
            os.close(read_end)
        if code is None:
            _kill_group(proc)
            raise RuntimeControlError(
                f"runtime.commands.gc did not finish within {timeout:g}s and was killed: "
                f"{command}\n{_tail(lines.output)}"
            )
        return code


class NoRuntime:
    """``runtime.kind: none``: retentiond deletes tags and manifests and reports what the GC
    would reclaim, but never touches the registry process and never runs the GC."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()

    def describe(self) -> str:
        return "no runtime (runtime.kind none: deletions only, the GC is left to the operator)"

    def check(self) -> list[str]:
        return []

    def registry_config_text(self) -> str | None:
        return None

    def registry_major(self) -> int | None:
        return None

    def recover(self) -> bool:
        return False

    def enter_maintenance(self) -> MaintenanceState:
        return MaintenanceState.ONLINE

    def switched_at(self) -> float | None:
        return None

    def run_gc(
        self, *, dry_run: bool = False, on_line: Callable[[str], None] | None = None
    ) -> GcOutcome:
        raise RuntimeControlError(
            "runtime.kind is none: retentiond deletes but never runs the GC; run "
            "`registry garbage-collect CONFIG` yourself with the registry read-only or stopped, "
            "or set runtime.kind to docker or command"
        )

    def leave_maintenance(self) -> None:
        return None

    def instances(self) -> list[tuple[str, str]]:
        return []


_DELETE_UNTAGGED_MESSAGE = (
    "runtime.commands.gc uses --delete-untagged (-m): on registry 2.8 it deletes the children "
    "of every tagged multi-arch image; remove it (retentiond unlinks untagged manifests itself)"
)


def gc_command(command: str, *, dry_run: bool) -> str:
    """The GC command to run: refused with ``--delete-untagged``; for a dry run, with
    ``--dry-run`` inserted after ``garbage-collect``."""
    if _DELETE_UNTAGGED.search(command):
        raise RuntimeControlError(_DELETE_UNTAGGED_MESSAGE)
    if not dry_run or re.search(r"(?<![\w-])--dry-run(?![\w-])", command):
        return command
    if not _GC_WORD.search(command):
        raise RuntimeControlError(
            f"cannot make a dry run of runtime.commands.gc ({command}): it has no "
            "`garbage-collect` word after which to add --dry-run; write the registry's "
            "command line in it (e.g. `docker-registry garbage-collect CONFIG`)"
        )
    return _GC_WORD.sub("garbage-collect --dry-run", command, count=1)


def _tail(output: str, lines: int = TAIL_LINES) -> str:
    kept = output.rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def _read_until_exit(
    proc: subprocess.Popen[bytes], fd: int, cutter: LineCutter, timeout: float | None
) -> int | None:
    """Feed what ``proc`` writes to the pipe ``fd`` into ``cutter`` until it has exited and
    the pipe holds nothing more (or is closed); its exit code, or None when it still runs
    ``timeout`` seconds after the start."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            code = proc.poll()
            if code is None and deadline is not None and time.monotonic() >= deadline:
                return None
            # once it exited, only what the pipe holds now; before, wake up to look again
            if selector.select(_POLL_SECONDS if code is None else 0):
                data = os.read(fd, _READ_BYTES)
                if data:
                    cutter.feed(data)
                    continue
                if code is None:  # it closed its output and goes on: wait for its exit
                    code = _wait(proc, deadline)
                break
            if code is not None:
                break
    cutter.close()
    return code


def _wait(proc: subprocess.Popen[bytes], deadline: float | None) -> int | None:
    """The exit code of ``proc``, or None if it still runs at ``deadline``."""
    try:
        return proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()
