"""deploy/: the systemd units, the example config, the compose setup, the Dockerfile and the
Prometheus rules, checked with the real tools that will read them: ``systemd-analyze verify``,
``retentiond check``, Debian's ``docker-compose config``, ``promtool`` and a real Prometheus
scraping a real :class:`~retentiond.metrics.Metrics`. A missing tool fails the test (it is
installed by scripts/start-docker.sh, or part of the base system); nothing is skipped."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from retentiond.commands.check import run_check
from retentiond.config import Config, check_config
from retentiond.metrics import JOBS, Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
SETUP_HINT = "run `bash scripts/start-docker.sh` (as root) to install it"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed (Debian package {package}); {SETUP_HINT}", pytrace=False
        )
    return path


def run(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


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
    result = run(
        tool("systemd-analyze", "systemd"),
        "verify",
        *(str(directory / unit) for unit in units),
        env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/bin:/bin"},
    )
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
    result = run(
        "systemd-analyze",
        "verify",
        str(unit),
        env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/bin:/bin"},
    )
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
    assert "REGISTRY_STORAGE_MAINTENANCE_READONLY" in (
        last(readonly["Service"], "Environment") or ""
    )
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
        if key == "registry.s3":  # not a key of the file: read from registry.storage
            key = "registry.storage"
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
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


# ---------------------------------------------------------------- compose and Dockerfile

COMPOSE = DEPLOY / "compose"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("docker-compose", "docker-compose"), "-f", str(path), "config")


def normalized_compose() -> dict[str, Any]:
    result = compose_config(COMPOSE / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


def test_docker_compose_validates_the_compose_file() -> None:
    services = normalized_compose()["services"]
    assert set(services) == {"registry", "retentiond", "prometheus"}
    assert services["registry"]["image"] == "registry:2"


def test_docker_compose_rejects_an_invalid_file(tmp_path: Path) -> None:
    """The validation above has teeth: an unknown option fails it."""
    bad = tmp_path / "docker-compose.yml"
    text = (COMPOSE / "docker-compose.yml").read_text(encoding="utf-8")
    bad.write_text(
        text.replace(
            "    container_name: registry\n", "    container_name: registry\n    bogus_option: 1\n"
        )
    )
    result = compose_config(bad)
    assert result.returncode != 0 and "bogus_option" in result.stderr


def compose_retentiond_config(tmp_path: Path) -> Path:
    """deploy/compose/retentiond.yaml with its policies path pointing to a copy of policies/."""
    text = (COMPOSE / "retentiond.yaml").read_text(encoding="utf-8")
    assert "policies: [/etc/retentiond/policies/]" in text
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    path = tmp_path / "retentiond.yaml"
    path.write_text(text.replace("/etc/retentiond/policies/", "policies/"), encoding="utf-8")
    return path


def test_the_compose_config_of_retentiond_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no compose stack runs here: check's look at the registry container finds no Docker
    # (a socket that does not exist) and says so, the one warning allowed
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert run_check(compose_retentiond_config(tmp_path), []) == 0, capsys.readouterr().err
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "registry runtime could not be checked" in warnings[0], warnings


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a normalized service's volumes."""
    result: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def test_the_compose_services_fit_together(tmp_path: Path) -> None:
    """What retentiond's config says matches how compose wires the containers."""
    services = normalized_compose()["services"]
    checked = check_config(compose_retentiond_config(tmp_path))
    config = checked.config
    assert config is not None
    registry, retentiond = services["registry"], services["retentiond"]

    assert registry["container_name"] == config.runtime.container
    registry_mounts, retentiond_mounts = mounts(registry), mounts(retentiond)
    # the same volume, at the same path, as registry.root
    assert retentiond_mounts[str(config.registry.root)] == registry_mounts["/var/lib/registry"]
    assert retentiond_mounts[str(config.state_dir)] == "retentiond-state"
    assert retentiond_mounts["/etc/retentiond/retentiond.yaml"] == str(COMPOSE / "retentiond.yaml")
    assert retentiond_mounts["/etc/retentiond/policies"] == str(ROOT / "policies")
    assert retentiond_mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert config.registry.url == "http://registry:5000"
    assert config.metrics.host == "0.0.0.0"

    # every file mounted from the repository exists
    for service in services.values():
        for source in mounts(service).values():
            if source.startswith("/") and not source.startswith("/var/run/"):
                assert Path(source).exists(), source

    # Prometheus scrapes retentiond's port, as job "retentiond", with the rules mounted
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "retentiond"
    assert job["static_configs"][0]["targets"] == [f"retentiond:{config.metrics.port}"]
    rule_file = prometheus["rule_files"][0]
    assert mounts(services["prometheus"])[rule_file] == str(DEPLOY / "prometheus" / "alerts.yml")

    # the image is built from deploy/Dockerfile with the repository as its context
    assert retentiond["build"]["context"] == str(ROOT)
    assert retentiond["build"]["dockerfile"] == "deploy/Dockerfile"


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    """The rule file is given by its path inside the container; point it to the real one."""
    text = (COMPOSE / "prometheus.yml").read_text(encoding="utf-8")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        text.replace("/etc/prometheus/alerts.yml", str(DEPLOY / "prometheus" / "alerts.yml"))
    )
    result = run(tool("promtool", "prometheus"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword, arguments.strip()))
    return instructions


