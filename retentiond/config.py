"""The daemon's configuration file: find it, read it, validate every field, build a frozen value.

:func:`check_config` never raises: it returns the :class:`Config` (None when there are problems),
every problem, the warnings (valid but risky settings) and the policy paths it names.
:func:`load_config` raises one :class:`~retentiond.errors.ConfigError` with every problem.
Relative paths in the file (policies, registry.root, registry.config_file,
registry.password_file, state_dir) are relative to the directory of the config file.
``registry.storage`` and ``registry.config_file``: :mod:`retentiond.storage_config`.
"""

from __future__ import annotations

import enum
import os
import re
import stat
import zoneinfo
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from retentiond.errors import ConfigError, SourceProblem, UsageError
from retentiond.notify.settings import NotifyConfig, read_notify
from retentiond.policy.files import SourceFileError, file_kind, read_source_file
from retentiond.policy.model import Safety
from retentiond.policy.text import excerpt, shorten_quotes
from retentiond.policy.yaml_positions import (
    Position,
    YamlList,
    YamlMap,
    YamlScalar,
    YamlValue,
    load_yaml,
)
from retentiond.protection_config import ProtectConfig, read_protect
from retentiond.pulls.settings import PullsConfig, read_pulls
from retentiond.storage.location import Location
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage_config import read_registry_storage
from retentiond.yaml_checker import Checker, is_null

T = TypeVar("T")

ENV_VAR = "RETENTIOND_CONFIG"
PASSWORD_ENV_VAR = "RETENTIOND_REGISTRY_PASSWORD"
LOCAL_CONFIG = Path("retentiond.yaml")
SYSTEM_CONFIG = Path("/etc/retentiond/retentiond.yaml")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CONFIG_KEYS = (
    "registry",
    "runtime",
    "policies",
    "schedule",
    "safety",
    "metrics",
    "state_dir",
    "log",
    "notify",
    "pulls",
    "protect",
)


class CacheKind(enum.StrEnum):
    INMEMORY = "inmemory"
    REDIS = "redis"
    NONE = "none"


class RuntimeKind(enum.StrEnum):
    DOCKER = "docker"
    COMMAND = "command"
    NONE = "none"  # delete and report, never GC


class GcMode(enum.StrEnum):
    READONLY = "readonly"
    STOP = "stop"
    ONLINE = "online"


class LogFormat(enum.StrEnum):
    JSON = "json"
    CONSOLE = "console"
    AUTO = "auto"  # console on a TTY, else JSON


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    #: the filesystem rootdirectory (``registry.root``, or ``storage.filesystem``)
    root: Path = Path("/var/lib/registry")
    url: str = "http://127.0.0.1:5000"
    username: str | None = None
    password_file: Path | None = None
    tls_verify: bool = True
    cache: CacheKind = CacheKind.INMEMORY
    redis_url: str | None = None
    #: the bucket, when the registry's storage is ``s3`` (``registry.storage`` or
    #: ``registry.config_file``); None: the filesystem at ``root``
    s3: S3Settings | None = None
    #: the registry's config.yml that storage (and redis) were read from, if any
    config_file: Path | None = None

    @property
    def location(self) -> Location:
        """Where the storage is: the bucket when set, else ``root``."""
        return self.s3 if self.s3 is not None else self.root


#: the keys of the ``registry`` section (``s3`` is not one: it is read from ``storage``)
REGISTRY_KEYS = (*(k for k in RegistryConfig.__dataclass_fields__ if k != "s3"), "storage")


@dataclass(frozen=True, slots=True)
class RuntimeCommands:
    """Shell commands for ``runtime.kind: command``."""

    readonly: str | None = None
    stop: str | None = None
    start: str | None = None
    gc: str | None = None


COMMAND_KEYS = ("readonly", "stop", "start", "gc")


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    kind: RuntimeKind = RuntimeKind.DOCKER
    container: str = "registry"
    #: the registry's config file as the registry process sees it; None: kind docker finds it
    #: (the container's command, else its version's default), kind command uses the 2.x
    #: default /etc/docker/registry/config.yml (see retentiond.runtime.discovery)
    registry_config: str | None = None
    gc_mode: GcMode = GcMode.READONLY
    commands: RuntimeCommands = field(default_factory=RuntimeCommands)
    #: kind docker, replicas sharing one storage (and one redis): every container is switched
    #: together, the GC runs once (retentiond.runtime.replicas); () when ``container`` is used
    containers: tuple[str, ...] = ()
    #: with ``containers``: each instance's URL, in the same order, for the verification
    #: through every instance; () finds them from Docker (published port, else network address)
    instance_urls: tuple[str, ...] = ()

    @property
    def container_names(self) -> tuple[str, ...]:
        """The registry containers: ``containers``, else the one ``container``."""
        return self.containers or (self.container,)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    plan_every: timedelta = timedelta(minutes=15)
    window: str = "0 3 * * SUN"  # crontab; weekdays by name (see _read_cron)
    window_length: timedelta = timedelta(hours=2)
    timezone: str = "UTC"  # an IANA name, valid for zoneinfo.ZoneInfo


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9480"

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = LogFormat.AUTO
    level: str = "info"  # one of LOG_LEVELS


