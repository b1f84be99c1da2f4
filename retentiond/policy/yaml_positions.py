"""YAML loading that keeps the 1-based line and column of every key and value.

:func:`load_yaml` composes the document with PyYAML's safe loader and walks the node graph into
a small tree (:class:`YamlMap`, :class:`YamlList`, :class:`YamlScalar`), so validation can say
``FILE:LINE:COL`` for any value. Syntax errors, duplicate keys, non-string keys and unsupported
tags become :class:`~retentiond.errors.SourceProblem` values instead of exceptions. Anchors,
aliases and ``<<`` merge keys work as in plain YAML, within bounds that a file written by
hand never reaches and a hostile one cannot get past:

- nesting: at most :data:`MAX_DEPTH` levels of lists and mappings (the parser recurses);
- aliases: each alias is a copy of what its anchor names, so a few hundred bytes of aliases of
  aliases can stand for billions of values (an "alias bomb"); at most :data:`MAX_ALIAS_VALUES`
  values are copied through aliases in one file.

Nothing in a message quotes more than an excerpt of the file (:mod:`retentiond.policy.text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from retentiond.errors import SourceProblem
from retentiond.policy.text import excerpt, shorten_quotes

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_DEPTH = 64
MAX_ALIAS_VALUES = 10_000


class _Refused(Exception):
    """The document exceeds a bound; the walk stops with this one problem."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(
                    mark.line + 1,
                    mark.column + 1,
                    f"nested more than {MAX_DEPTH} levels deep (lists and mappings inside each"
                    " other); flatten the structure",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
        self._walked: set[int] = set()
        self._copied = 0  # values walked again because an alias refers to them

    def problem(self, position: Position, message: str) -> None:
        self.problems.append(SourceProblem(self.file, position.line, position.column, message))

    def walk(self, node: Node) -> YamlValue:
        position = _position(node)
        if id(node) in self._active:
            self.problem(position, "an alias refers to a node that contains it; remove the cycle")
            return YamlScalar(None, position)
        self._count(node, position)
        if len(self._active) >= MAX_DEPTH:
            raise _Refused(
                position.line,
                position.column,
                f"nested more than {MAX_DEPTH} levels deep, counting what aliases (*name) bring"
                " in; flatten the structure",
            )
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node)
            if isinstance(node, SequenceNode):
                return YamlList(tuple(self.walk(item) for item in node.value), position)
            return self._scalar(node)
        finally:
            self._active.discard(id(node))

    def _count(self, node: Node, position: Position) -> None:
        """Count a value walked twice (through an alias); refuse past :data:`MAX_ALIAS_VALUES`."""
        if id(node) not in self._walked:
            self._walked.add(id(node))
            return
        self._copied += 1
        if self._copied > MAX_ALIAS_VALUES:
            raise _Refused(
                position.line,
                position.column,
                f"aliases (*name) copy more than {MAX_ALIAS_VALUES} values in this file (an"
                " alias bomb?); write the values out instead of nesting aliases of aliases",
            )

    def _scalar(self, node: Node) -> YamlScalar:
        position = _position(node)
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self.problem(position, f"unsupported YAML tag {excerpt(node.tag)}; remove the tag")
            value = node.value
        except Exception as exc:  # PyYAML's constructors raise anything on some values its
            # resolvers accept (an explicit !!timestamp that is no date: AttributeError)
            reason = f"not a valid {excerpt(node.tag.rpartition(':')[2])}"
            if isinstance(exc, yaml.YAMLError | ValueError | OverflowError):
                reason = shorten_quotes(str(exc))
            self.problem(position, f"cannot read this value: {reason}; quote it for a string")
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
                    f"duplicate key {excerpt(key)} (first at line {first.line},"
                    f" column {first.column}); remove one of them",
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
        node = _compose(text)
        if node is None:
            return YamlDocument(file, None)
        walker = _Walker(file)
        root = walker.walk(node)
    except _Refused as refused:
        problem = SourceProblem(file, refused.line, refused.column, refused.message)
        return YamlDocument(file, None, (problem,))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = ", ".join(str(part) for part in (exc.context, exc.problem) if part)
        reason = shorten_quotes(reason)
        if exc.context == "while scanning an alias":
            reason += '; quote a value that starts with * or &, e.g. "* 3 * * SUN"'
        problem = SourceProblem(file, line, column, f"invalid YAML: {reason}")
        return YamlDocument(file, None, (problem,))
    except yaml.YAMLError as exc:
        problem = SourceProblem(file, 1, 1, f"invalid YAML: {shorten_quotes(str(exc))}")
        return YamlDocument(file, None, (problem,))
    return YamlDocument(file, root, tuple(walker.problems))


def _compose(text: str) -> Node | None:
    """The node graph of the one document in ``text`` (``yaml.compose``, depth-bounded)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


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
    return excerpt(raw, quoted=isinstance(raw, str))
