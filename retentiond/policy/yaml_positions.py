"""YAML loading that keeps the 1-based line and column of every key and value.

:func:`load_yaml` composes the document with PyYAML's safe loader and walks the node graph into
a small tree (:class:`YamlMap`, :class:`YamlList`, :class:`YamlScalar`), so validation can say
``FILE:LINE:COL`` for any value. Syntax errors, duplicate keys, non-string keys and unsupported
tags become :class:`~retentiond.errors.SourceProblem` values instead of exceptions. Anchors,
aliases and ``<<`` merge keys work as in plain YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from retentiond.errors import SourceProblem

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True, slots=True)
class YamlScalar:
    value: object  # str, int, float, bool, None, or what a standard YAML tag constructs
    position: Position


@dataclass(frozen=True, slots=True)
class YamlList:
    items: tuple[YamlValue, ...]
    position: Position


@dataclass(frozen=True, slots=True)
class YamlEntry:
    key: str
    key_position: Position
    value: YamlValue


@dataclass(frozen=True, slots=True)
class YamlMap:
    entries: dict[str, YamlEntry]
    position: Position


YamlValue = YamlScalar | YamlList | YamlMap


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A loaded file: ``root`` is None for an empty file or when the YAML does not parse."""

    file: str
    root: YamlValue | None
    problems: tuple[SourceProblem, ...] = field(default=())


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[SourceProblem] = []
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()

    def problem(self, position: Position, message: str) -> None:
        self.problems.append(SourceProblem(self.file, position.line, position.column, message))

    def walk(self, node: Node) -> YamlValue:
        position = _position(node)
        if id(node) in self._active:
            self.problem(position, "an alias refers to a node that contains it; remove the cycle")
            return YamlScalar(None, position)
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node)
            if isinstance(node, SequenceNode):
                return YamlList(tuple(self.walk(item) for item in node.value), position)
            return self._scalar(node)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: Node) -> YamlScalar:
        position = _position(node)
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self.problem(position, f"unsupported YAML tag {node.tag!r}; remove the tag")
            value = node.value
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.problem(position, f"cannot read this value: {exc}; quote it for a string")
            value = node.value
        return YamlScalar(value, position)

    def _mapping(self, node: MappingNode) -> YamlMap:
        explicit: dict[str, YamlEntry] = {}
        merged: dict[str, YamlEntry] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for entry in self._merged_entries(value_node):
                    merged.setdefault(entry.key, entry)
                continue
            key_position = _position(key_node)
            if not isinstance(key_node, ScalarNode):
                self.problem(key_position, "a key must be a plain string, not a list or mapping")
                continue
            key = str(key_node.value)
            if key in explicit:
                first = explicit[key].key_position
                self.problem(
                    key_position,
                    f"duplicate key {key!r} (first at line {first.line}, column {first.column});"
                    " remove one of them",
                )
                continue
            explicit[key] = YamlEntry(key, key_position, self.walk(value_node))
        return YamlMap({**merged, **explicit}, _position(node))

    def _merged_entries(self, node: Node) -> list[YamlEntry]:
        """The entries a ``<<`` key brings in, the first source winning as YAML specifies."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        entries: dict[str, YamlEntry] = {}
        for source in sources:
            value = self.walk(source)
            if not isinstance(value, YamlMap):
                self.problem(value.position, "'<<' merges only mappings (or a list of mappings)")
                continue
            for entry in value.entries.values():
                entries.setdefault(entry.key, entry)
        return list(entries.values())


def load_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; every problem found is in the result, nothing is raised."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = ", ".join(str(part) for part in (exc.context, exc.problem) if part)
        if exc.context == "while scanning an alias":
            reason += '; quote a value that starts with * or &, e.g. "* 3 * * SUN"'
        problem = SourceProblem(file, line, column, f"invalid YAML: {reason}")
        return YamlDocument(file, None, (problem,))
    except yaml.YAMLError as exc:
        return YamlDocument(file, None, (SourceProblem(file, 1, 1, f"invalid YAML: {exc}"),))
    if node is None:
        return YamlDocument(file, None)
    walker = _Walker(file)
    root = walker.walk(node)
    return YamlDocument(file, root, tuple(walker.problems))


def describe(value: YamlValue) -> str:
    """How a value reads in an error message: ``'ten'``, ``true``, ``a list``, ``a mapping``."""
    if isinstance(value, YamlMap):
        return "a mapping"
    if isinstance(value, YamlList):
        return "a list"
    raw = value.value
    if raw is None:
        return "nothing (null)"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return repr(raw)
    return str(raw)
