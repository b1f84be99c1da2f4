"""The ``pulls:`` section of the config: where ``serve`` listens for the registry's
notifications, and the bearer token the registry must send.

Read by :func:`read_pulls`, called from :mod:`retentiond.config` (this module does not import
it: the listen address is checked by the reader it is given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retentiond.policy.files import SourceFileError, read_source_file
from retentiond.policy.yaml_positions import YamlValue
from retentiond.yaml_checker import Checker, is_null

PULLS_KEYS = ("listen", "token_file")


@dataclass(frozen=True, slots=True)
class PullsConfig:
    #: host:port of the notification listener; None: pull tracking is off
    listen: str | None = None
    #: the file holding the bearer token the registry sends (its endpoint's headers)
    token_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.listen is not None


class TokenError(ValueError):
    """The token file cannot be read or holds no usable token; the message says why."""


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (its first line, without surrounding blanks)."""
    try:
        text = read_source_file(path, "token file")
    except SourceFileError as exc:
        raise TokenError(
            f"pulls.token_file {path}: {exc}; fix the path or its permissions"
        ) from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise TokenError(
            f"pulls.token_file {path} is empty; write a random token in it, e.g. "
            f"openssl rand -hex 32 > {path}"
        )
    if len(lines) > 1 or any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        raise TokenError(
            f"pulls.token_file {path}: the token must be one line of printable ASCII without "
            "blanks (it travels in an HTTP header); e.g. openssl rand -hex 32"
        )
    return token


def read_pulls(
    c: Checker,
    value: YamlValue | None,
    base: Path,
    read_listen: Callable[[YamlValue, str], str | None],
) -> PullsConfig:
    """The ``pulls:`` section (absent or null: tracking off); problems go to ``c``. The token
    file must hold a usable token when ``listen`` is set."""
    if value is None:
        return PullsConfig()
    section = c.read_mapping(value, "pulls", PULLS_KEYS, null_is_empty=True)
    if section is None:
        return PullsConfig()
    entries = section.entries
    listen_value = entries["listen"].value if "listen" in entries else None
    token_value = entries["token_file"].value if "token_file" in entries else None
    listen = (
        None
        if listen_value is None or is_null(listen_value)
        else read_listen(listen_value, "pulls.listen")
    )
    token_name = c.read_optional_string(token_value, "pulls.token_file")
    token_file = base / token_name if token_name else None
    if listen is not None and token_file is None and (token_value is None or is_null(token_value)):
        c.problem(
            entries["listen"].key_position,
            "pulls.token_file is required with pulls.listen: the registry must authenticate "
            "its notifications with a bearer token; write one to a file (openssl rand -hex 32 "
            "> /etc/retentiond/pulls.token) and name it here",
        )
    elif listen is not None and token_file is not None and token_value is not None:
        try:
            read_token(token_file)
        except TokenError as exc:
            c.problem(token_value, str(exc))
    if listen is None and token_file is not None and token_value is not None:
        c.warning(token_value, "pulls.token_file is ignored without pulls.listen")
    return PullsConfig(listen=listen, token_file=token_file)
