"""Selector semantics, as a policy file writes them."""

from __future__ import annotations

import pytest

from retentiond.policy.loader import validate_policies_text
from retentiond.policy.selectors import Selector


def repositories(*patterns: str) -> Selector:
    quoted = ", ".join(f"'{p}'" for p in patterns)
    result = validate_policies_text(
        f"policies:\n  - {{name: p, repositories: [{quoted}], keep: {{}}}}\n"
    )
    assert result.problems == ()
    return result.policies[0].repositories


@pytest.mark.parametrize(
    ("patterns", "matching", "not_matching"),
    [
        (["ci/*"], ["ci/app", "ci/web-2"], ["ci/app/web", "ci", "other/app"]),
        (["ci/**"], ["ci/app", "ci/app/web", "ci/a/b/c"], ["ci", "cim/app", "other/ci/app"]),
        (["**/cache"], ["cache", "ci/cache", "a/b/cache"], ["ci/cache/x", "ci/mycache"]),
        (["app-?"], ["app-1", "app-x"], ["app-10", "app-/"]),
        (["a.b"], ["a.b"], ["axb"]),
        (["re:ci/(app|web)"], ["ci/app", "ci/web"], ["ci/app2", "xci/app"]),
        (["ci/**", "!ci/base"], ["ci/app", "ci/base/x"], ["ci/base"]),
        (["ci/**", "!ci/base/**"], ["ci/app", "ci/base"], ["ci/base/x", "ci/base/x/y"]),
        (["!ci/**"], ["apps/web", "ci"], ["ci/app", "ci/a/b"]),
        (["!re:.*-cache"], ["ci/app"], ["ci/app-cache"]),
        (["a", "b"], ["a", "b"], ["c"]),
    ],
)
def test_selector_semantics(
    patterns: list[str], matching: list[str], not_matching: list[str]
) -> None:
    selector = repositories(*patterns)
    for name in matching:
        assert selector.matches(name), name
    for name in not_matching:
        assert not selector.matches(name), name


def test_tag_selectors_and_regex_full_match() -> None:
    result = validate_policies_text(
        "policies:\n"
        "  - name: p\n"
        "    repositories: x\n"
        "    tags: ['pr-*', '!pr-keep-*']\n"
        "    keep: {tags: ['re:v\\d+\\.\\d+\\.\\d+', latest]}\n"
    )
    (policy,) = result.policies
    assert policy.tags.matches("pr-17") and not policy.tags.matches("pr-keep-1")
    assert not policy.tags.matches("main")
    keep = policy.keep.tags
    assert keep is not None
    assert keep.matches("v1.2.3") and keep.matches("latest")
    assert not keep.matches("v1.2.3-rc.1") and not keep.matches("xv1.2.3")


def test_each_bad_pattern_is_reported_at_its_item() -> None:
    result = validate_policies_text(
        "policies:\n"
        "  - name: p\n"
        "    repositories:\n"
        "      - ci/**\n"
        "      - 're:['\n"
        "      - '!re:(?P<x'\n"
        "      - ''\n"
        "    keep: {}\n",
        "p.yaml",
    )
    assert [(p.line, p.column) for p in result.problems] == [(5, 9), (6, 9), (7, 9)]
    assert result.problems[0].message.startswith("repositories: invalid regex '['")
    assert result.problems[2].message == (
        "repositories: empty pattern; remove it or write a glob like 'ci/**'"
    )