@dataclass(frozen=True, slots=True)
class Config:
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    policies: tuple[Path, ...] = (Path("policies"),)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    safety: Safety = field(default_factory=Safety)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state_dir: Path = Path("/var/lib/retentiond")
    log: LogConfig = field(default_factory=LogConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    pulls: PullsConfig = field(default_factory=PullsConfig)
    source: Path | None = None  # the file this was read from
    protect: ProtectConfig = field(default_factory=ProtectConfig)


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """What checking a config file found; ``config`` is None when there are problems."""

    config: Config | None
    problems: tuple[SourceProblem, ...]
    warnings: tuple[SourceProblem, ...]
    policy_paths: tuple[Path, ...]  # resolved, even when other sections have problems


# ---------------------------------------------------------------- finding and loading


def find_config_path(
    explicit: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    system_config: Path = SYSTEM_CONFIG,
) -> Path:
    """``--config``, else ``$RETENTIOND_CONFIG``, else ``./retentiond.yaml``, else the system file.

    A path given explicitly (option or variable) must exist; UsageError says which one does not.
    """
    env = os.environ if environ is None else environ
    if explicit:
        return _existing(Path(explicit), f"--config {explicit}")
    if env.get(ENV_VAR):
        return _existing(Path(env[ENV_VAR]), f"${ENV_VAR}={env[ENV_VAR]}")
    local = LOCAL_CONFIG if cwd is None else cwd / LOCAL_CONFIG
    for candidate in (local, system_config):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no config file found: --config not given, ${ENV_VAR} not set, no {local},"
        f" no {system_config}; pass --config FILE or set ${ENV_VAR}"
    )


def _existing(path: Path, origin: str) -> Path:
    """``path`` when it names a regular file (through links); else UsageError saying what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{origin}: no such file; check the path") from None
    except OSError as exc:
        raise UsageError(f"{origin}: {exc.strerror or exc}; check the path") from exc
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"{origin} is a directory; pass the config file itself,"
            f" e.g. --config {path / LOCAL_CONFIG}"
        )
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{origin} is {file_kind(mode)}, not a regular file; pass the config file itself"
        )
    return path


def load_config(path: Path) -> Config:
    """The validated configuration in ``path``, or ConfigError listing every problem."""
    result = check_config(path)
    if result.config is None:
        raise ConfigError(list(result.problems))
    return result.config


def check_config(path: Path) -> ConfigCheck:
    """Read and validate ``path``; nothing is raised, every problem is in the result."""
    try:
        text = read_source_file(path, "config file")
    except SourceFileError as exc:
        return ConfigCheck(None, (SourceProblem(str(path), 1, 1, str(exc)),), (), ())
    return check_config_text(text, str(path), base=path.absolute().parent)


def check_config_text(text: str, filename: str, *, base: Path) -> ConfigCheck:
    """Validate config text; relative paths are resolved against ``base``."""
    document = load_yaml(text, filename)
    if document.problems:
        return ConfigCheck(None, document.problems, (), ())
    checker = Checker(filename)
    root: YamlValue = document.root or YamlMap({}, Position(1, 1))
    config = _read_config(checker, root, base, source=base / Path(filename).name)
    return ConfigCheck(
        config if not checker.problems else None,
        tuple(sorted(checker.problems, key=_place)),
        tuple(sorted(checker.warnings, key=_place)),
        config.policies,
    )


def _place(problem: SourceProblem) -> tuple[int, int]:
    return (problem.line, problem.column)


def registry_password(
    registry: RegistryConfig, environ: Mapping[str, str] | None = None
) -> str | None:
    """The registry password: from ``registry.password_file`` if set, else from
    ``$RETENTIOND_REGISTRY_PASSWORD``; None when neither gives one."""
    if registry.password_file is not None:
        try:
            text = read_source_file(registry.password_file, "password file")
        except SourceFileError as exc:
            raise UsageError(
                f"registry.password_file {registry.password_file}: {exc};"
                " fix the path or its permissions"
            ) from exc
        return text.rstrip("\r\n")
    return (os.environ if environ is None else environ).get(PASSWORD_ENV_VAR) or None


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9480`` for IPv6) as ``(host, port)``; ValueError when malformed."""
    host, colon, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{excerpt(listen)} is not host:port; write e.g. 127.0.0.1:9480 or 0.0.0.0:9480"
        )
    return host, int(port)


