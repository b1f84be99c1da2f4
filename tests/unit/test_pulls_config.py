"""The ``pulls:`` config section, ``keep.pulled_within``, and what ``check`` says about them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from retentiond.commands.check import run_check
from retentiond.config import check_config
from retentiond.policy.loader import check_policies
from tests.unit.test_check import no_docker, write  # noqa: F401 (an autouse fixture)

PULLED = "policies:\n  - {name: recent, repositories: ['**'], keep: {pulled_within: 30d}}\n"


def config(tmp_path: Path, pulls: str) -> Path:
    write(tmp_path / "policies" / "p.yaml", PULLED)
    return write(
        tmp_path / "retentiond.yaml",
        f"registry: {{root: {tmp_path}/registry}}\nruntime: {{kind: none}}\n{pulls}",
    )


def test_pulled_within_is_read_as_a_duration(tmp_path: Path) -> None:
    found = check_policies([write(tmp_path / "p.yaml", PULLED)])
    assert found.problems == ()
    assert found.policies[0].keep.pulled_within == timedelta(days=30)
    bad = write(tmp_path / "bad.yaml", PULLED.replace("30d", "0s"))
    assert [(p.line, p.column, p.message) for p in check_policies([bad]).problems] == [
        (2, 64, "keep.pulled_within must be longer than 0s")
    ]


@pytest.mark.parametrize(
    ("pulls", "expected"),
    [
        (
            "pulls: {listen: 0.0.0.0:9481}\n",
            "3:9: pulls.token_file is required with pulls.listen",
        ),
        ("pulls: {listen: nowhere, token_file: t}\n", "3:17: pulls.listen: 'nowhere' is not"),
        ("pulls: {listen: 0.0.0.0:9481, token_file: missing}\n", "3:43: pulls.token_file "),
        ("pulls: {lisen: 0.0.0.0:9481}\n", "3:9: unknown key 'lisen' in pulls"),
        ("pulls: {listen: 0.0.0.0:9481, token_file: empty}\n", "3:43: pulls.token_file "),
    ],
)
def test_pulls_problems_are_located(tmp_path: Path, pulls: str, expected: str) -> None:
    write(tmp_path / "empty", "\n")
    found = check_config(config(tmp_path, pulls))
    assert found.config is None
    messages = [f"{p.line}:{p.column}: {p.message}" for p in found.problems]
    assert any(m.startswith(expected) for m in messages), messages


def test_check_prints_the_registry_snippet_without_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "pulls.token", "0123456789abcdef\n")
    path = config(tmp_path, "pulls: {listen: 0.0.0.0:9481, token_file: pulls.token}\n")
    assert run_check(path, []) == 0
    out, _ = capsys.readouterr()
    assert "0123456789abcdef" not in out
    lines = out.splitlines()
    start = lines.index("notifications:")
    assert lines[start : start + 12] == [
        "notifications:",
        "  endpoints:",
        "    - name: retentiond",
        "      url: http://RETENTIOND_HOST:9481/events",
        "      headers:",
        f'        Authorization: ["Bearer <the token in {tmp_path}/pulls.token>"]',
        "      timeout: 5s",
        "      threshold: 10",
        "      backoff: 10s",
        "      ignore:",
        "        mediatypes: [application/octet-stream]",
        "        actions: [push, delete, mount]",
    ]
    env = next(line for line in lines if line.startswith("REGISTRY_NOTIFICATIONS_ENDPOINTS="))
    endpoint = json.loads(env.split("=", 1)[1].strip("'"))[0]
    assert endpoint["url"] == "http://RETENTIOND_HOST:9481/events"
    assert endpoint["ignore"]["mediatypes"] == ["application/octet-stream"]
    # the YAML to paste and the variable say the same
    yaml_text = "\n".join(lines[start : lines.index("or as the registry container's environment:")])
    assert yaml.safe_load(yaml_text) == {"notifications": {"endpoints": [endpoint]}}


def test_check_warns_when_pulled_within_has_no_tracking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "")
    assert run_check(path, []) == 0
    out, err = capsys.readouterr()
    assert "notifications:" not in out
    assert (
        f"{tmp_path}/policies/p.yaml:2:1: warning: policy 'recent' keeps tags by "
        "keep.pulled_within, but pull tracking is off" in err
    )
