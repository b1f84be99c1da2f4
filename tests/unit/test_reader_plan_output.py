"""What ``retentiond plan`` writes of a read tree: the streamed JSON and the progress line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.generate import Params, generate
from retentiond.commands.plan import ProgressLine, write_plan_json
from retentiond.core.plan import make_plan
from retentiond.policy.model import KeepRules, Policy, Safety, Untagged
from retentiond.policy.selectors import Selector
from retentiond.render import plan_json
from retentiond.storage.reader import read_inventory


def test_streamed_json_is_the_rendered_document(tmp_path: Path) -> None:
    generate(tmp_path, Params(repositories=12, tags=15, index_share=0.3, seed=3), jobs=1)
    policy = Policy(
        name="ci",
        repositories=Selector.parse(["**"]),
        tags=Selector.parse(["*"]),
        keep=KeepRules(last=4),
        untagged=Untagged.DELETE,
        allow_mass_delete=True,
    )
    now = datetime(2026, 1, 2, tzinfo=UTC)
    plan = make_plan(
        read_inventory(tmp_path), [policy], Safety(untagged_min_age=timedelta(hours=1)), now
    )
    assert plan.tags_deleted and plan.manifests_unlinked
    some = plan.tags_deleted[0].repository
    for only in (None, Selector.parse([some]), Selector.parse(["no-such-repository"])):
        out = io.StringIO()
        write_plan_json(plan, only, out)
        assert out.getvalue() == json.dumps(plan_json(plan, only), indent=2) + "\n"


def test_output_closed_early_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """``retentiond plan --json | head``: no traceback when the reader stops reading."""
    tree = tmp_path / "tree"
    generate(tree, Params(repositories=30, tags=20, seed=5), jobs=1)
    (tmp_path / "p.yaml").write_text(
        "policies:\n  - name: few\n    repositories: ['**']\n    keep: {last: 2}\n"
        "    allow_mass_delete: true\n"
    )
    config = tmp_path / "retentiond.yaml"
    config.write_text(f"registry:\n  root: {tree}\npolicies: [p.yaml]\nstate_dir: {tmp_path}/s\n")
    command = [sys.executable, "-m", "retentiond", "--config", str(config), "plan", "--json"]
    whole = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert len(whole.stdout) > 1 << 17  # more than a pipe holds
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(100).startswith(b"{")
        proc.stdout.close()
        errors = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 1
    assert "Traceback" not in errors
    assert "retentiond plan: output closed before all was written" in errors


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_rewrites_itself_and_clears() -> None:
    out = FakeTerminal()
    line = ProgressLine(out, started=0.0, every=0.0)
    line("repositories", 3, 10)
    line("manifests", 10, 10)
    line.clear()
    text = out.getvalue()
    assert "reading: 3/10 repositories" in text and "parsing: 10/10 manifests" in text
    assert text.endswith("\r\033[K") and "\n" not in text


def test_progress_line_is_throttled() -> None:
    out = FakeTerminal()
    line = ProgressLine(out, started=0.0, every=3600.0)
    for done in range(1, 100):
        line("repositories", done, 100)
    line("repositories", 100, 100)  # the last one is always shown
    assert out.getvalue().count("\r\033[K") == 2


def test_quiet_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retentiond.commands.plan import run_plan

    tree = tmp_path / "registry"
    generate(tree, Params(repositories=3, tags=4, seed=5), jobs=1)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies/keep.yaml").write_text(
        "policies:\n  - name: keep\n    repositories: ['**']\n    keep: {last: 2}\n"
    )
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        f"registry:\n  root: {tree}\nruntime:\n  kind: none\npolicies: [policies/]\n"
        f"state_dir: {tmp_path / 'state'}\nlog:\n  format: json\n"
    )
    assert run_plan(config, as_json=True) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["tags"] == 12
    assert "reading:" not in captured.err and "\r" not in captured.err