# ---------------------------------------------------------------- sections


class _Section:
    """The fields of one config section, read with defaults; problems go to the checker."""

    def __init__(
        self, checker: Checker, value: YamlValue | None, name: str, keys: Collection[str]
    ) -> None:
        self.checker = checker
        self.name = name
        self.position = value.position if value is not None else Position(1, 1)
        mapping = None
        if value is not None:
            mapping = checker.read_mapping(value, name, keys, null_is_empty=True)
        entries = mapping.entries if mapping else {}
        self.values = {key: entry.value for key, entry in entries.items()}
        self.key_positions = {key: entry.key_position for key, entry in entries.items()}

    def get(self, key: str, read: Callable[[YamlValue, str], T | None], default: T) -> T:
        value = self.values.get(key)
        result = None if value is None else read(value, f"{self.name}.{key}")
        return default if result is None else result

    def optional(self, key: str, read: Callable[[YamlValue, str], T | None]) -> T | None:
        value = self.values.get(key)
        return None if value is None or is_null(value) else read(value, f"{self.name}.{key}")

    def at(self, *keys: str) -> Position:
        """Where the first of ``keys`` present is written, else where the section starts."""
        for key in keys:
            if key in self.key_positions:
                return self.key_positions[key]
        return self.position


_DEFAULT = Config()


def _read_config(c: Checker, root: YamlValue, base: Path, source: Path) -> Config:
    top = c.read_mapping(root, "the config file", CONFIG_KEYS)
    values = {k: e.value for k, e in top.entries.items()} if top else {}
    policies = _DEFAULT.policies
    if "policies" in values:
        items = c.read_string_list(values["policies"], "policies")
        policies = tuple(Path(p) for p, _ in items) if items else ()
    state_dir = _DEFAULT.state_dir
    if "state_dir" in values:
        state_dir = Path(c.read_string(values["state_dir"], "state_dir") or state_dir)
    log = _Section(c, values.get("log"), "log", LogConfig.__dataclass_fields__)
    return Config(
        registry=_read_registry(c, values.get("registry"), base),
        runtime=_read_runtime(c, values.get("runtime")),
        policies=tuple(base / p for p in policies),
        schedule=_read_schedule(c, values.get("schedule")),
        safety=_read_safety(c, values.get("safety")),
        metrics=MetricsConfig(
            _Section(c, values.get("metrics"), "metrics", ("listen",)).get(
                "listen", lambda v, w: _read_listen(c, v, w), _DEFAULT.metrics.listen
            )
        ),
        state_dir=base / state_dir,
        log=LogConfig(
            format=log.get("format", lambda v, w: c.read_choice(v, w, LogFormat), LogFormat.AUTO),
            level=log.get("level", lambda v, w: _read_level(c, v, w), "info"),
        ),
        notify=read_notify(c, values.get("notify"), base),
        pulls=read_pulls(c, values.get("pulls"), base, lambda v, w: _read_listen(c, v, w)),
        source=source,
        protect=read_protect(c, values.get("protect"), base),
    )


def _read_registry(c: Checker, value: YamlValue | None, base: Path) -> RegistryConfig:
    s = _Section(c, value, "registry", REGISTRY_KEYS)
    password_file = s.optional("password_file", c.read_string)
    default = _DEFAULT.registry
    storage = read_registry_storage(c, s.values, s.key_positions, base)  # storage, config_file
    registry = RegistryConfig(
        root=storage.root or base / s.get("root", c.read_string, str(default.root)),
        url=s.get("url", lambda v, w: _read_url(c, v, w, ("http", "https")), default.url),
        username=s.optional("username", c.read_string),
        password_file=base / password_file if password_file else None,
        tls_verify=s.get("tls_verify", c.read_bool, True),
        cache=CacheKind(storage.cache)
        if storage.cache
        else s.get("cache", lambda v, w: c.read_choice(v, w, CacheKind), CacheKind.INMEMORY),
        redis_url=storage.redis_url
        or s.optional("redis_url", lambda v, w: _read_url(c, v, w, ("redis", "rediss", "unix"))),
        s3=storage.s3,
        config_file=storage.config_file,
    )
    if (
        registry.cache is CacheKind.REDIS
        and is_null(s.values.get("redis_url"))
        and registry.config_file is None
    ):
        c.problem(
            s.at("cache"),
            "registry.redis_url is required with cache: redis, e.g. redis_url: redis://redis:6379/0",
        )
    if registry.redis_url is not None and registry.cache is not CacheKind.REDIS:
        c.warning(s.at("redis_url"), "registry.redis_url is ignored unless cache: redis")
    if registry.password_file is not None and registry.username is None:
        c.warning(s.at("password_file"), "registry.password_file is ignored without a username")
    return registry


