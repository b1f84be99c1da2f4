"""Selector semantics, as a policy file writes them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retentiond.policy.loader import validate_policies_text
from retentiond.policy.selectors import MAX_TAG_LENGTH, Glob, Selector


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


# ---------------------------------------------------------------- the glob matcher


def backtracking_glob(glob: str) -> re.Pattern[str]:
    """The regex translation globs were matched with before (backtracking; ``**`` made to
    match any character, newline included, as the new matcher does)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=3000, deadline=None)
@given(st.text("ab/*?.", min_size=1, max_size=10), st.text("ab/.\n", max_size=12))
def test_glob_matcher_agrees_with_the_backtracking_translation(glob: str, name: str) -> None:
    expected = backtracking_glob(glob).fullmatch(name) is not None
    assert Glob(glob).matches(name) == expected


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("**/x*", ["x", "a/x", "a/b/xyz"], ["ax", "a/x/y"]),
        ("a*b*c", ["abc", "axxbyyc"], ["ab/bc", "a/bc"]),
        ("ci/**/app-?", ["ci/app-1", "ci/a/b/app-x"], ["ci/app-10", "cx/app-1"]),
        ("***", ["", "a/b"], []),
        ("*/**", ["a/", "a/b/c"], ["a"]),
    ],
)
def test_glob_corner_cases(glob: str, matching: list[str], not_matching: list[str]) -> None:
    matcher = Glob(glob)
    for name in matching:
        assert matcher.matches(name), name
    for name in not_matching:
        assert not matcher.matches(name), name


def test_many_stars_against_a_128_character_tag_do_not_backtrack() -> None:
    """Each of these took from 20 s to hours per tag when globs were backtracking regexes;
    now each is a pass over the name (speed itself: bench, not tests)."""
    name = "a" * 128
    for glob in ("*a*a*a*a*a*b", "*a*a*a*a*a*a*a*a*a*a*b", "*a?a*a**a*a*a*a*b", "**/**a**b"):
        assert not Glob(glob).matches(name)


def test_regex_never_runs_on_a_name_longer_than_the_bound() -> None:
    scope = Selector.parse(["re:a+"], max_length=MAX_TAG_LENGTH)
    kept = Selector.parse(["re:a+"], max_length=MAX_TAG_LENGTH, when_too_long=True)
    assert scope.matches("a" * 128) and kept.matches("a" * 128)
    assert not scope.matches("a" * 129)  # out of scope: not deleted
    assert kept.matches("b" * 129)  # kept: not deleted
    assert Selector.parse(["*"], max_length=MAX_TAG_LENGTH).matches("a" * 500)  # globs: any length


def test_unsafe_regex_is_reported_at_its_item_with_the_reason() -> None:
    result = validate_policies_text(
        "policies:\n  - name: p\n    repositories: ['re:(a|ab|b)*c', 're:x*x*x*']\n    keep: {}\n",
        "p.yaml",
    )
    assert [(p.line, p.column) for p in result.problems] == [(3, 20), (3, 37)]
    assert result.problems[0].message.startswith(
        "repositories: regex '(a|ab|b)*c' refused: a repeated part of this regex can match"
    )
    assert "cube of its length" in result.problems[1].message
