"""Drift test: every example in policies/ passes `check` and means what its comments say."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from retentiond.commands.check import run_check
from retentiond.policy.loader import check_policies
from retentiond.policy.model import OrderBy, Policy, Untagged

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FILES = sorted(POLICIES.glob("*.y*ml"))


def by_name() -> dict[str, Policy]:
    result = check_policies([POLICIES])
    assert result.problems == () and result.warnings == ()
    return {policy.name: policy for policy in result.policies}


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_each_file_passes_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(None, [path]) == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""


def test_the_directory_passes_check_and_names_are_unique() -> None:
    assert {path.name for path in FILES} >= {"ci-builds.yaml", "releases.yaml", "base-images.yaml"}
    assert len(by_name()) == len(check_policies([POLICIES]).policies)


def test_ci_builds() -> None:
    policy = by_name()["ci-builds"]
    assert policy.repositories.matches("ci/app") and policy.repositories.matches("ci/team/app")
    assert not policy.repositories.matches("releases/app")
    assert policy.keep.last == 10 and policy.keep.within == timedelta(days=14)
    assert policy.keep.tags is not None
    assert policy.keep.tags.matches("latest") and policy.keep.tags.matches("main")
    assert policy.untagged is Untagged.DELETE


def test_releases() -> None:
    policy = by_name()["releases"]
    keep = policy.keep.tags
    assert keep is not None and keep.matches("v1.2.3") and not keep.matches("v1.3.0-rc.1")
    assert policy.keep.semver == 5
    assert policy.order_by is OrderBy.CREATED
    assert policy.untagged is Untagged.KEEP


def test_base_images() -> None:
    policy = by_name()["base-images"]
    assert policy.repositories.matches("base/debian")
    assert not policy.repositories.matches("base/debian/slim")
    keep = policy.keep.tags
    assert keep is not None
    for moving in ("latest", "stable", "bookworm", "3", "3.12", "3.12.7"):
        assert keep.matches(moving), moving
    assert not keep.matches("bookworm-20261101")
    assert policy.keep.last == 5
    assert policy.untagged is Untagged.KEEP
