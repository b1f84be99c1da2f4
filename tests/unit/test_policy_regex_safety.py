"""Which ``re:`` patterns are refused because Python's backtracking ``re`` could run them for
too long, and which everyday patterns are accepted."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retentiond.policy.regex_safety import regex_problem

ACCEPTED = [
    r"v\d+\.\d+\.\d+",
    r"^v\d+\.\d+\.\d+$",
    r"\d+(\.\d+){0,2}",
    r"[a-z]+",
    r"ci/(app|web)",
    r".*-cache",
    r".*-rc.*",
    r"(?!.*-rc).*",
    r"(?i)latest|stable",
    r"sha256-[0-9a-f]{64}(\.sig|\.att|\.sbom)?",
    r"(?:[a-z]+-)*[0-9]+",
    r"(a|ab)*c",
    r"x*x*",
    r"[a-z0-9]{1,64}-[a-z0-9]{1,64}",
    r"(latest|stable|main|develop|release-[0-9]+|hotfix-[a-z]+)",
]

EXPONENTIAL = [
    r"(a+)+b",
    r"(a|a)*",
    r"(a|ab|b)*c",
    r"(a*b*)*",
    r"(\w+\s?)+$",
    r"([a-zA-Z0-9]+[._-]?)+",
    r"(.*)*",
    r"(?:.*,)*x",
    r"(a{2,3}){1,100}",
    r"(a?)*",
    r"(?:a?){30}a{30}",
    r"(?:a[ab]?){0,64}",
]

POLYNOMIAL = [r".*a.*a.*b", r".*-.*-.*", r"x*x*x*", r"[a-z]*[a-z0-9]*[0-9a-f]*!"]


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_everyday_patterns_are_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_exponential_backtracking_is_refused_with_a_rewrite(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None
    assert problem.startswith("a repeated part of this regex can match the same text")
    assert "e.g. a+ instead of (a+)+" in problem


@pytest.mark.parametrize("pattern", POLYNOMIAL)
def test_cubic_backtracking_is_refused_with_a_rewrite(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and "cube of its length" in problem
    assert "[^-]*-[^-]*-.*" in problem


@pytest.mark.parametrize("pattern", ["(?:a|a)" * 20, "(?:ab|a.)" * 20, "(?:a|a|a|a)" * 10])
def test_too_many_choices_written_out_are_refused(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and problem.startswith("this regex has too many ways to match")


def test_a_few_choices_are_accepted() -> None:
    assert regex_problem("(?:a|ab)" * 3) is None
    assert regex_problem("(?:a|a)" * 10) is None


@pytest.mark.parametrize("pattern", [r"(a+)\1", r"(?P<x>a)(?P=x)", r"(a)?(?(1)b|c)"])
def test_backreferences_and_conditionals_are_refused(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and problem.startswith("backreferences")


@pytest.mark.parametrize(
    "pattern",
    [".*" * 60, "|".join("a" * i for i in range(1, 60))],
)
def test_patterns_too_large_to_analyse_are_refused(pattern: str) -> None:
    problem = regex_problem(pattern)
    assert problem is not None and "too large to prove" in problem


def test_a_catastrophic_lookahead_body_is_refused() -> None:
    assert regex_problem(r"(?=(a+)+b)a*") is not None


@settings(max_examples=300, deadline=None)
@given(st.text("ab()|*+?.{}1,2^$", max_size=14))
def test_analysis_never_raises_on_any_pattern_re_accepts(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error:
        return
    problem = regex_problem(pattern)
    assert problem is None or isinstance(problem, str)
