"""structlog, configured once: JSON lines when not on a TTY (or ``format: json``), else readable.

Log lines go to stderr, so that stdout stays the command's output. A line that cannot be
written (stderr closed or on a full disk) is counted, not raised: a maintenance must not stop
half-way because its log could not be written. The CLI ends such a command with exit 1.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from retentiond.core.names import printable


class _Stderr:
    """The log's file: whatever ``sys.stderr`` is when a line is written; failures counted."""

    lost = 0

    def write(self, text: str) -> int:
        try:
            if sys.stderr is None:
                raise OSError("stderr is closed")
            return sys.stderr.write(text)
        except OSError:
            _Stderr.lost += 1
            return 0

    def flush(self) -> None:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
        except OSError:
            _Stderr.lost += 1


_STDERR = _Stderr()


def lost_lines() -> int:
    """How many log lines (or flushes) failed since :func:`reset_lost_lines`."""
    return _Stderr.lost


def reset_lost_lines() -> None:
    _Stderr.lost = 0


def _escape_controls(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Escape control characters in string values (names from the tree): a readable line stays
    one line, with no terminal escapes. JSON lines are escaped by the JSON renderer."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = printable(value)
    return event


#: the arguments of the last :func:`configure_logging` (a child process is set up the same way)
_SETUP = ("auto", "info")


def logging_setup() -> tuple[str, str]:
    """``(fmt, level)`` as last given to :func:`configure_logging`."""
    return _SETUP


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Set up the structlog pipeline; logs go to stderr so stdout stays the command's output."""
    global _SETUP
    _SETUP = (fmt, level)
    console = fmt == "console" or (fmt == "auto" and sys.stderr is not None and sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors += [_escape_controls, structlog.dev.ConsoleRenderer()]
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("retentiond").bind(**context)
