"""A JSON Schema for policy files, generated from the policy model, for editors.

    python -m retentiond.policy.json_schema > schemas/policy.schema.json

The keys come from the loader (``FILE_KEYS``, ``POLICY_KEYS``, ``KEEP_KEYS``), the choices from
the model's enums, the duration units from :mod:`retentiond.durations`; the tables below add only
each key's JSON type and its help text. :func:`policy_schema` refuses to build a schema when a
table and the loader or the model's dataclasses disagree, and a test compares the committed
file with a fresh one, so the schema cannot drift from what ``retentiond check`` accepts.

An editor with the YAML language server validates a policy file as it is typed when the file
starts with a modeline naming the schema, relative to the file or as a URL::

    # yaml-language-server: $schema=../schemas/policy.schema.json

The schema is a first line of defence, not the judge: ``retentiond check`` also compiles every
``re:`` pattern with Python's ``re`` and checks that policy names are unique across files.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from dataclasses import dataclass
from typing import Any

from retentiond.durations import UNITS
from retentiond.policy import loader
from retentiond.policy.model import KeepRules, OrderBy, Policy, Untagged
from retentiond.yaml_checker import MAX_COUNT

SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

#: Fields of :class:`Policy` that are not written in a policy file.
NOT_IN_FILES = frozenset({"source"})


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a mapping in a policy file: its JSON Schema and its help text."""

    key: str
    schema: dict[str, Any]
    description: str
    required: bool = False


def _choice(choices: type[enum.Enum], default: enum.Enum) -> dict[str, Any]:
    return {"type": "string", "enum": [str(m.value) for m in choices], "default": default.value}


def _duration_pattern() -> str:
    """``14d``, ``1h30m``: units largest first, each at most once, not all zero."""
    parts = "".join(f"(?:\\d+{unit})?" for unit in sorted(UNITS, key=UNITS.__getitem__)[::-1])
    return f"^\\s*(?=\\S*[1-9]){parts}\\s*$"


#: A selector: a pattern, or a non-empty list of them; ``!`` excludes, ``re:`` is a regex.
SELECTOR_PATTERN: dict[str, Any] = {
    "type": "string",
    "pattern": "^(?!!?\\s*$)",
    "description": (
        'A glob (* within a path segment, ** across segments), or "re:<regex>" (a full '
        'match), or either after "!" to exclude.'
    ),
}
SELECTOR: dict[str, Any] = {
    "anyOf": [
        {"$ref": "#/definitions/pattern"},
        {"type": "array", "items": {"$ref": "#/definitions/pattern"}, "minItems": 1},
    ]
}

KEEP_FIELDS: tuple[Field, ...] = (
    Field(
        "last",
        {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "Keep the N most recent tags in scope (by order_by).",
    ),
    Field(
        "within",
        {"type": "string", "pattern": _duration_pattern(), "examples": ["14d", "12h", "2w"]},
        "Keep the tags pushed (or created, with order_by: created) in this last period: a "
        "whole number and a unit, s m h d w, e.g. 14d or 1h30m; at most 100 years (36500d).",
    ),
    Field(
        "tags",
        {"$ref": "#/definitions/selector"},
        'Always keep the tags that match these patterns, e.g. ["latest", "re:^v\\\\d+"].',
    ),
    Field(
        "semver",
        {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "Keep the N highest semantic versions among the tags in scope (semver 2.0 order; "
        "tags that are not versions never count).",
    ),
    Field(
        "pulled_within",
        {"type": "string", "pattern": _duration_pattern(), "examples": ["30d", "12h", "2w"]},
        "Keep the tags pulled in this last period (the manifest, or a manifest its index "
        "holds), from the registry's notifications; needs pulls.listen in the config. A "
        "manifest with no recorded pull counts as pulled when tracking began.",
    ),
)

POLICY_FIELDS: tuple[Field, ...] = (
    Field(
        "name",
        {"type": "string", "pattern": "\\S"},
        "Unique across all policy files; shown in the plan, the logs and the metrics.",
        required=True,
    ),
    Field(
        "repositories",
        {"$ref": "#/definitions/selector"},
        'The repositories this policy applies to, e.g. ["ci/**", "!ci/base"].',
        required=True,
    ),
    Field(
        "tags",
        {"$ref": "#/definitions/selector", "default": ["*"]},
        "The tags this policy decides about (default: all).",
    ),
    Field(
        "keep",
        {"$ref": "#/definitions/keep"},
        "A tag in scope is deleted unless one of these rules keeps it; keep: {} deletes every "
        "tag in scope.",
        required=True,
    ),
    Field(
        "order_by",
        _choice(OrderBy, Policy.__dataclass_fields__["order_by"].default),
        'What "recent" means for keep.last and keep.within: pushed (when the tag was last '
        "pushed) or created (the image config's created time).",
    ),
    Field(
        "untagged",
        _choice(Untagged, Policy.__dataclass_fields__["untagged"].default),
        "delete: also unlink manifests no tag reaches, once older than safety.untagged_min_age.",
    ),
    Field(
        "allow_empty",
        {"type": "boolean", "default": False},
        "true: a repository may lose its last tag, and is then removed as a whole.",
    ),
    Field(
        "allow_mass_delete",
        {"type": "boolean", "default": False},
        "true: exempt from safety.max_delete_ratio.",
    ),
)

FILE_FIELDS: tuple[Field, ...] = (
    Field(
        "policies",
        {"type": ["array", "null"], "items": {"$ref": "#/definitions/policy"}},
        "The retention policies of this file.",
        required=True,
    ),
)


class SchemaDrift(RuntimeError):
    """A table here and the loader or the model disagree on the keys of a mapping."""


def _check_keys(
    what: str, table: tuple[Field, ...], keys: tuple[str, ...], model: type[Any] | None
) -> None:
    in_table = tuple(field.key for field in table)
    if in_table != keys:
        raise SchemaDrift(
            f"{what}: the schema table has {in_table}, the loader reads {keys}; "
            "update retentiond/policy/json_schema.py"
        )
    if model is not None:
        fields = tuple(f.name for f in dataclasses.fields(model))
        in_model = tuple(name for name in fields if name not in NOT_IN_FILES)
        if set(in_model) != set(keys):
            raise SchemaDrift(f"{what}: the model has fields {in_model}, the loader reads {keys}")


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """``schema`` with a description; draft-07 ignores the siblings of ``$ref``, so a reference
    is wrapped in ``allOf``."""
    if "$ref" in schema:
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        return {"allOf": [{"$ref": schema["$ref"]}], **rest, "description": description}
    return {**schema, "description": description}


def _object(table: tuple[Field, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "object",
        "properties": {f.key: _described(f.schema, f.description) for f in table},
        "additionalProperties": False,
    }
    required = [f.key for f in table if f.required]
    if required:
        result["required"] = required
    return result


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07, which editors support best) of one policy file."""
    _check_keys("the policy file", FILE_FIELDS, loader.FILE_KEYS, None)
    _check_keys("a policy", POLICY_FIELDS, loader.POLICY_KEYS, Policy)
    _check_keys("keep", KEEP_FIELDS, loader.KEEP_KEYS, KeepRules)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "retentiond policy file",
        "description": (
            "Retention policies for retentiond. Generated by `python -m "
            "retentiond.policy.json_schema`; `retentiond check` is the full validation."
        ),
        **_object(FILE_FIELDS),
        "definitions": {
            "policy": _object(POLICY_FIELDS),
            "keep": _object(KEEP_FIELDS),
            "selector": SELECTOR,
            "pattern": SELECTOR_PATTERN,
        },
    }


def render() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
