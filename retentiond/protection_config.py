"""The ``protect:`` section of the config file: where the images in use are read from.

```yaml
protect:
  docker_hosts: [unix:///var/run/docker.sock, tcp://build-1:2375]
  files: [/run/deploy/images.txt]     # relative paths: to the config file's directory
```

Both default to empty (no protection). A Docker host is ``unix:///absolute/path`` or
``tcp://host[:port]``; a file is any path (it may not exist yet when ``check`` runs in a
pre-commit hook: that is a warning of ``check``, and a skipped window at run time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from retentiond.policy.text import excerpt
from retentiond.policy.yaml_positions import YamlList, YamlScalar, YamlValue
from retentiond.yaml_checker import Checker, is_null

PROTECT_KEYS = ("docker_hosts", "files")
DOCKER_SCHEMES = ("unix", "tcp")


@dataclass(frozen=True, slots=True)
class ProtectConfig:
    docker_hosts: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.docker_hosts or self.files)


def read_protect(c: Checker, value: YamlValue | None, base: Path) -> ProtectConfig:
    """The ``protect`` section (None when absent); problems go to ``c``."""
    if value is None:
        return ProtectConfig()
    mapping = c.read_mapping(value, "protect", PROTECT_KEYS, null_is_empty=True)
    entries = {k: e.value for k, e in mapping.entries.items()} if mapping else {}
    hosts = [
        host
        for text, node in _strings(c, entries.get("docker_hosts"), "protect.docker_hosts")
        if (host := _docker_host(c, text, node)) is not None
    ]
    files = [base / text for text, _ in _strings(c, entries.get("files"), "protect.files")]
    for what, items in (("protect.docker_hosts", hosts), ("protect.files", files)):
        seen: set[object] = set()
        for item in items:
            if item in seen:
                c.warning(entries[what.partition(".")[2]], f"{what}: {item} is listed twice")
            seen.add(item)
    return ProtectConfig(tuple(dict.fromkeys(hosts)), tuple(dict.fromkeys(files)))


_EXAMPLES = {
    "protect.docker_hosts": "[unix:///var/run/docker.sock]",
    "protect.files": "[/run/deploy/images.txt]",
}


def _strings(c: Checker, value: YamlValue | None, what: str) -> list[tuple[str, YamlScalar]]:
    """A list of non-empty strings (empty or null: none), each with its node."""
    if value is None or is_null(value):
        return []
    if not isinstance(value, YamlList):
        c.problem(value, f"{what} must be a list of strings, e.g. {_EXAMPLES[what]}")
        return []
    out = []
    for item in value.items:
        text = c.read_string(item, f"{what} entry")
        if text is not None and isinstance(item, YamlScalar):
            out.append((text.strip(), item))
    return out


def _docker_host(c: Checker, text: str, node: YamlScalar) -> str | None:
    what = "protect.docker_hosts"
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        c.problem(node, f"{what}: {excerpt(text)} is not a URL ({exc})")
        return None
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            c.problem(
                node,
                f"{what}: {excerpt(text)}: write a socket as unix:///absolute/path, e.g. "
                "unix:///var/run/docker.sock",
            )
            return None
        return text
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.path not in ("", "/"):
            c.problem(
                node, f"{what}: {excerpt(text)}: write tcp://HOST:PORT, e.g. tcp://build-1:2375"
            )
            return None
        return text.rstrip("/")
    c.problem(
        node,
        f"{what}: {excerpt(text)}: the scheme must be one of {', '.join(DOCKER_SCHEMES)} "
        "(unix:///var/run/docker.sock or tcp://HOST:2375)",
    )
    return None