def test_the_dockerfile_is_sound() -> None:
    """Static checks only: its base image, python:3.11-slim, cannot be pulled here (no registry
    but the package registries is reachable), so the image is not built in the tests."""
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    keywords = [keyword for keyword, _ in instructions]
    known = {
        "FROM",
        "ENV",
        "WORKDIR",
        "COPY",
        "RUN",
        "VOLUME",
        "EXPOSE",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "LABEL",
        "USER",
    }
    assert set(keywords) <= known, set(keywords) - known
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert keywords.count("FROM") == 1

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.11"' in pyproject  # the base image's Python satisfies it
    assert 'retentiond = "retentiond.cli:main"' in pyproject  # the ENTRYPOINT's script
    readme = re.search(r'^readme = "([^"]+)"', pyproject, re.M)
    assert readme is not None

    copied: set[str] = set()
    for keyword, arguments in instructions:
        if keyword == "COPY":
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
                copied.add(source.rstrip("/"))
    # what `pip install` needs from the context
    assert {"pyproject.toml", readme.group(1), "retentiond"} <= copied

    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert "RETENTIOND_CONFIG=/etc/retentiond/retentiond.yaml" in env
    assert "PATH=/opt/retentiond/bin:$PATH" in env
    exposed = [arguments for keyword, arguments in instructions if keyword == "EXPOSE"]
    assert exposed == ["9480"]
    assert ("ENTRYPOINT", '["retentiond"]') in instructions
    assert ("CMD", '["serve"]') in instructions
    healthcheck = next(arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK")
    assert "http://127.0.0.1:9480/healthz" in healthcheck
    run_steps = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any("/opt/retentiond/bin/pip install /src" in step for step in run_steps)


# ---------------------------------------------------------------- Prometheus rules

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts.test.yml"


def test_promtool_checks_the_rules() -> None:
    result = run(tool("promtool", "prometheus"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run(
        tool("promtool", "prometheus"), "test", "rules", str(ALERTS_TEST), cwd=ALERTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    document = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in document["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert fires == names and quiet == names


def test_every_alert_tells_the_operator_what_to_do() -> None:
    for rule in alerts():
        annotations = rule["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_the_rules_select_the_task_label_not_exported_job() -> None:
    """retentiond's label is `task`: `job` clashed with the scrape's `job` and arrived as
    `exported_job`, which no rule or unit test may select any more."""
    for path in (ALERTS, ALERTS_TEST):
        text = path.read_text(encoding="utf-8")
        assert "exported_job=" not in text and "exported_job:" not in text, path.name
    expressions = " ".join(rule["expr"] for rule in alerts())
    assert 'task="maintenance"' in expressions and 'task="plan"' in expressions


def exposed_names() -> set[str]:
    """Every sample name a fresh Metrics can expose (``_total``, ``_bucket`` ... included)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def test_every_metric_the_rules_name_exists() -> None:
    """In the expressions, the annotations, the comments and the unit tests' series alike."""
    exposed = exposed_names()
    assert "retentiond_reclaimed_bytes_total" in exposed
    assert "retentiond_maintenance_duration_seconds_bucket" in exposed
    for path in (ALERTS, ALERTS_TEST, COMPOSE / "prometheus.yml"):
        named = set(re.findall(r"\bretentiond_[a-z_]+[a-z]", path.read_text(encoding="utf-8")))
        assert named - exposed == set(), f"{path.name} names metrics that do not exist"
    in_expressions = {
        name for rule in alerts() for name in re.findall(r"\bretentiond_[a-z_]+[a-z]", rule["expr"])
    }
    assert len(in_expressions) >= 5


# ---------------------------------------------------------------- a real Prometheus


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[Metrics, str]]:
    """A Metrics served on loopback the way ``serve`` serves it (``GET /metrics``)."""
    metrics = Metrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", metrics.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield metrics, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class PrometheusServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            return json.load(response)["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=promql)["result"]
        return result

    def wait_for(self, what: str, ready: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = ready()
            except OSError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} within {timeout:.0f}s")
            time.sleep(0.5)


@pytest.fixture
def prometheus(tmp_path: Path, metrics_endpoint: tuple[Metrics, str]) -> Iterator[PrometheusServer]:
    """Debian's prometheus on loopback with deploy/compose/prometheus.yml (the target and the
    rule file's path changed, and 1 s intervals), scraping ``metrics_endpoint``."""
    binary = tool("prometheus", "prometheus")
    _, target = metrics_endpoint
    text = (COMPOSE / "prometheus.yml").read_text(encoding="utf-8")
    text = (
        text.replace("retentiond:9480", target)
        .replace("/etc/prometheus/alerts.yml", str(ALERTS))
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace("evaluation_interval: 30s", "evaluation_interval: 1s")
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(text, encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}")
    try:
        server.wait_for(
            "a successful scrape of retentiond", lambda: server.query('up{job="retentiond"} == 1')
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        print((tmp_path / "prometheus.log").read_text()[-3000:])


def selectors(expression: str) -> list[str]:
    """The vector selectors of a PromQL expression: ``name{matchers}``."""
    return re.findall(
        r"\b(?:retentiond_[a-z_]+|up)\{[^}]*\}|\bretentiond_[a-z_]+[a-z]\b(?!\{)", expression
    )


def test_a_real_prometheus_loads_the_rules_and_every_selector_finds_series(
    prometheus: PrometheusServer,
) -> None:
    """The rules select series the way a real scrape labels them (retentiond's `task` label
    arrives unchanged beside the scrape's `job`), and a fresh daemon fires no alert."""
    for name in ("retentiond_job_failures_total", "retentiond_last_success_timestamp_seconds"):
        series = [sample["metric"] for sample in prometheus.query(name)]
        assert sorted(labels["task"] for labels in series) == sorted(JOBS), name
        assert all(
            labels["job"] == "retentiond" and "exported_job" not in labels for labels in series
        ), series
    for rule in alerts():
        for selector in selectors(rule["expr"]):
            if selector.startswith("up{") and "absent" in rule["expr"]:
                continue
            assert prometheus.query(selector), f"{rule['alert']}: {selector} selects nothing"

    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else []

    rules = prometheus.wait_for("every rule evaluated", evaluated)
    assert {r["name"] for r in rules} == {rule["alert"] for rule in alerts()}
    # RetentiondAbsent may be pending from an evaluation before the first scrape: it clears
    prometheus.wait_for(
        "no alert pending or firing",
        lambda: prometheus.get("/api/v1/alerts")["alerts"] == [],
        timeout=30,
    )


def test_a_real_prometheus_fires_on_broken_tags(
    prometheus: PrometheusServer, metrics_endpoint: tuple[Metrics, str]
) -> None:
    metrics, _ = metrics_endpoint
    metrics.observe_verify(2, time.time())

    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in prometheus.get("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "RetentiondBrokenTags" and a["state"] == "firing"
        ]

    (alert,) = prometheus.wait_for("RetentiondBrokenTags firing", firing)
    assert alert["annotations"]["summary"].startswith("2 broken tags")


# ---------------------------------------------------------------- policies in git

PRE_COMMIT_KEYS = {
    "id",
    "name",
    "entry",
    "language",
    "files",
    "exclude",
    "types",
    "types_or",
    "exclude_types",
    "always_run",
    "fail_fast",
    "verbose",
    "pass_filenames",
    "require_serial",
    "description",
    "language_version",
    "minimum_pre_commit_version",
    "args",
    "stages",
}


def hook() -> dict[str, Any]:
    (only,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert isinstance(only, dict)
    return only


def retentiond_command(line: str) -> list[str]:
    """``retentiond ...`` as this test's interpreter runs it (the installed console script)."""
    words = line.split()
    assert words[0] == "retentiond"
    return [sys.executable, "-m", "retentiond", *words[1:]]


def test_the_pre_commit_hook_is_declared_as_pre_commit_reads_it() -> None:
    declared = hook()
    assert set(declared) <= PRE_COMMIT_KEYS
    assert declared["id"] == "retentiond-check"
    assert declared["entry"] == "retentiond check"
    assert declared["language"] == "python"  # pre-commit pip-installs this repository
    assert declared["pass_filenames"] is True
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'retentiond = "retentiond.cli:main"' in pyproject  # the entry's console script
    files = re.compile(declared["files"])
    for path in ("policies/ci-builds.yaml", "policies/team/a.yml", "ops/policies/x.yaml"):
        assert files.search(path), path
    for path in (".gitlab-ci.yml", "retentiond.yaml", "policies/README.md", "mypolicies.yaml"):
        assert not files.search(path), path


def test_the_hook_passes_this_repositorys_policies_and_fails_a_bad_one(tmp_path: Path) -> None:
    """What pre-commit runs: the entry with the matching files as arguments."""
    declared = hook()
    files = re.compile(declared["files"])
    tracked = run("git", "ls-files", cwd=ROOT).stdout.split()
    matched = [path for path in tracked if files.search(path)]
    assert {"policies/ci-builds.yaml", "policies/releases.yaml"} <= set(matched)
    result = run(*retentiond_command(declared["entry"]), *matched, cwd=ROOT)
    assert result.returncode == 0, result.stderr

    bad = tmp_path / "policies" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text("policies:\n  - name: x\n    repositories: ['a/*']\n    keep: {withn: 14d}\n")
    result = run(*retentiond_command(declared["entry"]), str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}:4:" in result.stderr and "did you mean 'within'" in result.stderr


def test_the_ci_example_installs_and_checks_every_policy() -> None:
    workflow = yaml.safe_load((DEPLOY / "ci" / "policies-check.yml").read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    commands = [step["run"] for step in job["steps"] if "run" in step]
    assert commands[0] == "pip install retentiond"
    check = commands[-1]
    assert check == "retentiond check policies/"
    result = run(*retentiond_command(check), cwd=ROOT)
    assert result.returncode == 0, result.stderr