def _read_runtime(c: Checker, value: YamlValue | None) -> RuntimeConfig:
    s = _Section(c, value, "runtime", RuntimeConfig.__dataclass_fields__)
    cmd = _Section(c, s.values.get("commands"), "runtime.commands", COMMAND_KEYS)
    commands = RuntimeCommands(*(cmd.optional(key, c.read_string) for key in COMMAND_KEYS))
    default = _DEFAULT.runtime
    runtime = RuntimeConfig(
        kind=s.get("kind", lambda v, w: c.read_choice(v, w, RuntimeKind), RuntimeKind.DOCKER),
        container=s.get("container", c.read_string, default.container),
        registry_config=s.optional("registry_config", c.read_string),
        gc_mode=s.get("gc_mode", lambda v, w: c.read_choice(v, w, GcMode), GcMode.READONLY),
        commands=commands,
        **_read_replicas(c, s),
    )
    if runtime.kind is RuntimeKind.COMMAND:
        needed = {GcMode.READONLY: "readonly", GcMode.STOP: "stop", GcMode.ONLINE: None}
        names = [n for n in (needed[runtime.gc_mode], "start", "gc") if n is not None]
        missing = [n for n in names if getattr(commands, n) is None]
        if missing:
            c.problem(
                s.at("commands", "kind"),
                f"runtime.kind: command with gc_mode: {runtime.gc_mode} needs these"
                f" runtime.commands: {', '.join(names)}; missing: {', '.join(missing)}",
            )
    elif any(not is_null(v) for v in cmd.values.values()):
        c.warning(s.at("commands"), "runtime.commands is ignored unless kind: command")
    if runtime.gc_mode is GcMode.ONLINE and runtime.kind is not RuntimeKind.NONE:
        c.warning(
            s.at("gc_mode"),
            "gc_mode: online runs GC while the registry accepts pushes; pushes during GC can lose"
            " data; use readonly",
        )
    return runtime


def _read_replicas(c: Checker, s: _Section) -> dict[str, tuple[str, ...]]:
    """``runtime.containers`` (several registry instances on one storage) and
    ``runtime.instance_urls``: a list of distinct names, not written with ``container``."""
    found: dict[str, tuple[str, ...]] = {}
    for key in ("containers", "instance_urls"):
        value = s.values.get(key)
        if value is None or is_null(value):
            continue
        if not isinstance(value, YamlList):
            c.problem(value, f"runtime.{key} must be a list, e.g. [registry-a, registry-b]")
            continue
        items: list[tuple[str, YamlValue]] | None
        if key == "containers":
            strings = c.read_string_list(value, f"runtime.{key}")
            items = None if strings is None else [(name, node) for name, node in strings]
        else:
            items = [
                (url, node)
                for node in value.items
                if (url := _read_url(c, node, f"runtime.{key}", ("http", "https"))) is not None
            ]
            if not value.items:
                c.problem(value, f"runtime.{key} is an empty list; give one URL per container")
        if items is None or len(items) != len(value.items):
            continue
        seen: set[str] = set()
        for name, node in items:
            if name in seen:
                c.problem(node, f"runtime.{key}: {excerpt(name)} is listed twice; list each once")
            seen.add(name)
        found[key] = tuple(name for name, _ in items)
    containers, urls = found.get("containers", ()), found.get("instance_urls", ())
    if "containers" in s.values and "container" in s.values and not is_null(s.values["container"]):
        c.problem(
            s.at("containers"),
            "runtime.container and runtime.containers are both written; keep container for one "
            "registry, or list every instance in containers",
        )
    if urls and not containers and "containers" not in s.values:
        c.problem(s.at("instance_urls"), "runtime.instance_urls needs runtime.containers")
    elif urls and containers and len(urls) != len(containers):
        c.problem(
            s.at("instance_urls"),
            f"runtime.instance_urls lists {len(urls)} URLs for {len(containers)} containers; "
            "give one URL per container, in the same order",
        )
    kind = s.values.get("kind")
    if found and kind is not None and not (isinstance(kind, YamlScalar) and kind.value == "docker"):
        c.warning(
            s.at("containers", "instance_urls"),
            "runtime.containers and runtime.instance_urls are ignored unless kind: docker "
            "(with kind: command, the commands switch every instance)",
        )
    return found


