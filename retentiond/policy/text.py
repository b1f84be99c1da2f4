"""Quoting what a config or policy file contains, safely, in one-line error messages.

A policy file can be a symbolic link to any file on the machine (``/etc/passwd``, a key), and
``check`` runs in CI whose logs are public: no message may echo more than a short excerpt of a
file. :func:`excerpt` is the one way to quote file content: at most :data:`EXCERPT_LENGTH`
characters, control and non-printable characters escaped, so a message stays one line.
"""

from __future__ import annotations

import re

EXCERPT_LENGTH = 40

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def excerpt(value: object, limit: int = EXCERPT_LENGTH, *, quoted: bool = True) -> str:
    """``repr`` of the first ``limit`` characters of ``value`` (as text), ``...`` when cut.

    ``quoted=False`` leaves out the quotes (for numbers and the like).
    """
    text = value if isinstance(value, str) else str(value)
    shown = repr(text[:limit])
    if not quoted:
        shown = shown[1:-1]
    return shown if len(text) <= limit else shown + "..."


def shorten_quotes(message: str, limit: int = EXCERPT_LENGTH) -> str:
    """A foreign message (PyYAML's) on one line, every quoted part in it cut to an excerpt."""

    def cut(match: re.Match[str]) -> str:
        quote, inner = match.group(0)[0], match.group(0)[1:-1]
        if len(inner) <= limit:
            return match.group(0)
        return f"{quote}{inner[:limit]}...{quote}"

    one_line = "".join(c if c.isprintable() else " " for c in message)
    shortened = _QUOTED.sub(cut, " ".join(one_line.split()))
    most = 2 * limit + 120  # the foreign text around the quotes: never a whole line of a file
    return shortened if len(shortened) <= most else shortened[:most] + "..."
