"""Loading any YAML (generated structures dumped to YAML, and raw text) as a policy file or a
config file raises nothing but the documented ConfigError / UsageError (exit 2)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from retentiond.config import load_config
from retentiond.errors import ConfigError, UsageError
from retentiond.policy.loader import KEEP_KEYS, POLICY_KEYS, load_policies
from tests.property.policies import policy_docs
from tests.property.profiles import scaled, scratch

CONFIG_KEYS = (
    "registry", "root", "url", "cache", "runtime", "kind", "gc_mode", "commands", "policies",
    "schedule", "plan_every", "window", "window_length", "timezone", "safety",
    "max_delete_ratio", "untagged_min_age", "grace", "metrics", "listen", "state_dir", "log",
    "format", "level",
)  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(("policies", *POLICY_KEYS, *KEEP_KEYS, *CONFIG_KEYS)),
    st.text(max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.from_regex(r"-?\d{1,25}[smhdw]?(\d{1,25}[smhdw])?", fullmatch=True),  # durations, ints
    st.from_regex(r"(re:|!)?[*?a-z.\\()+|\[\]{},^$-]{0,12}", fullmatch=True),  # patterns
    st.sampled_from(("**", "keep", "delete", "pushed", "created", "0 3 * * SUN", "UTC")),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=25,
)
REQUIRED = ("name", "repositories", "keep")
POLICY_DOCS = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"policies": st.lists(st.dictionaries(KEYS, VALUES, max_size=8), max_size=3)}
    ),
    st.fixed_dictionaries(
        {
            "policies": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": VALUES,
                        "repositories": VALUES,
                        "keep": st.dictionaries(st.sampled_from(KEEP_KEYS), VALUES),
                    },
                    optional={k: VALUES for k in POLICY_KEYS if k not in REQUIRED},
                ),
                max_size=2,
            )
        }
    ),
)
#: values that are nearly right, at the edges: huge numbers and durations, odd patterns, nesting
HOSTILE = st.one_of(
    st.integers(min_value=2**31 - 2, max_value=2**70),
    st.integers(max_value=0),
    st.from_regex(r"\d{8,20}[smhdw]", fullmatch=True),
    st.from_regex(r"(re:|!|re:!)?[(*+?a|\\\[\]{}0-9,]{0,10}", fullmatch=True),
    st.lists(st.from_regex(r"(re:)?[(*+?a|]{0,8}", fullmatch=True), max_size=3),
    st.integers(1, 300).map(lambda depth: _nested(depth)),
    VALUES,
)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_policy_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid policy file with one or two fields replaced by a hostile value."""
    doc = draw(policy_docs())
    for _ in range(draw(st.integers(1, 2))):
        policy = draw(st.sampled_from(doc["policies"]))
        key = draw(st.sampled_from((*POLICY_KEYS, *(f"keep.{k}" for k in KEEP_KEYS))))
        if key.startswith("keep.") and isinstance(policy.get("keep"), dict):
            policy["keep"][key[5:]] = draw(HOSTILE)
        else:
            policy[key] = draw(HOSTILE)
    return doc


#: every key of a full config, by section (None: a top-level scalar)
CONFIG_FIELDS: dict[str | None, tuple[str, ...]] = {
    "registry": (
        *("root", "url", "username", "password_file", "tls_verify", "cache", "redis_url"),
        *("storage", "config_file"),
    ),
    "runtime": ("kind", "container", "registry_config", "gc_mode", "commands"),
    "schedule": ("plan_every", "window", "window_length", "timezone"),
    "safety": ("max_delete_ratio", "untagged_min_age", "grace"),
    "metrics": ("listen",),
    "log": ("format", "level"),
    None: ("policies", "state_dir"),
}
VALID_CONFIG: dict[str, Any] = {
    "registry": {"root": "registry", "url": "http://127.0.0.1:5000", "cache": "inmemory"},
    "runtime": {"kind": "none"},
    "policies": ["policies/"],
    "schedule": {"plan_every": "15m", "window": "0 3 * * SUN", "window_length": "2h"},
    "safety": {"max_delete_ratio": 0.8, "untagged_min_age": "1h", "grace": "0s"},
    "metrics": {"listen": "127.0.0.1:9480"},
    "state_dir": "state",
    "log": {"format": "json", "level": "info"},
}


@st.composite
def mutated_config_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one or two fields replaced by a hostile value."""
    doc = copy.deepcopy(VALID_CONFIG)
    for _ in range(draw(st.integers(1, 2))):
        section = draw(st.sampled_from(sorted(CONFIG_FIELDS, key=str)))
        key = draw(st.sampled_from(CONFIG_FIELDS[section]))
        value = draw(
            st.one_of(HOSTILE, st.from_regex(r"[0-9a-z:/.\[\]*@ -]{0,30}", fullmatch=True))
        )
        if section is None:
            doc[key] = value
        else:
            doc.setdefault(section, {})[key] = value
    return doc


CONFIG_DOCS = st.one_of(VALUES, st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, max_size=8))
#: text that is mostly YAML punctuation: anchors, aliases, tags, flow collections, indentation
YAML_TEXT = st.one_of(
    st.text(alphabet="&*!|>:-?[]{},#'\"\\%@`\n ab0", max_size=80),
    st.from_regex(r"(( {0,4})(- |[a-z_]{1,8}: )?(&a |\*a|!!\w+ |\[|\{)?\w{0,6}\n){1,8}"),
    # deep nesting, in flow and in block style
    st.integers(1, 3000).map(lambda n: "policies: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 3000).map(lambda n: "policies:\n" + "- " * n + "x\n"),
    st.integers(1, 3000).map(lambda n: "policies: " + "{a: " * n + "b" + "}" * n + "\n"),
)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def loads_or_config_error(text: str, as_config: bool) -> None:
    """Write ``text`` to a file and load it; only ConfigError / UsageError may escape."""
    with scratch() as tmp:
        path = Path(tmp) / "file.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            if as_config:
                load_config(path)
            else:
                load_policies([path])
        except (ConfigError, UsageError):
            pass


@settings(max_examples=scaled(150))
@given(doc=POLICY_DOCS)
@example(doc={"policies": [{"name": "a", "repositories": ["**"], "keep": {"within": "1w"}}]})
def test_any_yaml_structure_as_policy_file_loads_or_raises_config_error(doc: Any) -> None:
    loads_or_config_error(dump(doc), as_config=False)


@settings(max_examples=scaled(400))
@given(doc=mutated_policy_docs())
def test_valid_policy_file_with_a_hostile_field_loads_or_raises_config_error(
    doc: dict[str, Any],
) -> None:
    loads_or_config_error(dump(doc), as_config=False)


@settings(max_examples=scaled(200))
@given(text=YAML_TEXT)
def test_any_yaml_text_as_policy_file_loads_or_raises_config_error(text: str) -> None:
    loads_or_config_error(text, as_config=False)


@settings(max_examples=scaled(120))
@given(doc=CONFIG_DOCS)
def test_any_yaml_structure_as_config_file_loads_or_raises_config_error(doc: Any) -> None:
    loads_or_config_error(dump(doc), as_config=True)


@settings(max_examples=scaled(300))
@given(doc=mutated_config_docs())
def test_valid_config_with_a_hostile_field_loads_or_raises_config_error(
    doc: dict[str, Any],
) -> None:
    loads_or_config_error(dump(doc), as_config=True)


@settings(max_examples=scaled(120))
@given(text=YAML_TEXT)
def test_any_yaml_text_as_config_file_loads_or_raises_config_error(text: str) -> None:
    loads_or_config_error(text, as_config=True)
