"""Generated policy files (as the YAML a user writes) and safety settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from retentiond.policy.model import Safety

REPOSITORY_PATTERNS = (
    "**", "*", "ci/**", "!ci/base", "app", "ci/*", "lib/**", "!**/sub",
    "re:ci/.*", "re:.*a.*", "team-*/**", "a__b",
)  # fmt: skip
TAG_PATTERNS = (
    "*", "v*", "pr-*", "!latest", "re:v\\d+\\.\\d+\\.\\d+", "sha256-*", "build-?", "*-rc.*",
    "main", "!pr-1",
)  # fmt: skip
KEEP_TAG_PATTERNS = tuple(p for p in TAG_PATTERNS if p != "*")
DURATIONS = ("1h", "90m", "2d", "1w", "30d", "1d12h", "3600s")


@st.composite
def keep_rules(draw: st.DrawFn) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if draw(st.booleans()):
        rules["last"] = draw(st.integers(1, 6))
    if draw(st.integers(0, 2)) == 0:
        rules["within"] = draw(st.sampled_from(DURATIONS))
    if draw(st.integers(0, 2)) == 0:
        rules["tags"] = draw(st.lists(st.sampled_from(KEEP_TAG_PATTERNS), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        rules["semver"] = draw(st.integers(1, 3))
    return rules  # may be {}: delete every tag in scope


@st.composite
def policy_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A whole policy file's document: ``{"policies": [...]}``."""
    policies = []
    for n in range(draw(st.integers(1, 3))):
        policy: dict[str, Any] = {
            "name": f"p{n}",
            "repositories": [
                draw(st.sampled_from(("**", "**", "ci/**", "*"))),
                *draw(st.lists(st.sampled_from(REPOSITORY_PATTERNS), max_size=2)),
            ],
            "keep": draw(keep_rules()),
        }
        if draw(st.booleans()):
            policy["tags"] = draw(st.lists(st.sampled_from(TAG_PATTERNS), min_size=1, max_size=2))
        for key, values in (  # mostly the values that let the plan delete
            ("order_by", ("pushed", "created")),
            ("untagged", ("keep", "delete", "delete")),
            ("allow_empty", (True, True, False)),
            ("allow_mass_delete", (True, True, False)),
        ):
            if draw(st.booleans()):
                policy[key] = draw(st.sampled_from(values))
        policies.append(policy)
    return {"policies": policies}


safeties = st.builds(
    Safety,
    max_delete_ratio=st.sampled_from((0.01, 0.5, 0.8, 1.0, 1.0, 1.0)),  # (0, 1] as configured
    untagged_min_age=st.sampled_from((timedelta(0), timedelta(hours=1), timedelta(days=7))),
    mass_delete_min_tags=st.sampled_from((1, 3, 10, 10)),
)
