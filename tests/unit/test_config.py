"""The configuration file: defaults, every problem at once, relative paths, lookup order."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from retentiond.config import (
    CacheKind,
    Config,
    GcMode,
    LogFormat,
    RuntimeCommands,
    RuntimeKind,
    check_config,
    find_config_path,
    load_config,
    registry_password,
    split_listen,
)
from retentiond.errors import ConfigError, UsageError
from retentiond.policy.model import Safety

# The configuration file exactly as the contract shows it.
CONTRACT_EXAMPLE = """\
registry:
  root: /var/lib/registry            # the storage rootdirectory (contains docker/registry/v2)
  url: http://127.0.0.1:5000         # health checks and post-GC verification
  username: null                     # optional basic auth; password from password_file
  password_file: null                #   or $RETENTIOND_REGISTRY_PASSWORD
  tls_verify: true
  cache: inmemory                    # the registry's blob descriptor cache: inmemory | redis | none
  redis_url: null                    # with cache: redis, the stale keys are deleted after GC

runtime:                             # how retentiond controls the registry process
  kind: docker                       # docker | command | none (none: delete and report, never GC)
  container: registry                # docker: the registry container's name or id
  registry_config: /etc/docker/registry/config.yml   # config path as the registry process sees it
  gc_mode: readonly                  # readonly | stop | online (see below)
  commands:                          # kind: command (systemd, Kubernetes, anything else)
    readonly: null                   #   make the registry read-only (restart into read-only mode)
    stop: null
    start: null                      #   start it read-write again (also clears its cache)
    gc: null                         #   run the GC

policies: [policies/]                # policy files or directories of *.yaml, relative to this file

schedule:
  plan_every: 15m                    # recompute the plan (metrics, logs) this often
  window: "0 3 * * SUN"              # cron expression: when a maintenance window opens
  window_length: 2h                  # no maintenance starts when it cannot end inside the window
  timezone: UTC

safety:
  max_delete_ratio: 0.8
  untagged_min_age: 1h
  grace: 0s

metrics:
  listen: 127.0.0.1:9480

state_dir: /var/lib/retentiond       # lock, journal of the run in progress, run history, last plan

log:
  format: auto                       # json | console | auto (console on a TTY, else JSON)
  level: info
"""


def write(tmp_path: Path, text: str, name: str = "retentiond.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    return [str(p).removeprefix(f"{path}:") for p in check_config(path).problems]


def warnings(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    result = check_config(path)
    assert result.problems == ()
    return [str(p).removeprefix(f"{path}:") for p in result.warnings]


def test_the_contract_example_is_the_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE))
    # the contract's example names the 2.x config file, which is now found when unset
    assert config == replace(
        Config(),
        runtime=replace(Config().runtime, registry_config="/etc/docker/registry/config.yml"),
        policies=(tmp_path / "policies",),
        source=tmp_path / "retentiond.yaml",
    )
    empty = load_config(write(tmp_path, "", "retentiond.yaml"))
    assert config == replace(empty, runtime=config.runtime)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "# all defaults\n"))
    assert config.registry.root == Path("/var/lib/registry")
    assert config.registry.url == "http://127.0.0.1:5000"
    assert config.registry.username is None and config.registry.password_file is None
    assert config.registry.tls_verify is True
    assert config.registry.cache is CacheKind.INMEMORY and config.registry.redis_url is None
    assert config.runtime.kind is RuntimeKind.DOCKER
    assert config.runtime.container == "registry"
    assert config.runtime.registry_config is None  # found from the container (issue 15)
    assert config.runtime.gc_mode is GcMode.READONLY
    assert config.runtime.commands == RuntimeCommands()
    assert config.policies == (tmp_path / "policies",)
    assert config.schedule.plan_every == timedelta(minutes=15)
    assert config.schedule.window == "0 3 * * SUN"
    assert config.schedule.window_length == timedelta(hours=2)
    assert config.schedule.timezone == "UTC"
    assert config.safety == Safety(0.8, timedelta(hours=1), timedelta(0), 10)
    assert (config.metrics.listen, config.metrics.host, config.metrics.port) == (
        "127.0.0.1:9480",
        "127.0.0.1",
        9480,
    )
    assert config.state_dir == Path("/var/lib/retentiond")
    assert config.log.format is LogFormat.AUTO and config.log.level == "info"
    assert config.source == tmp_path / "retentiond.yaml"


def test_empty_sections_take_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "registry:\nsafety: {}\n"))
    assert config.registry == Config().registry
    assert config.safety == Safety()


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
            registry:
              root: data/registry
              url: https://registry.example.com/
              username: retentiond
              password_file: secrets/registry-password
              tls_verify: false
              cache: redis
              redis_url: redis://redis:6379/0
            runtime:
              kind: command
              gc_mode: stop
              commands:
                stop: systemctl stop docker-registry
                start: systemctl start docker-registry
                gc: registry garbage-collect /etc/docker/registry/config.yml
            policies: [/srv/policies, extra.yaml]
            schedule:
              plan_every: 1h
              window: "30 2 * * MON-FRI"
              window_length: 1h30m
              timezone: Europe/Berlin
            safety:
              max_delete_ratio: 1
              untagged_min_age: 2h
              grace: 7d
              mass_delete_min_tags: 50
            metrics: {listen: "[::]:9090"}
            state_dir: state
            log: {format: json, level: DEBUG}
            """,
        )
    )
    assert config.registry.root == tmp_path / "data/registry"
    assert config.registry.url == "https://registry.example.com"
    assert config.registry.username == "retentiond"
    assert config.registry.password_file == tmp_path / "secrets/registry-password"
    assert config.registry.tls_verify is False
    assert config.registry.cache is CacheKind.REDIS
    assert config.runtime.kind is RuntimeKind.COMMAND and config.runtime.gc_mode is GcMode.STOP
    assert config.runtime.commands.start == "systemctl start docker-registry"
    assert config.runtime.commands.readonly is None
    assert config.policies == (Path("/srv/policies"), tmp_path / "extra.yaml")
    assert config.schedule.window_length == timedelta(minutes=90)
    assert config.schedule.timezone == "Europe/Berlin"
    assert config.safety == Safety(1.0, timedelta(hours=2), timedelta(days=7), 50)
    assert (config.metrics.host, config.metrics.port) == ("::", 9090)
    assert config.state_dir == tmp_path / "state"
    assert config.log.format is LogFormat.JSON and config.log.level == "debug"


