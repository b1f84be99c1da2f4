"""The ``notify`` section of the config file and the format of a webhook's ``headers_file``.

```yaml
notify:
  webhooks:
    - url: https://hooks.slack.com/services/T000/B000/XXXX
      headers: {X-Source: retentiond}       # optional, strings only
      headers_file: secrets/webhook.headers # optional, "Name: value" lines (secrets), relative
                                            #   to the config file, read at each notification
      timeout: 10s                          # optional, at most 60s
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from retentiond.policy.files import SourceFileError, read_source_file
from retentiond.policy.text import excerpt
from retentiond.policy.yaml_positions import YamlList, YamlMap, YamlScalar, YamlValue, describe
from retentiond.yaml_checker import Checker, is_null

DEFAULT_TIMEOUT = timedelta(seconds=10)
#: a webhook never holds a run longer than this (the run lock is held while it is sent)
MAX_TIMEOUT = timedelta(seconds=60)
WEBHOOK_KEYS = ("url", "headers", "headers_file", "timeout")
#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: set by retentiond itself: a config that sets them is mistaken
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    headers_file: Path | None = None
    timeout: timedelta = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    webhooks: tuple[Webhook, ...] = field(default=())


class HeadersFileError(ValueError):
    """A ``headers_file`` whose content is not ``Name: value`` lines; says which line."""


def header_problem(name: str, value: str) -> str | None:
    """What is wrong with one header, or None."""
    if not _HEADER_NAME.fullmatch(name):
        return f"{excerpt(name)} is not a valid HTTP header name (letters, digits, '-')"
    if name.lower() in _RESERVED_HEADERS:
        return f"header {name} is set by retentiond; remove it"
    if any(ch in value for ch in "\r\n\0"):
        return f"the value of header {name} contains a line break or NUL"
    return None


def parse_headers_file(text: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` lines; blank lines and lines starting with ``#`` are skipped.
    HeadersFileError names the first bad line (never its content: it may be a secret)."""
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        problem = (
            "not a 'Name: value' line" if not colon or not name else header_problem(name, value)
        )
        if problem is not None:
            raise HeadersFileError(f"line {number}: {problem}")
        headers.append((name, value))
    return tuple(headers)


def read_headers_file(path: Path) -> tuple[tuple[str, str], ...]:
    """The headers in ``path``; HeadersFileError says what is wrong and where."""
    try:
        text = read_source_file(path, "headers file")
    except SourceFileError as exc:
        raise HeadersFileError(f"{path}: {exc}") from exc
    try:
        return parse_headers_file(text)
    except HeadersFileError as exc:
        raise HeadersFileError(f"{path}, {exc}") from None


def read_notify(c: Checker, value: YamlValue | None, base: Path) -> NotifyConfig:
    """The ``notify`` section; problems and warnings go to ``c``."""
    if value is None:
        return NotifyConfig()
    section = c.read_mapping(value, "notify", ("webhooks",), null_is_empty=True)
    if section is None or "webhooks" not in section.entries:
        return NotifyConfig()
    hooks = section.entries["webhooks"].value
    if is_null(hooks):
        return NotifyConfig()
    if not isinstance(hooks, YamlList):
        c.problem(
            hooks,
            f"notify.webhooks must be a list of {{url: ..., headers: {{...}}}}, got"
            f" {describe(hooks)}",
        )
        return NotifyConfig()
    webhooks = (
        _read_webhook(c, item, f"notify.webhooks[{i}]", base) for i, item in enumerate(hooks.items)
    )
    return NotifyConfig(tuple(w for w in webhooks if w is not None))


def _read_webhook(c: Checker, value: YamlValue, what: str, base: Path) -> Webhook | None:
    if isinstance(value, YamlScalar) and isinstance(value.value, str):
        c.problem(value, f"{what} must be a mapping; write - url: {excerpt(value.value)}")
        return None
    hook = c.read_mapping(value, what, WEBHOOK_KEYS)
    if hook is None:
        return None
    values = {key: entry.value for key, entry in hook.entries.items()}
    if "url" not in values:
        c.problem(hook, f"{what}: url is required, e.g. url: https://chat.example.com/hooks/abc")
    url = _read_url(c, values["url"], f"{what}.url") if "url" in values else None
    headers = _read_headers(c, values["headers"], f"{what}.headers") if "headers" in values else ()
    headers_file = None
    if not is_null(values.get("headers_file")):
        name = c.read_string(values["headers_file"], f"{what}.headers_file")
        if name is not None:
            headers_file = base / name
            _check_headers_file(c, values["headers_file"], f"{what}.headers_file", headers_file)
    timeout = DEFAULT_TIMEOUT
    if not is_null(values.get("timeout")):
        read = c.read_duration(values["timeout"], f"{what}.timeout", allow_zero=False)
        if read is not None and read > MAX_TIMEOUT:
            c.problem(
                values["timeout"],
                f"{what}.timeout must be at most {int(MAX_TIMEOUT.total_seconds())}s: the run"
                " waits for its webhooks",
            )
        elif read is not None:
            timeout = read
    if url is None or headers is None:
        return None
    return Webhook(url, headers, headers_file, timeout)


def _read_url(c: Checker, value: YamlValue, what: str) -> str | None:
    text = c.read_string(value, what)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError as exc:
        c.problem(value, f"{what} is not a URL ({exc}); got {excerpt(text)}")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        c.problem(
            value,
            f"{what} must be an http or https URL, like https://chat.example.com/hooks/abc;"
            f" got {excerpt(text)}",
        )
        return None
    return text


def _read_headers(c: Checker, value: YamlValue, what: str) -> tuple[tuple[str, str], ...] | None:
    """A mapping of header names to string values; None after a problem."""
    if is_null(value):
        return ()
    if not isinstance(value, YamlMap):
        c.problem(
            value, f"{what} must be a mapping of header names to strings, got {describe(value)}"
        )
        return None
    headers: list[tuple[str, str]] = []
    ok = True
    for entry in value.entries.values():
        item = entry.value
        if not isinstance(item, YamlScalar) or not isinstance(item.value, str):
            hint = "; quote it" if isinstance(item, YamlScalar) and item.value is not None else ""
            c.problem(item, f"{what}.{entry.key} must be a string, got {describe(item)}{hint}")
            ok = False
            continue
        problem = header_problem(entry.key, item.value)
        if problem is not None:
            c.problem(entry.key_position, f"{what}: {problem}")
            ok = False
            continue
        headers.append((entry.key, item.value))
    return tuple(headers) if ok else None


def _check_headers_file(c: Checker, value: YamlValue, what: str, path: Path) -> None:
    """A malformed file is a problem; one that cannot be read here is a warning (``check`` may
    run where the secret is not installed; the webhook fails, logged, until it is)."""
    try:
        text = read_source_file(path, "headers file")
    except SourceFileError as exc:
        c.warning(value, f"{what}: {path}: {exc}; this webhook fails until the file can be read")
        return
    try:
        parse_headers_file(text)
    except HeadersFileError as exc:
        c.problem(value, f"{what}: {path}, {exc}; write one header a line, as 'Name: value'")
