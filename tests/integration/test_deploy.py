"""deploy/: the systemd units, the example config, the compose setup, the Dockerfile and the
Prometheus rules, checked with the real tools that will read them: ``systemd-analyze verify``,
``retentiond check``, Debian's ``docker-compose config``, ``promtool`` and a real Prometheus
scraping a real :class:`~retentiond.metrics.Metrics`. A missing tool fails the test (it is
installed by scripts/start-docker.sh, or part of the base system); nothing is skipped."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from retentiond.commands.check import run_check
from retentiond.config import Config, check_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
SETUP_HINT = "run `bash scripts/start-docker.sh` (as root) to install it"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {package}); {SETUP_HINT}",
                    pytrace=False)
    return path


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


# ---------------------------------------------------------------- systemd


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, keeping repeated keys in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}:{number}: a setting outside any section"
        key, equals, value = line.partition("=")
        assert equals and key.strip() == key and key, f"{path}:{number}: not KEY=VALUE: {raw!r}"
        assert not raw.endswith("\\"), f"{path}:{number}: line continuations are not used"
        current.append((key, value))
    return sections


def last(entries: list[tuple[str, str]], key: str) -> str | None:
    values = [value for k, value in entries if k == key]
    return values[-1] if values else None


def effective_list(entries: list[tuple[str, str]], key: str) -> list[str]:
    """A list setting as systemd builds it: an empty assignment resets it."""
    result: list[str] = []
    for k, value in entries:
        if k == key:
            result = [] if not value else [*result, *value.split()]
    return result


def verify_units(directory: Path, *units: str) -> None:
    result = run(tool("systemd-analyze", "systemd"), "verify",
                 *(str(directory / unit) for unit in units),
                 env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/bin:/bin"})
    # verify exits 0 on unknown keys and bad values, but says so on stderr
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def units_copy(tmp_path: Path) -> Path:
    """The units with ExecStart pointing to an existing binary (verify checks that it exists)."""
    for unit in SYSTEMD.glob("*.service"):
        text = unit.read_text(encoding="utf-8").replace(
            "ExecStart=/opt/retentiond/bin/retentiond", f"ExecStart={shutil.which('true')}"
        )
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    return tmp_path


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    directory = units_copy(tmp_path)
    verify_units(directory, "retentiond.service", "docker-registry-readonly.service")


def test_systemd_analyze_verifies_the_debian_drop_in(tmp_path: Path) -> None:
    directory = units_copy(tmp_path)
    dropins = directory / "retentiond.service.d"
    dropins.mkdir()
    shutil.copy(SYSTEMD / "debian-docker-registry.conf", dropins)
    verify_units(directory, "retentiond.service")


def test_verify_reports_a_bad_key(tmp_path: Path) -> None:
    """The check above would notice a misspelt directive."""
    directory = units_copy(tmp_path)
    unit = directory / "retentiond.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    result = run("systemd-analyze", "verify", str(unit),
                 env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/bin:/bin"})
    assert "Unknown key 'ProtectHomes'" in result.stderr


def test_the_unit_runs_serve_and_reloads_on_sighup() -> None:
    service = unit_entries(SYSTEMD / "retentiond.service")["Service"]
    assert last(service, "ExecStart") == (
        "/opt/retentiond/bin/retentiond --config /etc/retentiond/retentiond.yaml serve"
    )
    assert last(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert last(service, "Restart") == "on-failure"
    assert last(service, "KillMode") == "mixed"


def test_the_unit_is_hardened() -> None:
    service = unit_entries(SYSTEMD / "retentiond.service")["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "StateDirectory": "retentiond",
    }
    assert {key: last(service, key) for key in expected} == expected
    # writable: the registry's storage root and (through StateDirectory=) the state dir only
    assert effective_list(service, "ReadWritePaths") == ["/var/lib/registry"]
    assert last(service, "User") is None  # root without capabilities, for registry:2's tree


def test_the_debian_drop_in_runs_as_the_registry_user() -> None:
    unit = unit_entries(SYSTEMD / "retentiond.service")["Service"]
    dropin = unit_entries(SYSTEMD / "debian-docker-registry.conf")["Service"]
    merged = unit + dropin
    assert last(merged, "User") == "docker-registry"
    assert effective_list(merged, "ReadWritePaths") == ["/var/lib/docker-registry"]
    assert last(merged, "NoNewPrivileges") == "yes"  # systemctl goes through D-Bus and polkit


def test_the_debian_commands_match_the_units_and_the_polkit_rule() -> None:
    """The commands in the drop-in's comment and in retentiond.yaml name the units that the
    polkit rule allows, with the verbs it allows."""
    readonly = unit_entries(SYSTEMD / "docker-registry-readonly.service")
    assert last(readonly["Unit"], "Conflicts") == "docker-registry.service"
    assert "REGISTRY_STORAGE_MAINTENANCE_READONLY" in (last(readonly["Service"], "Environment")
                                                      or "")
    rules = (SYSTEMD / "50-retentiond.rules").read_text(encoding="utf-8")
    allowed_units = set(re.findall(r'unit === "([^"]+)"', rules))
    allowed_verbs = set(re.findall(r'verb === "([^"]+)"', rules))
    assert allowed_units == {"docker-registry.service", "docker-registry-readonly.service"}
    for source in (SYSTEMD / "debian-docker-registry.conf", DEPLOY / "retentiond.yaml"):
        commands = re.findall(r"systemctl (\w+) ([\w.\- ]+\.service)", source.read_text())
        assert len(commands) == 3, source
        for verb, units in commands:
            assert verb in allowed_verbs, (source, verb)
            assert set(units.split()) <= allowed_units, (source, units)


# ---------------------------------------------------------------- the example config


def config_keys(cls: type[Any], prefix: str = "") -> set[str]:
    """Every key of the config file, from the Config dataclasses: 'registry.root', ..."""
    keys: set[str] = set()
    for field in dataclasses.fields(cls):
        if field.name == "source":
            continue
        key = prefix + field.name
        default = (
            field.default_factory() if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        if dataclasses.is_dataclass(default):
            keys |= config_keys(type(default), key + ".")
        else:
            keys.add(key)
    return keys


def yaml_keys(value: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, child in (value or {}).items():
        if isinstance(child, dict) and child:
            keys |= yaml_keys(child, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_the_example_config_sets_every_key() -> None:
    document = yaml.safe_load((DEPLOY / "retentiond.yaml").read_text(encoding="utf-8"))
    assert yaml_keys(document) == config_keys(Config)


def test_the_example_config_holds_the_defaults() -> None:
    checked = check_config(DEPLOY / "retentiond.yaml")
    assert checked.problems == () and checked.warnings == ()
    assert checked.config is not None
    assert dataclasses.replace(checked.config, source=None, policies=Config().policies) == (
        dataclasses.replace(Config(), policies=Config().policies)
    )


def test_the_example_config_passes_check_with_the_example_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(DEPLOY / "retentiond.yaml", tmp_path)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    assert run_check(tmp_path / "retentiond.yaml", []) == 0, capsys.readouterr().err
