"""The command line as a user runs it: plan's table and JSON, verify, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness.images import make_oci_image, push_oci, push_oci_image, tag_alias
from tests.harness.registry import RunningRegistry
from tests.harness.tree import blob_data, set_pushed_at, tag_link

pytestmark = pytest.mark.registry
REPO_ROOT = Path(__file__).resolve().parents[2]


def retentiond(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env={**os.environ},
    )


def write_config(tmp_path: Path, root: Path, policy: str) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(textwrap.dedent(policy))
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        f"registry:\n  root: {root}\npolicies: [policies/]\n"
        f"state_dir: {tmp_path / 'state'}\nlog: {{format: json}}\n"
    )
    return config


POLICY = """
    policies:
      - name: ci-builds
        repositories: ["ci/**"]
        keep: {last: 1}
"""


def test_plan_json_has_the_contract_shape(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "ci/app", "pr-1", layers=[b"pr1" * 100], seed="1")
    push_oci_image(registry, "ci/app", "pr-2", layers=[b"pr2"], seed="2")
    tag_alias(registry, "ci/app", "pr-2", "main")
    push_oci_image(registry, "other", "x", layers=[b"x"], seed="x")
    set_pushed_at(registry.root, "ci/app", "pr-1", datetime.now(UTC) - timedelta(days=3))
    set_pushed_at(registry.root, "ci/app", "pr-2", datetime.now(UTC) - timedelta(days=2))
    config = write_config(tmp_path, registry.root, POLICY)
    result = retentiond(config, "plan", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) >= {
        "generated_at",
        "root",
        "summary",
        "tags",
        "manifests",
        "repositories",
        "refused",
    }
    assert plan["summary"]["tags"] == 4 and plan["summary"]["tags_deleted"] == 2
    assert {t["tag"] for t in plan["tags"]} == {"pr-1", "pr-2"}  # main shares pr-2's digest
    assert len(plan["manifests"]) == 1  # only pr-1's manifest: main still reaches pr-2's
    tag = plan["tags"][0]
    assert set(tag) == {"repository", "tag", "digest", "pushed_at", "policy", "reason"}
    assert tag["policy"] == "ci-builds" and tag["pushed_at"].endswith("Z")
    assert plan["summary"]["bytes_reclaimed"] > 0
    log = json.loads(result.stderr.strip().splitlines()[-1])  # one JSON summary line
    assert log["event"] == "plan" and log["tags_deleted"] == 2
    table = retentiond(config, "plan", "--repository", "other")
    assert "other" in table.stdout and "ci/app" not in table.stdout.split("\n\n")[0]


def test_verify_finds_a_missing_layer(registry: RunningRegistry, tmp_path: Path) -> None:
    image = make_oci_image([b"layer that will vanish"], seed="v")
    push_oci(registry, "app", "v1", image)
    push_oci_image(registry, "app", "v2", layers=[b"fine"], seed="fine")
    config = write_config(tmp_path, registry.root, POLICY)
    ok = retentiond(config, "verify")
    assert ok.returncode == 0 and "2 of 2 tags resolve" in ok.stdout
    shutil.rmtree(blob_data(registry.root, image.layer_digests[0]).parent)
    broken = retentiond(config, "verify", "--json")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert [(b["repository"], b["tag"]) for b in report["broken"]] == [("app", "v1")]
    assert "missing" in report["broken"][0]["reason"]


def test_corrupt_link_is_reported_with_its_path(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci_image(registry, "ci/app", "a", layers=[b"a"], seed="a")
    push_oci_image(registry, "ci/app", "b", layers=[b"b"], seed="b")
    tag_link(registry.root, "ci/app", "a").write_bytes(b"")
    config = write_config(tmp_path, registry.root, POLICY)
    result = retentiond(config, "plan")
    assert result.returncode == 0
    assert "refused ci/app: cannot trust" in result.stdout
    assert str(tag_link(registry.root, "ci/app", "a")) in result.stdout
    assert "0 of 1 tags deleted" in result.stdout  # the unreadable tag is not counted


def test_wrong_root_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "nowhere", POLICY)
    result = retentiond(config, "plan")
    assert result.returncode == 1
    assert "registry.root must be the registry's storage rootdirectory" in result.stderr


def test_policy_typo_exits_2_with_position(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path, POLICY.replace("last: 1", "lastt: 1"))
    for command in ("check", "plan"):
        result = retentiond(config, command)
        assert result.returncode == 2, command
        assert "p.yaml:5:" in result.stderr and "did you mean 'last'" in result.stderr