def test_relative_config_path_resolves_against_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "policies: policies.d\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/retentiond.yaml"))
    assert config.policies == (tmp_path / "etc" / "policies.d",)


def test_every_problem_at_once(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
        registry:
          url: ftp://registry
          passwrd_file: /run/secrets/pw
          tls_verify: maybe
          cache: memcached
        runtime:
          kind: podman
          gc_mode: offline
        policies: []
        schedule:
          plan_every: 15
          window: "0 3 * *"
          window_length: 0s
          timezone: Mars/Olympus_Mons
        safety:
          max_delete_ratio: 1.5
          untagged_min_age: soon
        metrics:
          listen: 9480
        log:
          format: text
          level: verbose
        colour: blue
        """,
    ) == [
        "2:8: registry.url must be a URL with scheme http or https, like http://host:port;"
        " got 'ftp://registry'",
        "3:3: unknown key 'passwrd_file' in registry; did you mean 'password_file'?",
        "4:15: registry.tls_verify must be true or false, got 'maybe'",
        "5:10: registry.cache must be one of inmemory, redis, none, got 'memcached'",
        "7:9: runtime.kind must be one of docker, command, none, got 'podman'",
        "8:12: runtime.gc_mode must be one of readonly, stop, online, got 'offline'",
        "9:11: policies is an empty list; give at least one entry",
        "11:15: schedule.plan_every: 15 has no unit; write e.g. 15s, 15m or 15d",
        "12:11: schedule.window must be a cron expression with 5 fields (minute hour day month"
        ' weekday), e.g. "0 3 * * SUN"; got 4 fields',
        "13:18: schedule.window_length must be longer than 0s",
        "14:13: schedule.timezone: unknown time zone 'Mars/Olympus_Mons'; use an IANA name like"
        " UTC or Europe/Berlin",
        "16:21: safety.max_delete_ratio must be a number greater than 0 and at most 1, e.g. 0.8",
        "17:21: safety.untagged_min_age: invalid duration 'soon': write a whole number and a unit"
        " (s m h d w), e.g. 90s, 15m, 14d or 1h30m",
        "19:11: metrics.listen must be host:port, e.g. 127.0.0.1:9480",
        "21:11: log.format must be one of json, console, auto, got 'text'",
        "22:10: log.level must be one of debug, info, warning, error, critical",
        "23:1: unknown key 'colour' in the config file; expected one of: registry, runtime,"
        " policies, schedule, safety, metrics, state_dir, log, notify, pulls, protect",
    ]


def test_load_config_raises_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics:\n  listen: localhost\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2:11: metrics.listen: 'localhost' is not host:port;"
        " write e.g. 127.0.0.1:9480 or 0.0.0.0:9480"
    )
    assert info.value.exit_code == 2


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "registry: http://x\n") == [
        "1:11: registry must be a mapping, got 'http://x'"
    ]
    assert problems(tmp_path, "- a\n") == ["1:1: the config file must be a mapping, got a list"]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert problems(tmp_path, "schedule:\n  window: * 3 * * SUN\n") == [
        "2:12: invalid YAML: while scanning an alias, expected alphabetic or numeric character,"
        " but found ' '; quote a value that starts with * or &, e.g. \"* 3 * * SUN\""
    ]


def test_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.yaml")
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read config file: No such file or directory"
    ]


def test_numeric_weekdays_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "schedule: {window: '0 3 * * 0'}\n") == [
        "1:20: schedule.window: write the weekday by name (SUN, MON-FRI), not '0': weekday"
        " numbers differ between cron and the scheduler"
    ]


def test_invalid_cron_field(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, "schedule: {window: '61 3 * * SUN'}\n")
    assert problem.startswith("1:20: schedule.window: invalid cron expression '61 3 * * SUN': ")


def test_redis_cache_needs_a_url(tmp_path: Path) -> None:
    assert problems(tmp_path, "registry:\n  cache: redis\n") == [
        "2:3: registry.redis_url is required with cache: redis, e.g."
        " redis_url: redis://redis:6379/0"
    ]
    assert problems(tmp_path, "registry: {cache: redis, redis_url: 'http://redis'}\n") == [
        "1:37: registry.redis_url must be a URL with scheme redis or rediss or unix, like"
        " redis://host:port; got 'http://redis'"
    ]


def test_a_url_python_cannot_split_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """Found by the config fuzz target: urlsplit raises on a "[" in the host."""
    (problem,) = problems(tmp_path, "registry: {url: 'http://127.0.0.1:500[policies/]'}\n")
    assert problem.startswith("1:17: registry.url is not a URL (Invalid IPv6 URL)"), problem


@pytest.mark.parametrize(
    ("gc_mode", "missing", "needed"),
    [
        ("readonly", "readonly, gc", "readonly, start, gc"),
        ("stop", "stop, gc", "stop, start, gc"),
        ("online", "gc", "start, gc"),
    ],
)
def test_command_runtime_names_the_missing_commands(
    tmp_path: Path, gc_mode: str, missing: str, needed: str
) -> None:
    text = f"runtime:\n  kind: command\n  gc_mode: {gc_mode}\n  commands:\n    start: x\n"
    assert problems(tmp_path, text)[0] == (
        f"4:3: runtime.kind: command with gc_mode: {gc_mode} needs these runtime.commands:"
        f" {needed}; missing: {missing}"
    )


def test_command_runtime_without_commands_points_at_the_section(tmp_path: Path) -> None:
    assert problems(tmp_path, "runtime:\n  kind: command\n") == [
        "2:3: runtime.kind: command with gc_mode: readonly needs these runtime.commands:"
        " readonly, start, gc; missing: readonly, start, gc"
    ]


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    assert warnings(
        tmp_path,
        """\
        registry:
          password_file: pw
          redis_url: redis://redis
        runtime:
          gc_mode: online
          commands: {gc: "registry garbage-collect"}
        """,
    ) == [
        "2:3: registry.password_file is ignored without a username",
        "3:3: registry.redis_url is ignored unless cache: redis",
        "5:3: gc_mode: online runs GC while the registry accepts pushes; pushes during GC can"
        " lose data; use readonly",
        "6:3: runtime.commands is ignored unless kind: command",
    ]


def test_online_gc_without_a_runtime_is_not_a_warning(tmp_path: Path) -> None:
    assert warnings(tmp_path, "runtime: {kind: none, gc_mode: online}\n") == []


def test_policy_paths_are_known_even_when_other_sections_are_wrong(tmp_path: Path) -> None:
    result = check_config(write(tmp_path, "policies: team-a.yaml\nlog: {level: loud}\n"))
    assert result.config is None
    assert result.policy_paths == (tmp_path / "team-a.yaml",)


# ---------------------------------------------------------------- find_config_path


def test_explicit_config_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path, "", "explicit.yaml")
    from_env = write(tmp_path, "", "env.yaml")
    write(tmp_path, "")
    monkeypatch.setenv("RETENTIOND_CONFIG", str(from_env))
    monkeypatch.chdir(tmp_path)
    assert find_config_path(str(explicit)) == explicit


def test_environment_comes_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = write(tmp_path, "", "env.yaml")
    write(tmp_path, "")
    monkeypatch.setenv("RETENTIOND_CONFIG", str(from_env))
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None) == from_env


def test_working_directory_comes_third(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "")
    system = write(tmp_path, "", "system.yaml")
    monkeypatch.delenv("RETENTIOND_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None, system_config=system) == Path("retentiond.yaml")
    assert (
        find_config_path(None, cwd=tmp_path, system_config=system) == tmp_path / "retentiond.yaml"
    )


def test_system_config_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = write(tmp_path, "", "system.yaml")
    monkeypatch.setenv("RETENTIOND_CONFIG", "")
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None, system_config=system) == system


def test_nothing_found_lists_the_places_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RETENTIOND_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        find_config_path(None, system_config=tmp_path / "etc/retentiond.yaml")
    assert str(info.value) == (
        "no config file found: --config not given, $RETENTIOND_CONFIG not set, no retentiond.yaml,"
        f" no {tmp_path / 'etc/retentiond.yaml'}; pass --config FILE or set $RETENTIOND_CONFIG"
    )
    assert info.value.exit_code == 2


def test_a_named_config_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^--config missing.yaml: no such file; check the path$"):
        find_config_path("missing.yaml")
    monkeypatch.setenv("RETENTIOND_CONFIG", "gone.yaml")
    with pytest.raises(UsageError, match=r"^\$RETENTIOND_CONFIG=gone.yaml: no such file"):
        find_config_path(None)


# ---------------------------------------------------------------- helpers


def test_registry_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = load_config(write(tmp_path, "registry: {username: u, password_file: pw}\n"))
    assert registry_password(config.registry, {}) == "s3cret"
    assert registry_password(Config().registry, {"RETENTIOND_REGISTRY_PASSWORD": "env"}) == "env"
    assert registry_password(Config().registry, {}) is None
    secret.unlink()
    expected = r"registry\.password_file .*pw: cannot read password file: No such file"
    with pytest.raises(UsageError, match=expected):
        registry_password(config.registry, {})


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9480", ("127.0.0.1", 9480)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9480", ("::1", 9480)),
        ("metrics.internal:9480", ("metrics.internal", 9480)),
    ],
)
def test_split_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9480", ":9480", "host:", "host:http", "host:70000", "h:0"])
def test_split_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        split_listen(listen)


# ---------------------------------------------------------------- hostile config files


def test_config_option_naming_a_directory_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        find_config_path(str(tmp_path))
    assert str(raised.value) == (
        f"--config {tmp_path} is a directory; pass the config file itself,"
        f" e.g. --config {tmp_path / 'retentiond.yaml'}"
    )


def test_config_variable_naming_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "retentiond.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match=r"is a FIFO \(named pipe\), not a regular file"):
        find_config_path(None, environ={"RETENTIOND_CONFIG": str(fifo)})
    (problem,) = check_config(fifo).problems  # were it opened anyway: refused, not blocked
    assert problem.message.startswith("config file is a FIFO (named pipe), not a regular file")


def test_config_larger_than_one_mebibyte_is_refused(tmp_path: Path) -> None:
    big = write(tmp_path, "# " + "x" * (1024 * 1024))
    (problem,) = check_config(big).problems
    assert problem.message == (
        "config file is larger than 1 MiB, the most retentiond reads; split it into several files"
    )


def test_password_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pw")
    config = load_config(write(tmp_path, "registry: {username: u, password_file: pw}\n"))
    with pytest.raises(UsageError, match=r"password file is a FIFO \(named pipe\)"):
        registry_password(config.registry, {})


def test_values_are_quoted_as_excerpts(tmp_path: Path) -> None:
    secret = "s" * 40 + "TAIL-OF-A-SECRET"
    path = write(
        tmp_path,
        f"registry: {{url: '{secret}'}}\nschedule: {{timezone: '{secret}', window: '{secret}'}}\n"
        f"metrics: {{listen: '{secret}'}}\n{secret}: 1\n",
    )
    problems = check_config(path).problems
    assert len(problems) == 5
    assert all("TAIL-OF-A-SECRET" not in p.message for p in problems)
