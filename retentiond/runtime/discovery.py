"""Which registry runs, and which config file it reads: decided from what Docker and the
registry say, without I/O.

The registry reads the config file named by the first argument of ``registry serve``, else
by ``REGISTRY_CONFIGURATION_PATH`` in its environment (upstream's ``resolveConfiguration``, the
same in 2.x and 3.x). The official images run ``/entrypoint.sh`` with the config file as their
command (``CMD ["/etc/distribution/config.yml"]`` for ``registry:3``,
``/etc/docker/registry/config.yml`` for ``registry:2``), which the entrypoint turns into
``registry serve FILE``. So, in order (:func:`locate_registry_config`):

1. ``runtime.registry_config``, when the operator wrote it, always;
2. the container's command line (``docker inspect``'s ``Path`` and ``Args``, else the image's
   ``Entrypoint`` and ``Cmd``): the argument after ``serve``, else the first argument ending
   in ``.yml`` or ``.yaml`` (also inside a ``sh -c`` script); a relative path is relative to
   the container's working directory;
3. ``REGISTRY_CONFIGURATION_PATH`` in the container's environment;
4. the default of the registry's major version, from ``registry --version``: v3
   ``/etc/distribution/config.yml``, v2 ``/etc/docker/registry/config.yml`` (a container whose
   start script hides the file, say).

``runtime.kind: command`` does not discover: the config file is ``runtime.registry_config``,
else the 2.x default (:func:`command_config_location`).

Tested registry versions: 2.8.2 (Debian's ``docker-registry``) and 3.1.1 (upstream's tag).
The 2.8 and 3.1 lines count as tested (their patch releases fix bugs and security issues and
change neither the storage layout nor the GC); any other version gets a warning from
``check``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

V3_CONFIG = "/etc/distribution/config.yml"
V2_CONFIG = "/etc/docker/registry/config.yml"
CONFIG_ENV = "REGISTRY_CONFIGURATION_PATH"
#: the versions the test suite runs against, and the release lines that count as tested
TESTED_VERSIONS = ("2.8.2", "3.1.1")
TESTED_LINES = ((2, 8), (3, 1))

FROM_SETTING = "from runtime.registry_config"
FROM_COMMAND = "from the container's command"
FROM_ENV = f"from {CONFIG_ENV} in the container's environment"
V3_DEFAULT = "default for v3"
V2_DEFAULT = "default for v2"
COMMAND_DEFAULT = "the 2.x default; runtime.kind: command does not look for it"

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(\S*)")
_CONFIG_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class RegistryVersion:
    """What ``registry --version`` said: ``<argv0> <package> <version>``, e.g.
    ``registry github.com/distribution/distribution/v3 v3.1.1`` or Debian's
    ``/usr/bin/docker-registry github.com/docker/distribution 2.8.2+ds1``."""

    major: int
    minor: int
    patch: int
    #: what follows the patch number (``+ds1``, ``+unknown``, ``-rc.1``), as printed
    suffix: str = ""
    #: the Go package it was built from (``github.com/docker/distribution``), "" if not said
    package: str = ""

    @property
    def number(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __str__(self) -> str:
        """``distribution v3.1.1``, with the suffix the binary printed."""
        return f"distribution v{self.number}{self.suffix}"

    @property
    def tested(self) -> bool:
        """Whether its release line (2.8, 3.1) is one retentiond is tested against."""
        return (self.major, self.minor) in TESTED_LINES


def parse_registry_version(output: str) -> RegistryVersion | None:
    """The version in ``registry --version``'s output; None when it names none."""
    for line in output.splitlines():
        words = line.split()
        for n in range(len(words) - 1, -1, -1):
            match = _VERSION.fullmatch(words[n])
            if match:
                major, minor, patch, suffix = match.groups()
                package = words[n - 1] if n >= 2 else ""
                return RegistryVersion(int(major), int(minor), int(patch), suffix, package)
    return None


@dataclass(frozen=True, slots=True)
class ConfigLocation:
    """The registry's config file as the registry process sees it, and how it was found."""

    path: str
    how: str

    def __str__(self) -> str:
        return f"{self.path} ({self.how})"


def container_argv(info: Mapping[str, Any]) -> list[str]:
    """The container's command line: the process it runs (``Path``, ``Args``), else the
    image's entrypoint and command as the container's config holds them."""
    if info.get("Path"):
        return [str(info["Path"]), *(str(a) for a in info.get("Args") or [])]
    cfg = info.get("Config") or {}
    return [str(a) for a in [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]]


def config_in_command(argv: Sequence[str]) -> str | None:
    """The config file a registry command line names: the argument after ``serve``, else the
    first one ending in ``.yml``/``.yaml``. An argument with spaces (a ``sh -c`` script) is
    read as shell words too; a word with a ``$`` (a variable) names nothing we can know."""
    words: list[str] = []
    for arg in argv[1:]:
        if any(c.isspace() for c in arg):
            try:
                words.extend(shlex.split(arg))
            except ValueError:
                continue
        else:
            words.append(arg)
    words = [w for w in words if "$" not in w and "`" not in w]
    for n, word in enumerate(words[:-1]):
        if word == "serve" and not words[n + 1].startswith("-"):
            return words[n + 1]
    for word in words:
        if word.endswith(_CONFIG_SUFFIXES) and not word.startswith("-"):
            return word
    return None


def locate_registry_config(
    explicit: str | None,
    info: Mapping[str, Any],
    version: RegistryVersion | None = None,
) -> ConfigLocation | None:
    """Where the registry of the container ``info`` (``docker inspect``'s data) reads its
    config file (see the module's docstring for the order). ``version`` is needed only when
    neither the setting, the command nor the environment says (:func:`needs_version`); None
    when nothing tells."""
    if explicit:
        return ConfigLocation(explicit, FROM_SETTING)
    cfg = info.get("Config") or {}
    named = config_in_command(container_argv(info))
    workdir = str(cfg.get("WorkingDir") or "/")
    if named:
        return ConfigLocation(posixpath.normpath(posixpath.join(workdir, named)), FROM_COMMAND)
    env = dict(str(e).split("=", 1) for e in cfg.get("Env") or [] if "=" in str(e))
    if env.get(CONFIG_ENV):
        return ConfigLocation(
            posixpath.normpath(posixpath.join(workdir, env[CONFIG_ENV])), FROM_ENV
        )
    if version is not None and version.major == 3:
        return ConfigLocation(V3_CONFIG, V3_DEFAULT)
    if version is not None and version.major == 2:
        return ConfigLocation(V2_CONFIG, V2_DEFAULT)
    return None


def needs_version(explicit: str | None, info: Mapping[str, Any]) -> bool:
    """Whether :func:`locate_registry_config` needs the registry's version for ``info``."""
    return locate_registry_config(explicit, info) is None


def command_config_location(explicit: str | None) -> ConfigLocation:
    """``runtime.kind: command``: what the operator wrote, else the 2.x default."""
    if explicit:
        return ConfigLocation(explicit, FROM_SETTING)
    return ConfigLocation(V2_CONFIG, COMMAND_DEFAULT)


@dataclass(frozen=True, slots=True)
class RegistryFacts:
    """What ``check`` reports about the registry container: its version and config file, or
    why either is unknown."""

    container: str
    version: RegistryVersion | None
    version_error: str | None
    config: ConfigLocation | None
    config_error: str | None
    #: what would stop a maintenance run (:meth:`Runtime.check`)
    problems: tuple[str, ...] = ()
    #: with ``runtime.containers``: a line per instance (its storage, where it is verified)
    instances: tuple[str, ...] = ()