def _read_schedule(c: Checker, value: YamlValue | None) -> ScheduleConfig:
    s = _Section(c, value, "schedule", ScheduleConfig.__dataclass_fields__)
    timezone = s.get("timezone", lambda v, w: _read_timezone(c, v, w), "UTC")

    def duration(v: YamlValue, w: str) -> timedelta | None:
        return c.read_duration(v, w, allow_zero=False)

    default = _DEFAULT.schedule
    return ScheduleConfig(
        plan_every=s.get("plan_every", duration, default.plan_every),
        window=s.get("window", lambda v, w: _read_cron(c, v, w, timezone), default.window),
        window_length=s.get("window_length", duration, default.window_length),
        timezone=timezone,
    )


def _read_safety(c: Checker, value: YamlValue | None) -> Safety:
    s = _Section(c, value, "safety", Safety.__dataclass_fields__)
    default = _DEFAULT.safety
    return Safety(
        max_delete_ratio=s.get("max_delete_ratio", lambda v, w: _read_ratio(c, v, w), 0.8),
        untagged_min_age=s.get("untagged_min_age", c.read_duration, default.untagged_min_age),
        grace=s.get("grace", c.read_duration, default.grace),
        mass_delete_min_tags=s.get(
            "mass_delete_min_tags", c.read_positive_int, default.mass_delete_min_tags
        ),
    )


# ---------------------------------------------------------------- value checks


def _read_url(c: Checker, value: YamlValue, what: str, schemes: tuple[str, ...]) -> str | None:
    text = c.read_string(value, what)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for a "[" in the host
        c.problem(value, f"{what} is not a URL ({exc}); got {excerpt(text)}")
        return None
    if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
        example = f"{schemes[0]}://host:port"
        expected = " or ".join(schemes)
        c.problem(
            value,
            f"{what} must be a URL with scheme {expected}, like {example}; got {excerpt(text)}",
        )
        return None
    return text.rstrip("/")


def _read_listen(c: Checker, value: YamlValue, what: str) -> str | None:
    raw = value.value if isinstance(value, YamlScalar) else None
    if not isinstance(raw, str):
        c.problem(value, f"{what} must be host:port, e.g. 127.0.0.1:9480")
        return None
    try:
        split_listen(raw)
    except ValueError as exc:
        c.problem(value, f"{what}: {exc}")
        return None
    return raw


def _read_level(c: Checker, value: YamlValue, what: str) -> str | None:
    raw = value.value if isinstance(value, YamlScalar) else None
    if isinstance(raw, str) and raw.lower() in LOG_LEVELS:
        return raw.lower()
    c.problem(value, f"{what} must be one of {', '.join(LOG_LEVELS)}")
    return None


def _read_ratio(c: Checker, value: YamlValue, what: str) -> float | None:
    raw = value.value if isinstance(value, YamlScalar) else None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 < raw <= 1:
        return float(raw)
    c.problem(value, f"{what} must be a number greater than 0 and at most 1, e.g. 0.8")
    return None


def _read_timezone(c: Checker, value: YamlValue, what: str) -> str | None:
    name = c.read_string(value, what)
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        c.problem(
            value,
            f"{what}: unknown time zone {excerpt(name)}; use an IANA name like UTC or"
            " Europe/Berlin",
        )
        return None
    return name


_NUMERIC_WEEKDAY = re.compile(r"\d")


def _read_cron(c: Checker, value: YamlValue, what: str, timezone: str) -> str | None:
    """A 5-field crontab with weekdays by name: cron counts 0 as Sunday, APScheduler 3 as Monday."""
    expression = c.read_string(value, what)
    if expression is None:
        return None
    fields = expression.split()
    if len(fields) != 5:
        c.problem(
            value,
            f"{what} must be a cron expression with 5 fields (minute hour day month weekday),"
            f' e.g. "0 3 * * SUN"; got {len(fields)} fields',
        )
        return None
    if _NUMERIC_WEEKDAY.search(fields[4]):
        c.problem(
            value,
            f"{what}: write the weekday by name (SUN, MON-FRI), not {excerpt(fields[4])}:"
            " weekday numbers differ between cron and the scheduler",
        )
        return None
    from apscheduler.triggers.cron import CronTrigger  # 30 ms to import: only when there is cron

    try:
        CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        reason = shorten_quotes(str(exc))
        c.problem(value, f"{what}: invalid cron expression {excerpt(expression)}: {reason}")
        return None
    return expression
