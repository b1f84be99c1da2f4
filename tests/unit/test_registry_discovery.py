"""Which registry runs and which config file it reads, decided from ``docker inspect`` data and
``registry --version`` output (retentiond.runtime.discovery), and what ``check`` prints about it.

The inspect data are the fields Docker fills for the containers users run (``Path`` and
``Args`` are the process, ``Config`` the container's configuration); the version lines are what
the real binaries print (Debian's 2.8.2, upstream's v3.1.1 built with and without the release
ldflags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retentiond.commands.check import registry_report, run_check
from retentiond.runtime.discovery import (
    COMMAND_DEFAULT,
    FROM_COMMAND,
    FROM_ENV,
    FROM_SETTING,
    V2_CONFIG,
    V2_DEFAULT,
    V3_CONFIG,
    V3_DEFAULT,
    ConfigLocation,
    RegistryFacts,
    RegistryVersion,
    command_config_location,
    config_in_command,
    container_argv,
    locate_registry_config,
    needs_version,
    parse_registry_version,
)

V2 = RegistryVersion(2, 8, 2, "+ds1", "github.com/docker/distribution")
V3 = RegistryVersion(3, 1, 1, "", "github.com/distribution/distribution/v3")


def inspect(
    path: str | None = None,
    args: list[str] | None = None,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    workdir: str = "",
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "Id": "0123456789ab" * 5 + "0123",
        "Name": "/registry",
        "Config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": workdir,
        },
    }
    if path is not None:
        info["Path"] = path
        info["Args"] = args or []
    return info


# ---------------------------------------------------------------- registry --version


@pytest.mark.parametrize(
    ("output", "expected", "shown"),
    [
        (
            "/usr/bin/docker-registry github.com/docker/distribution 2.8.2+ds1\n",
            V2,
            "distribution v2.8.2+ds1",
        ),
        ("registry github.com/docker/distribution 2.8.2+ds1\n", V2, "distribution v2.8.2+ds1"),
        ("registry github.com/distribution/distribution/v3 v3.1.1\n", V3, "distribution v3.1.1"),
        (
            "registry github.com/distribution/distribution/v3 v3.1.1+unknown\n",
            RegistryVersion(3, 1, 1, "+unknown", "github.com/distribution/distribution/v3"),
            "distribution v3.1.1+unknown",
        ),
        (
            "registry github.com/docker/distribution v2.7.1\n",
            RegistryVersion(2, 7, 1, "", "github.com/docker/distribution"),
            "distribution v2.7.1",
        ),
        ("v3.0.0-rc.1\n", RegistryVersion(3, 0, 0, "-rc.1", ""), "distribution v3.0.0-rc.1"),
    ],
)
def test_version_output_is_parsed(output: str, expected: RegistryVersion, shown: str) -> None:
    version = parse_registry_version(output)
    assert version == expected
    assert str(version) == shown


@pytest.mark.parametrize(
    "output",
    ["", 'exec: "registry": executable file not found in $PATH\n', "registry version unknown\n"],
)
def test_output_without_a_version_is_none(output: str) -> None:
    assert parse_registry_version(output) is None


@pytest.mark.parametrize(
    ("version", "tested"),
    [
        ((2, 8, 2), True),
        ((2, 8, 3), True),  # the official registry:2 image today
        ((3, 1, 1), True),
        ((3, 1, 0), True),
        ((2, 7, 1), False),
        ((3, 0, 0), False),
        ((3, 2, 0), False),
        ((4, 0, 0), False),
    ],
)
def test_the_2_8_and_3_1_lines_count_as_tested(version: tuple[int, int, int], tested: bool) -> None:
    assert RegistryVersion(*version).tested is tested


# ---------------------------------------------------------------- where the config file is


def test_the_official_v3_layout_names_its_config_in_the_command() -> None:
    # docker run registry:3 -> /entrypoint.sh /etc/distribution/config.yml
    info = inspect("/entrypoint.sh", [V3_CONFIG], entrypoint=["/entrypoint.sh"], cmd=[V3_CONFIG])
    assert not needs_version(None, info)
    assert locate_registry_config(None, info) == ConfigLocation(V3_CONFIG, FROM_COMMAND)


def test_the_official_v2_layout_names_its_config_in_the_command() -> None:
    info = inspect("/entrypoint.sh", [V2_CONFIG], entrypoint=["/entrypoint.sh"], cmd=[V2_CONFIG])
    assert locate_registry_config(None, info, V3) == ConfigLocation(V2_CONFIG, FROM_COMMAND)


def test_the_argument_after_serve_is_the_config_whatever_its_name() -> None:
    info = inspect("/bin/registry", ["serve", "/srv/registry.conf"])
    assert locate_registry_config(None, info) == ConfigLocation("/srv/registry.conf", FROM_COMMAND)
    info = inspect("/entrypoint.sh", ["serve", "/etc/distribution/config.yml"])
    assert locate_registry_config(None, info) == ConfigLocation(V3_CONFIG, FROM_COMMAND)


def test_a_shell_script_in_the_command_is_read_as_words() -> None:
    info = inspect("/bin/sh", ["-c", "echo starting; exec registry serve /etc/reg/config.yml"])
    assert locate_registry_config(None, info) == ConfigLocation("/etc/reg/config.yml", FROM_COMMAND)
    # a variable names nothing we can know: the version decides
    info = inspect("/bin/sh", ["-c", 'exec registry serve "$CONFIG"'])
    assert needs_version(None, info)
    assert locate_registry_config(None, info, V3) == ConfigLocation(V3_CONFIG, V3_DEFAULT)


def test_a_relative_config_is_relative_to_the_working_directory() -> None:
    info = inspect("/bin/registry", ["serve", "config.yml"], workdir="/etc/distribution")
    assert locate_registry_config(None, info) == ConfigLocation(V3_CONFIG, FROM_COMMAND)
    info = inspect("/bin/registry", ["serve", "./etc/docker/registry/config.yml"])
    assert locate_registry_config(None, info) == ConfigLocation(V2_CONFIG, FROM_COMMAND)


def test_the_configuration_path_variable_counts_when_the_command_names_none() -> None:
    info = inspect(
        "/entrypoint.sh",
        ["serve"],
        env=["PATH=/bin", "REGISTRY_CONFIGURATION_PATH=/srv/reg.yml"],
    )
    assert locate_registry_config(None, info) == ConfigLocation("/srv/reg.yml", FROM_ENV)


def test_without_a_word_on_the_config_the_version_decides() -> None:
    # a start script of the image's own, which reads the config it knows
    info = inspect("/start.sh", [], entrypoint=["/start.sh"])
    assert needs_version(None, info)
    assert locate_registry_config(None, info) is None
    assert locate_registry_config(None, info, V3) == ConfigLocation(V3_CONFIG, V3_DEFAULT)
    assert locate_registry_config(None, info, V2) == ConfigLocation(V2_CONFIG, V2_DEFAULT)
    assert locate_registry_config(None, info, RegistryVersion(4, 0, 0)) is None


def test_the_setting_always_wins() -> None:
    info = inspect("/entrypoint.sh", [V3_CONFIG])
    assert not needs_version("/etc/mine.yml", inspect("/start.sh"))
    for version in (None, V2, V3):
        assert locate_registry_config("/etc/mine.yml", info, version) == ConfigLocation(
            "/etc/mine.yml", FROM_SETTING
        )


def test_a_container_never_started_is_read_from_its_config() -> None:
    info = inspect(entrypoint=["/entrypoint.sh"], cmd=[V3_CONFIG])
    assert container_argv(info) == ["/entrypoint.sh", V3_CONFIG]
    assert locate_registry_config(None, info) == ConfigLocation(V3_CONFIG, FROM_COMMAND)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["/bin/registry", "serve", "/c.yml"], "/c.yml"),
        (["/bin/registry", "serve"], None),
        (["/entrypoint.sh", "-v"], None),
        (["/entrypoint.sh", "/c.yaml"], "/c.yaml"),
        (["/bin/registry", "serve", "--help"], None),
        (["/bin/sh", "-c", "exec registry serve '/my dir/c.yml'"], "/my dir/c.yml"),
        (["/bin/sh", "-c", "unbalanced 'quote /c.yml"], None),
        # the program itself is no argument
        (["/etc/c.yml"], None),
    ],
)
def test_config_in_command(argv: list[str], named: str | None) -> None:
    assert config_in_command(argv) == named


def test_the_command_runtime_does_not_discover() -> None:
    assert command_config_location(None) == ConfigLocation(V2_CONFIG, COMMAND_DEFAULT)
    assert command_config_location(V3_CONFIG) == ConfigLocation(V3_CONFIG, FROM_SETTING)


# ---------------------------------------------------------------- what check prints


def facts(**changes: Any) -> RegistryFacts:
    values: dict[str, Any] = {
        "container": "registry",
        "version": V3,
        "version_error": None,
        "config": ConfigLocation(V3_CONFIG, FROM_COMMAND),
        "config_error": None,
        "problems": (),
    }
    values.update(changes)
    return RegistryFacts(**values)


def test_check_names_the_version_and_the_config_file() -> None:
    assert registry_report(facts()) == (
        [
            "registry: distribution v3.1.1 in container registry",
            "registry config: /etc/distribution/config.yml (from the container's command)",
        ],
        [],
    )
    lines, warnings = registry_report(
        facts(version=V2, config=ConfigLocation(V2_CONFIG, V2_DEFAULT))
    )
    assert lines == [
        "registry: distribution v2.8.2+ds1 in container registry",
        "registry config: /etc/docker/registry/config.yml (default for v2)",
    ]
    assert warnings == []


def test_check_warns_about_a_version_never_tested() -> None:
    lines, warnings = registry_report(
        facts(version=RegistryVersion(2, 7, 1, "", "github.com/docker/distribution"))
    )
    assert lines[0] == "registry: distribution v2.7.1 in container registry"
    assert warnings == [
        "registry distribution v2.7.1 in container registry is not a version retentiond is "
        "tested with (tested: 2.8.2 and 3.1.1, and the 2.8.x and 3.1.x lines); its plans and GC "
        "runs may not match what this registry does"
    ]


def test_check_warns_when_the_version_or_the_config_is_unknown() -> None:
    lines, warnings = registry_report(
        facts(
            version=None,
            version_error="cannot ask the registry in container registry for its version: the "
            "container is not running (exited)",
            config=None,
            config_error="cannot tell which config file the registry in container registry "
            "reads: ...",
            problems=("container registry was started with --rm: ...",),
        )
    )
    assert lines == [
        "registry: version unknown in container registry",
        "registry config: not found",
    ]
    assert warnings == [
        "cannot tell the registry's version: cannot ask the registry in container registry for "
        "its version: the container is not running (exited)",
        "cannot tell which config file the registry in container registry reads: ...",
        "container registry was started with --rm: ...",
    ]


def test_check_with_the_command_runtime_names_the_file_it_will_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies/ci.yaml").write_text(
        "policies:\n  - {name: ci, repositories: x, keep: {}}\n"
    )
    commands = "  commands: {readonly: 'true', start: 'true', gc: 'true'}\n"
    config = tmp_path / "retentiond.yaml"
    config.write_text(f"runtime:\n  kind: command\n{commands}")
    assert run_check(config, []) == 0
    assert capsys.readouterr() == (
        f"ok: config {config}, 1 policy in 1 file\n"
        "registry config: /etc/docker/registry/config.yml (the 2.x default; runtime.kind: "
        "command does not look for it)\n"
        "storage: filesystem /var/lib/registry\n",
        "",
    )
    config.write_text(f"runtime:\n  kind: command\n  registry_config: {V3_CONFIG}\n{commands}")
    assert run_check(config, []) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "registry config: /etc/distribution/config.yml (from runtime.registry_config)"
    )
    config.write_text("runtime:\n  kind: none\n")
    assert run_check(config, []) == 0
    assert capsys.readouterr() == (
        f"ok: config {config}, 1 policy in 1 file\nstorage: filesystem /var/lib/registry\n",
        "",
    )
