"""``retentiond check``: every problem on stderr as FILE:LINE:COL, a summary on stdout, 0 or 2."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from retentiond.commands.check import run_check

GOOD = "policies:\n  - {name: NAME, repositories: ['ci/**'], keep: {last: 3}}\n"


@pytest.fixture(autouse=True)
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``check`` with a config looks at the registry container: these tests are about the
    files, so Docker is a socket that does not exist, whatever runs on this machine (the
    registry facts are tested in tests/integration/test_check_registry.py)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_paths_only_need_no_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETENTIOND_CONFIG", str(tmp_path / "does-not-exist.yaml"))
    a = write(tmp_path / "a.yaml", GOOD.replace("NAME", "a"))
    b = write(tmp_path / "b.yaml", GOOD.replace("NAME", "b"))
    assert run_check(None, [a, b]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("ok: 2 policies in 2 files\n", "")


def test_paths_with_problems_exit_2_and_list_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path / "a.yaml", "policies:\n  - {name: a, repositories: x, keep: {lats: 3}}\n")
    b = write(tmp_path / "b.yaml", "policies:\n  - name: a\n    repositories: x\n")
    assert run_check(None, [b, a]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{a}:2:12: duplicate policy name 'a' (also at {b}:2:11); names must be unique across all"
        " policy files",
        f"{a}:2:39: unknown key 'lats' in keep; did you mean 'last'?",
        f"{b}:2:5: keep: is required; use keep: {{}} to delete every tag in scope",
        f"{b}:2:11: duplicate policy name 'a' (also at {a}:2:12); names must be unique across all"
        " policy files",
        "4 problems found",
    ]


def test_config_and_its_policies_are_checked_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "retentiond.yaml",
        "runtime:\n  gc_mode: online\npolicies: [policies/]\nlog: {level: loud}\n",
    )
    policy = write(tmp_path / "policies/ci.yaml", "policies:\n  - {name: ci, repositories: x}\n")
    assert run_check(config, []) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{policy}:2:5: keep: is required; use keep: {{}} to delete every tag in scope",
        f"{config}:2:3: warning: gc_mode: online runs GC while the registry accepts pushes;"
        " pushes during GC can lose data; use readonly",
        f"{config}:4:14: log.level must be one of debug, info, warning, error, critical",
        "2 problems found",
    ]


def test_warnings_alone_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "retentiond.yaml", "runtime: {gc_mode: online}\n")
    write(tmp_path / "policies/ci.yaml", GOOD.replace("NAME", "ci"))
    assert run_check(config, []) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"ok: config {config}, 1 policy in 1 file, 1 warning\n"
        "storage: filesystem /var/lib/registry\n"
    )
    assert err.startswith(f"{config}:1:11: warning: gc_mode: online")


def test_config_is_found_as_usual(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "etc/retentiond.yaml", "policies: [team-a.yaml, team-b.yaml]\n")
    write(tmp_path / "etc/team-a.yaml", GOOD.replace("NAME", "a"))
    write(
        tmp_path / "etc/team-b.yaml",
        "policies:\n  - {name: b, repositories: x, keep: {}}\n"
        "  - {name: c, repositories: y, keep: {}}\n",
    )
    monkeypatch.setenv("RETENTIOND_CONFIG", str(config))
    assert run_check(None, []) == 0
    assert capsys.readouterr().out == (
        f"ok: config {config}, 3 policies in 2 files\nstorage: filesystem /var/lib/registry\n"
    )


def test_no_config_found_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RETENTIOND_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    if Path("/etc/retentiond/retentiond.yaml").exists():
        pytest.skip("a system-wide config exists on this machine")
    assert run_check(None, []) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: no config file found: --config not given,")


def test_missing_policy_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(None, [tmp_path / "gone.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'gone.yaml'}:1:1: no such policy file or directory",
        "1 problem found",
    ]


def test_streams_can_be_given(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = write(tmp_path / "p.yaml", "policies: []\n")
    assert run_check(None, [path], stdout=out, stderr=err) == 0
    assert out.getvalue() == "ok: 0 policies in 1 file, 1 warning\n"
    assert err.getvalue() == f"{path}:1:11: warning: no policies in this file\n"
