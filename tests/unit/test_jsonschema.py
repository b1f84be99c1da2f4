"""The JSON Schema for policy files: the committed file is the generated one, the examples in
policies/ validate, and the schema agrees with the loader (``retentiond check``) on what a
policy file may contain, case by case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from retentiond.policy import json_schema, loader
from retentiond.policy.loader import validate_policies_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "policy.schema.json"
POLICY_FILES = sorted((ROOT / "policies").glob("*.y*ml"))
REGENERATE = "python -m retentiond.policy.json_schema > schemas/policy.schema.json"

MINIMAL = 'policies:\n  - name: p\n    repositories: ["ci/**"]\n'


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json_schema.policy_schema())


def schema_errors(text: str) -> list[str]:
    return [error.message for error in validator().iter_errors(yaml.safe_load(text))]


def policy(extra: str) -> str:
    """A policy file with one policy: ``extra`` is indented under it."""
    return MINIMAL + "".join(f"    {line}\n" for line in extra.splitlines())


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; run `{REGENERATE}`"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema.render(), (
        f"schemas/policy.schema.json is stale; run `{REGENERATE}` and commit it"
    )


def test_the_schema_is_a_valid_draft_7_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_the_module_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert json_schema.main() == 0
    assert capsys.readouterr().out == json_schema.render()


@pytest.mark.parametrize("path", POLICY_FILES, ids=[p.name for p in POLICY_FILES])
def test_every_example_policy_validates(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator().iter_errors(document)] == []


def test_the_examples_exist() -> None:
    assert len(POLICY_FILES) >= 3


def test_a_misspelt_key_fails() -> None:
    errors = list(validator().iter_errors(yaml.safe_load(policy("keep:\n  withn: 14d"))))
    assert len(errors) == 1
    assert errors[0].validator == "additionalProperties"
    assert "'withn' was unexpected" in errors[0].message
    assert list(errors[0].absolute_path) == ["policies", 0, "keep"]
    assert not validate_policies_text(policy("keep:\n  withn: 14d")).ok


#: (id, policy-file text). Each case: the schema accepts it exactly when the loader does.
CASES: list[tuple[str, str]] = [
    ("minimal", policy("keep: {last: 3}")),
    (
        "every-key",
        policy(
            'tags: ["*", "!latest"]\n'
            "keep:\n  last: 10\n  within: 1w2d3h4m5s\n"
            '  tags: [latest, "re:^v\\\\d+$"]\n  semver: 3\n'
            "order_by: created\nuntagged: delete\nallow_empty: true\nallow_mass_delete: false"
        ),
    ),
    ("keep-empty-mapping", policy("keep: {}")),
    ("selector-as-string", policy("tags: latest\nkeep: {}")),
    ("two-policies", MINIMAL + "    keep: {}\n  - name: q\n    repositories: x\n    keep: {}\n"),
    ("policies-null", "policies:\n"),
    ("policies-empty-list", "policies: []\n"),
    # problems
    ("misspelt-policy-key", policy("keep: {}\nallow_emtpy: true")),
    ("misspelt-keep-key", policy("keep: {withn: 14d}")),
    ("unknown-top-key", "version: 1\n" + policy("keep: {}")),
    ("missing-policies", "other: []\n"),
    ("policies-mapping", "policies: {name: p}\n"),
    ("policy-a-string", "policies: [ci-builds]\n"),
    ("missing-name", 'policies:\n  - repositories: ["ci/**"]\n    keep: {}\n'),
    ("missing-repositories", "policies:\n  - name: p\n    keep: {}\n"),
    ("missing-keep", MINIMAL),
    ("keep-null", policy("keep:")),
    ("keep-a-list", policy("keep: [last]")),
    ("name-a-number", "policies:\n  - name: 123\n    repositories: x\n    keep: {}\n"),
    ("name-blank", 'policies:\n  - name: "  "\n    repositories: x\n    keep: {}\n'),
    ("repositories-empty-list", "policies:\n  - name: p\n    repositories: []\n    keep: {}\n"),
    ("repositories-mapping", "policies:\n  - name: p\n    repositories: {a: b}\n    keep: {}\n"),
    ("pattern-empty", policy('tags: [""]\nkeep: {}')),
    ("pattern-only-bang", policy('tags: ["!"]\nkeep: {}')),
    ("pattern-a-number", policy("tags: [1]\nkeep: {}")),
    ("last-zero", policy("keep: {last: 0}")),
    ("last-a-string", policy('keep: {last: "3"}')),
    ("last-true", policy("keep: {last: true}")),
    ("last-a-float", policy("keep: {last: 2.5}")),
    ("semver-negative", policy("keep: {semver: -1}")),
    ("within-no-unit", policy("keep: {within: 14}")),
    ("within-zero", policy("keep: {within: 0s}")),
    ("within-unknown-unit", policy("keep: {within: 14days}")),
    ("within-smallest-unit-first", policy("keep: {within: 30m1h}")),
    ("within-unit-twice", policy("keep: {within: 1h1h}")),
    ("within-with-spaces-inside", policy("keep: {within: 1h 30m}")),
    ("within-uppercase", policy("keep: {within: 14D}")),
    ("order-by-unknown", policy("keep: {}\norder_by: newest")),
    ("untagged-yes", policy("keep: {}\nuntagged: yes")),
    ("allow-empty-a-string", policy('keep: {}\nallow_empty: "true"')),
]


@pytest.mark.parametrize(("text",), [(text,) for _, text in CASES], ids=[c for c, _ in CASES])
def test_the_schema_agrees_with_the_loader(text: str) -> None:
    accepted_by_check = validate_policies_text(text).ok
    errors = schema_errors(text)
    assert (errors == []) == accepted_by_check, (
        f"check {'accepts' if accepted_by_check else 'rejects'} it, the schema says {errors}"
    )


def test_both_outcomes_are_covered() -> None:
    outcomes = {validate_policies_text(text).ok for _, text in CASES}
    assert outcomes == {True, False}


def test_what_only_check_can_find() -> None:
    """Python regexes and unique names across files are beyond a schema; check catches them."""
    bad_regex = policy('tags: ["re:(unclosed"]\nkeep: {}')
    assert schema_errors(bad_regex) == []
    assert not validate_policies_text(bad_regex).ok


def test_a_table_that_drifts_from_the_loader_refuses_to_generate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loader, "KEEP_KEYS", (*loader.KEEP_KEYS, "newest"))
    with pytest.raises(json_schema.SchemaDrift, match="keep"):
        json_schema.policy_schema()


def test_choices_and_units_come_from_the_model() -> None:
    schema: dict[str, Any] = json_schema.policy_schema()
    policy_props = schema["definitions"]["policy"]["properties"]
    assert policy_props["order_by"]["enum"] == ["pushed", "created"]
    assert policy_props["untagged"]["enum"] == ["keep", "delete"]
    assert schema["definitions"]["policy"]["required"] == ["name", "repositories", "keep"]
    assert (
        "(?:\\d+w)?(?:\\d+d)?" in schema["definitions"]["keep"]["properties"]["within"]["pattern"]
    )
