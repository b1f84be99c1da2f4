"""`retentiond apply` with `runtime.kind: command`: the registry (Debian's docker-registry 2.8.2,
or 3.1.1) run as a plain process (as Debian's systemd unit runs it), controlled by the
operator's own scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retentiond.config import RuntimeCommands
from tests.harness.images import pull_ok, push_oci_image, push_oci_index
from tests.harness.plain_registry import PlainRegistry, start_plain_registry, stop_plain_registry
from tests.harness.tree import data_bytes, set_pushed_at, tag_dir

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plain(docker_ready: None, registry_version: str, tmp_path: Path) -> Iterator[PlainRegistry]:
    reg = start_plain_registry(tmp_path / "plain", version=registry_version)
    try:
        yield reg
    finally:
        stop_plain_registry(reg)


def write_config(tmp_path: Path, reg: PlainRegistry, commands: RuntimeCommands) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(
        "policies:\n  - name: app\n    repositories: [app]\n    keep: {tags: [latest]}\n"
    )
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        json.dumps(
            {
                "registry": {"root": str(reg.root), "url": reg.url},
                "runtime": {
                    "kind": "command",
                    "gc_mode": "readonly",
                    "commands": {
                        "readonly": commands.readonly,
                        "stop": commands.stop,
                        "start": commands.start,
                        "gc": commands.gc,
                    },
                },
                "policies": ["policies/"],
                "state_dir": str(tmp_path / "state"),
                "log": {"format": "json", "level": "debug"},
            }
        )
    )
    return config


def apply(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), "apply", "--yes"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ},
    )


def seed(reg: PlainRegistry) -> None:
    push_oci_image(reg, "app", "old", layers=[b"old" * 300], seed="old")
    push_oci_index(reg, "app", "latest", seed="latest")
    set_pushed_at(reg.root, "app", "old", datetime.now(UTC) - timedelta(days=2))


def test_apply_with_operator_commands(plain: PlainRegistry, tmp_path: Path) -> None:
    seed(plain)
    config = write_config(tmp_path, plain, plain.commands)
    before = data_bytes(plain.root)
    result = apply(config)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "state/runs.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "ok" and record["bytes_reclaimed"] == before - data_bytes(plain.root)
    assert pull_ok(plain, "app", "latest") and not pull_ok(plain, "app", "old")
    push_oci_image(plain, "app", "after", layers=[b"after"], seed="after")  # read-write again
    assert pull_ok(plain, "app", "after")
    # the frozen read took every manifest the preview (a process of its own) had parsed
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    frozen = next(line for line in logged if line.get("event") == "frozen tree read")
    assert frozen["manifests_reused"] == frozen["manifests_from_preview"] >= 4


def test_readonly_command_that_does_not_freeze_changes_nothing(
    plain: PlainRegistry, tmp_path: Path
) -> None:
    seed(plain)
    commands = plain.commands
    broken = RuntimeCommands(
        readonly=commands.start, stop=commands.stop, start=commands.start, gc=commands.gc
    )  # "readonly" that restarts read-write
    config = write_config(tmp_path, plain, broken)
    result = apply(config)
    assert result.returncode == 1
    assert "still accepts uploads" in result.stderr
    assert tag_dir(plain.root, "app", "old").exists()
    push_oci_image(plain, "app", "after", layers=[b"after"], seed="after")
    assert pull_ok(plain, "app", "old") and pull_ok(plain, "app", "after")
