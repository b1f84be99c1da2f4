"""The command line: argument parsing and the one error boundary.

Exit codes: 0 success; 1 the job failed; 2 bad usage, invalid config or policy; 3 internal error;
130 interrupted.

Output that cannot be written ends the command with 1 and one line on the other stream when it
still works, never a traceback: stdout on a full disk (``> /dev/full``, at a write or at the
final flush, which is done here and not at exit), closed (``>&-``) or read no further
(``| head``); stderr closed or full (the log lines are counted as lost, see
:mod:`retentiond.logs`, and the command goes on to its end). A closed fd 0-2 gets /dev/null,
so no file opened later takes its number.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from retentiond import __version__, logs
from retentiond.errors import RetentiondError, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retentiond",
        description="Retention policies and safe garbage collection for a Docker registry.",
    )
    parser.add_argument("--version", action="version", version=f"retentiond {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $RETENTIOND_CONFIG, ./retentiond.yaml, "
        "/etc/retentiond/retentiond.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate the config and policy files; changes nothing")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="only these policy files (for pre-commit hooks)",
    )

    plan = sub.add_parser("plan", help="show what a maintenance run would delete now, and why")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--repository",
        metavar="GLOB",
        action="append",
        help="show only repositories matching GLOB (repeatable)",
    )
    plan.add_argument(
        "--quiet", "-q", action="store_true", help="table only, without one line per deleted tag"
    )

    verify = sub.add_parser("verify", help="check every tag resolves to a complete image on disk")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")

    apply = sub.add_parser(
        "apply", help="run one maintenance now: freeze, delete, one GC, restart, verify"
    )
    apply.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="check and plan, change nothing in the tree or the registry",
    )
    apply.add_argument(
        "--no-gc",
        action="store_true",
        help="remove tags and manifests but do not run the GC (undo stays possible)",
    )
    sub.add_parser(
        "serve",
        help="the daemon: plan on a schedule, maintain inside windows, "
        "serve /metrics, /healthz, /readyz, /status",
    )
    undo = sub.add_parser("undo", help="put back what a run removed, until the next GC")
    undo.add_argument("run_id", metavar="RUN_ID")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    config_arg = Path(args.config) if args.config else None
    if args.command == "check":
        from retentiond.commands.check import run_check

        return run_check(config_arg, list(args.paths))
    if args.command == "plan":
        from retentiond.commands.plan import run_plan

        return run_plan(
            config_arg, as_json=args.json, repositories=args.repository, quiet=args.quiet
        )
    if args.command == "verify":
        from retentiond.commands.verify import run_verify

        return run_verify(config_arg, as_json=args.json)
    if args.command == "apply":
        from retentiond.commands.apply import run_apply

        return run_apply(config_arg, yes=args.yes, dry_run=args.dry_run, no_gc=args.no_gc)
    if args.command == "serve":
        from retentiond.commands.serve import run_serve

        return run_serve(config_arg)
    if args.command == "undo":
        from retentiond.commands.undo import run_undo

        return run_undo(config_arg, args.run_id)
    raise UsageError(f"unknown command {args.command}")


class OutputError(Exception):
    """Writing to stdout or stderr failed (disk full, closed, the reader went away).

    Not an OSError, so that nothing on the way that handles OSErrors (argparse swallows them
    when it prints --help) takes it for its own: it reaches the boundary."""

    def __init__(self, stream: str, cause: OSError) -> None:
        super().__init__(stream, cause)
        self.stream = stream
        self.cause = cause

    def __str__(self) -> str:
        reason = self.cause.strerror or str(self.cause)
        return f"cannot write to {self.stream}: {reason}"


class _ClosedStream(io.TextIOBase):
    """What stands for a standard stream Python found closed (``>&-``): writing fails."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.stream_name = name

    def write(self, text: str) -> int:
        if not text:
            return 0
        raise OSError(errno.EBADF, f"{self.stream_name} is closed")

    def isatty(self) -> bool:
        return False


class _Output:
    """A standard stream whose write errors become :class:`OutputError` naming it, so the
    boundary tells an output failure from any other OSError."""

    def __init__(self, stream: TextIO | io.TextIOBase, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputError(self._name, exc) from exc

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputError(self._name, exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _open_closed_descriptors() -> None:
    """Put /dev/null on each of fds 0-2 that is closed, so that no file opened later takes
    its number (and a print or a child process write into it)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


@contextmanager
def _guarded_streams() -> Iterator[None]:
    """sys.stdout and sys.stderr as :class:`_Output` for the duration of a command."""
    saved = sys.stdout, sys.stderr
    _open_closed_descriptors()
    sys.stdout = _Output(sys.stdout or _ClosedStream("stdout"), "stdout")
    sys.stderr = _Output(sys.stderr or _ClosedStream("stderr"), "stderr")
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _say(message: str) -> None:
    """One line on stderr, if stderr can still take it."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        _silence(2)


def _silence(fd: int) -> None:
    """Send ``fd`` to /dev/null: what is still buffered for it is dropped at exit instead of
    failing again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(null, fd)
    os.close(null)


def _flush_outputs() -> None:
    """Flush stdout then stderr here, where a failure is caught, not at exit."""
    sys.stdout.flush()
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    with _guarded_streams():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help is 0, bad usage 2
            _flush_outputs()
            return int(exc.code or 0)
        except OutputError as exc:
            if exc.stream != "stderr":
                raise
            _silence(2)  # argparse writes to stderr only the usage error it exits 2 with
            return 2
        command = f"retentiond {args.command}"
        logs.reset_lost_lines()
        code = _run(args, command)
        _flush_outputs()
        if code == 0 and logs.lost_lines():
            return 1  # its log could not be written (stderr closed or full): nowhere to say so
        return code
    except (OutputError, BrokenPipeError) as exc:
        return _output_failed(exc, "retentiond")


def _run(args: argparse.Namespace, command: str) -> int:
    """The one error boundary: the command's exit code."""
    try:
        return _dispatch(args)
    except RetentiondError as exc:
        _say(f"{command}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except (OutputError, BrokenPipeError) as exc:
        return _output_failed(exc, command)
    except Exception:
        _say(
            f"{command}: internal error (a bug in retentiond; please report it with the "
            "traceback below):"
        )
        try:
            traceback.print_exc()
        except OSError:
            _silence(2)
        return 3


def _output_failed(exc: OutputError | BrokenPipeError, command: str) -> int:
    """Writing the output failed: one line on the stream that still works, exit 1."""
    stream = exc.stream if isinstance(exc, OutputError) else "stdout"
    _silence(1 if stream == "stdout" else 2)  # the buffered rest must not fail again at exit
    if isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OutputError) and isinstance(exc.cause, BrokenPipeError)
    ):
        _say(f"{command}: output closed before all was written")
    elif stream == "stdout":
        _say(f"{command}: {exc}; the output is incomplete")
    return 1


if __name__ == "__main__":
    sys.exit(main())
