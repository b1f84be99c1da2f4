"""The real command line on generated trees (with their corruption) and policies: ``plan``,
``plan --json`` and ``verify --json`` end with their documented exit codes and output, never
an internal error (exit 3)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings

from retentiond.cli import main
from retentiond.policy.model import Safety
from tests.property.policies import policy_docs, safeties
from tests.property.profiles import scaled, scratch
from tests.property.trees import TreeSpec, trees, write_tree

KEYS = (
    *("generated_at", "root", "summary", "tags", "manifests", "repositories", "refused"),
    "problems",
    "schema1_tags",
    "protected",
    "protection",
)
SUMMARY_KEYS = ("repositories", "tags", "tags_deleted", "manifests_unlinked", "bytes_reclaimed")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_config(directory: Path, doc: dict[str, Any], safety: Safety) -> Path:
    (directory / "policies.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    config = directory / "retentiond.yaml"
    minutes = int(safety.untagged_min_age.total_seconds() // 60)
    config.write_text(
        yaml.safe_dump(
            {
                "registry": {"root": "registry"},
                "runtime": {"kind": "none"},
                "policies": ["policies.yaml"],
                "safety": {
                    "max_delete_ratio": safety.max_delete_ratio,
                    "untagged_min_age": f"{minutes}m",
                },
                "state_dir": "state",
                "log": {"format": "json", "level": "warning"},
            }
        )
    )
    return config


@settings(max_examples=scaled(60))  # three commands per example
@given(spec=trees(), doc=policy_docs(), safety=safeties)
def test_plan_and_verify_on_any_generated_tree_end_without_internal_error(
    spec: TreeSpec, doc: dict[str, Any], safety: Safety
) -> None:
    with scratch() as tmp:
        directory = Path(tmp)
        write_tree(directory / "registry", spec, directory / "outside")
        config = str(write_config(directory, doc, safety))

        code, table, err = run("--config", config, "plan")
        assert (code, "Traceback" in err) == (0, False), err
        assert table.strip()

        code, out, err = run("--config", config, "plan", "--json")
        assert (code, "Traceback" in err) == (0, False), err
        shown = json.loads(out)  # planned now, not at the trees' NOW: the numbers differ
        assert set(shown) == set(KEYS) and set(shown["summary"]) >= set(SUMMARY_KEYS)

        code, out, err = run("--config", config, "verify", "--json")
        assert code in (0, 1) and "Traceback" not in err, err
        report = json.loads(out)
        assert (code == 1) == bool(report["broken"]), report
