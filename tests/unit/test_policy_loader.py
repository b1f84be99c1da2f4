"""Policy files: every problem at once, located as FILE:LINE:COL, with what to do about it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from retentiond.errors import ConfigError
from retentiond.policy.loader import check_policies, load_policies, validate_policies_text
from retentiond.policy.model import KeepRules, OrderBy, Untagged


def problems(text: str, filename: str = "p.yaml") -> list[str]:
    return [str(p) for p in validate_policies_text(dedent(text), filename).problems]


def test_a_full_policy_builds_the_model() -> None:
    result = validate_policies_text(
        dedent(
            """\
            policies:
              - name: ci-builds
                repositories: ["ci/**", "!ci/base"]
                tags: ["*"]
                keep:
                  last: 10
                  within: 14d
                  tags: ["latest", "re:^v\\\\d+\\\\.\\\\d+\\\\.\\\\d+$"]
                  semver: 3
                order_by: created
                untagged: delete
                allow_empty: true
                allow_mass_delete: true
            """
        ),
        "policies/ci.yaml",
    )
    assert result.problems == ()
    assert result.warnings == ()
    (policy,) = result.policies
    assert policy.name == "ci-builds"
    assert policy.source == "policies/ci.yaml:2"
    assert policy.repositories.patterns == ("ci/**", "!ci/base")
    assert policy.tags.patterns == ("*",)
    assert policy.keep.last == 10
    assert policy.keep.within == timedelta(days=14)
    assert policy.keep.semver == 3
    assert policy.keep.tags is not None and policy.keep.tags.matches("v1.2.3")
    assert not policy.keep.tags.matches("v1.2")
    assert policy.order_by is OrderBy.CREATED
    assert policy.untagged is Untagged.DELETE
    assert policy.allow_empty and policy.allow_mass_delete


def test_defaults_and_single_strings() -> None:
    result = validate_policies_text(
        "policies:\n  - {name: a, repositories: 'apps/*', keep: {tags: latest}}\n"
    )
    (policy,) = result.policies
    assert policy.repositories.matches("apps/web") and not policy.repositories.matches("apps/a/b")
    assert policy.tags.matches("anything")
    assert policy.keep == KeepRules(tags=policy.keep.tags)
    assert policy.keep.tags is not None and policy.keep.tags.patterns == ("latest",)
    assert policy.order_by is OrderBy.PUSHED
    assert policy.untagged is Untagged.KEEP
    assert not policy.allow_empty and not policy.allow_mass_delete


def test_empty_keep_mapping_is_allowed() -> None:
    result = validate_policies_text("policies:\n  - {name: a, repositories: x, keep: {}}\n")
    assert result.problems == ()
    assert result.policies[0].keep.empty


def test_unknown_key_suggests_the_closest_one() -> None:
    assert problems(
        """\
        policies:
          - name: a
            repositories: x
            keep:
              withn: 14d
        """
    ) == ["p.yaml:5:7: unknown key 'withn' in keep; did you mean 'within'?"]


def test_unknown_keys_at_every_level() -> None:
    assert problems(
        """\
        policy:
          - name: a
        """
    ) == [
        "p.yaml:1:1: unknown key 'policy' in the policy file; did you mean 'policies'?",
        "p.yaml:1:1: missing 'policies:' list at the top level",
    ]
    assert problems(
        """\
        policies:
          - name: a
            repositories: x
            keep: {}
            untaged: delete
            colour: blue
        """
    ) == [
        "p.yaml:5:5: unknown key 'untaged' in policy; did you mean 'untagged'?",
        "p.yaml:6:5: unknown key 'colour' in policy; expected one of: name, repositories, tags,"
        " keep, order_by, untagged, allow_empty, allow_mass_delete",
    ]


def test_every_problem_is_reported_at_once() -> None:
    assert problems(
        """\
        policies:
          - name: a
            repositories: ["ci/**", "re:(unclosed"]
            tags: [latest, 1.10, "!"]
            keep:
              last: 0
              within: 14
              semver: ten
            order_by: newest
            untagged: no
            allow_empty: maybe
          - name: ""
            repositories: []
            keep:
          - just a string
        """
    ) == [
        "p.yaml:3:29: repositories: invalid regex '(unclosed': missing ), unterminated subpattern"
        " at position 0",
        "p.yaml:4:20: tags: each entry must be a string, got 1.1; quote it",
        "p.yaml:4:26: tags: empty pattern; remove it or write a glob like 'ci/**'",
        "p.yaml:6:13: keep.last must be a whole number of at least 1, got 0",
        "p.yaml:7:15: keep.within: 14 has no unit; write e.g. 14s, 14m or 14d",
        "p.yaml:8:15: keep.semver must be a whole number of at least 1, got 'ten'",
        "p.yaml:9:15: order_by must be one of pushed, created, got 'newest'",
        "p.yaml:10:15: untagged must be one of keep, delete, got false (YAML reads yes, no, on"
        " and off as true or false)",
        "p.yaml:11:18: allow_empty must be true or false, got 'maybe'",
        "p.yaml:12:11: name must not be empty",
        "p.yaml:13:19: repositories is an empty list; give at least one entry",
        "p.yaml:14:10: keep is empty; add rules, or write keep: {} to delete every tag in scope",
        "p.yaml:15:5: policy must be a mapping, got 'just a string'",
    ]


def test_required_keys() -> None:
    assert problems(
        """\
        policies:
          - tags: ["*"]
        """
    ) == [
        "p.yaml:2:5: name is required: a unique name for logs, metrics and the plan",
        'p.yaml:2:5: repositories is required, e.g. repositories: ["ci/**"]',
        "p.yaml:2:5: keep: is required; use keep: {} to delete every tag in scope",
    ]


def test_top_level_shape() -> None:
    assert problems("") == ["p.yaml:1:1: empty file; expected a 'policies:' list"]
    assert problems("- name: a\n") == ["p.yaml:1:1: the policy file must be a mapping, got a list"]
    assert problems("policies: {name: a}\n") == [
        "p.yaml:1:11: policies must be a list of policies (each item starts with '- ')"
    ]


def test_no_policies_is_a_warning_not_a_problem() -> None:
    result = validate_policies_text("policies: []\n")
    assert result.problems == ()
    assert [str(w) for w in result.warnings] == ["policies.yaml:1:11: no policies in this file"]


def test_yaml_syntax_error_is_one_problem() -> None:
    assert problems("policies:\n  - name: [a\n") == [
        "p.yaml:3:1: invalid YAML: while parsing a flow sequence, expected ',' or ']', but got"
        " '<stream end>'"
    ]


def test_duplicate_keys_are_problems() -> None:
    assert problems(
        """\
        policies:
          - name: a
            repositories: x
            keep: {last: 1, last: 2}
        """
    ) == ["p.yaml:4:21: duplicate key 'last' (first at line 4, column 12); remove one of them"]


def test_duplicate_names_are_reported_at_both_places_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("policies:\n  - {name: shared, repositories: x, keep: {}}\n")
    (tmp_path / "b.yml").write_text(
        "# another team\npolicies:\n  - name: other\n    repositories: y\n    keep: {}\n"
        "  - name: shared\n    repositories: z\n    keep: {}\n"
    )
    result = check_policies([tmp_path])
    a, b = tmp_path / "a.yaml", tmp_path / "b.yml"
    assert [str(p) for p in result.problems] == [
        f"{a}:2:12: duplicate policy name 'shared' (also at {b}:6:11); names must be unique"
        " across all policy files",
        f"{b}:6:11: duplicate policy name 'shared' (also at {a}:2:12); names must be unique"
        " across all policy files",
    ]
    assert result.policies == ()


def test_load_policies_raises_with_every_problem(tmp_path: Path) -> None:
    first = tmp_path / "first.yaml"
    second = tmp_path / "second.yaml"
    first.write_text("policies:\n  - {name: a, repositories: x, keep: {lst: 1}}\n")
    second.write_text("policies:\n  - {name: b, repositories: x}\n")
    with pytest.raises(ConfigError) as info:
        load_policies([first, second])
    assert [str(p) for p in info.value.problems] == [
        f"{first}:2:39: unknown key 'lst' in keep; did you mean 'last'?",
        f"{second}:2:5: keep: is required; use keep: {{}} to delete every tag in scope",
    ]
    assert info.value.exit_code == 2


def test_directories_files_and_sources(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "b.yaml").write_text("policies:\n  - {name: b, repositories: x, keep: {}}\n")
    (policies / "a.yml").write_text("policies:\n\n  - {name: a, repositories: x, keep: {}}\n")
    (policies / "notes.txt").write_text("not a policy")
    (policies / ".#b.yaml").write_text("editor lock file")
    extra = tmp_path / "extra.yaml"
    extra.write_text("policies:\n  - {name: c, repositories: x, keep: {}}\n")
    loaded = load_policies([policies, extra, policies / "b.yaml"])
    assert [(p.name, p.source) for p in loaded] == [
        ("a", f"{policies / 'a.yml'}:3"),
        ("b", f"{policies / 'b.yaml'}:2"),
        ("c", f"{extra}:2"),
    ]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = check_policies([tmp_path / "nope.yaml", empty])
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'nope.yaml'}:1:1: no such policy file or directory"
    ]
    assert [str(w) for w in result.warnings] == [
        f"{empty}:1:1: no *.yaml or *.yml policy files in this directory"
    ]


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"policies: []\n# caf\xe9\n")
    assert [p.message for p in check_policies([path]).problems] == [
        "policy file is not UTF-8 text; save it as UTF-8"
    ]
