"""Policy files: read them, validate every field, build :class:`~retentiond.policy.model.Policy`.

:func:`check_policies` never raises: it returns the policies together with every problem and
warning, each located as ``FILE:LINE:COL``. :func:`load_policies` is the strict form the daemon
uses: it raises one :class:`~retentiond.errors.ConfigError` carrying every problem at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retentiond.errors import ConfigError, SourceProblem
from retentiond.policy.files import SourceFileError, read_source_file
from retentiond.policy.model import KeepRules, OrderBy, Policy, Untagged
from retentiond.policy.selectors import ALL, MAX_TAG_LENGTH, Selector
from retentiond.policy.text import excerpt
from retentiond.policy.yaml_positions import Position, YamlList, YamlValue, load_yaml
from retentiond.yaml_checker import Checker, is_null

FILE_KEYS = ("policies",)
POLICY_KEYS = (
    "name",
    "repositories",
    "tags",
    "keep",
    "order_by",
    "untagged",
    "allow_empty",
    "allow_mass_delete",
)
KEEP_KEYS = ("last", "within", "tags", "semver", "pulled_within")
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """What checking a set of policy files found. ``policies`` is empty when there are problems."""

    policies: tuple[Policy, ...]
    files: tuple[str, ...]
    problems: tuple[SourceProblem, ...]
    warnings: tuple[SourceProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Named:
    name: str
    file: str
    position: Position


def load_policies(paths: Sequence[Path]) -> list[Policy]:
    """Every policy in ``paths`` (files, or directories of ``*.yaml``/``*.yml``), or ConfigError."""
    result = check_policies(paths)
    if result.problems:
        raise ConfigError(list(result.problems))
    return list(result.policies)


def check_policies(paths: Sequence[Path]) -> PolicyCheck:
    """Read and validate the policy files; every problem and warning is in the result."""
    files, problems, warnings = expand_paths(paths)
    texts: list[tuple[str, str]] = []
    for path in files:
        try:
            texts.append((str(path), read_source_file(path, "policy file")))
        except SourceFileError as exc:
            problems.append(SourceProblem(str(path), 1, 1, str(exc)))
    checked = check_policy_texts(texts)
    return PolicyCheck(
        checked.policies if not problems else (),
        tuple(str(path) for path in files),
        tuple(sorted([*problems, *checked.problems], key=_place)),
        tuple(sorted([*warnings, *checked.warnings], key=_place)),
    )


def validate_policies_text(text: str, filename: str = "policies.yaml") -> PolicyCheck:
    """Check one policy file given as text (for tests and tools)."""
    return check_policy_texts([(filename, text)])


def check_policy_texts(texts: Sequence[tuple[str, str]]) -> PolicyCheck:
    """Check policy files given as ``(filename, text)``; names must be unique across all of them."""
    policies: list[Policy] = []
    names: list[_Named] = []
    problems: list[SourceProblem] = []
    warnings: list[SourceProblem] = []
    for filename, text in texts:
        checker = Checker(filename)
        document = load_yaml(text, filename)
        problems.extend(document.problems)
        if not document.problems:
            root = document.root
            if root is None:
                checker.problem(Position(1, 1), "empty file; expected a 'policies:' list")
            else:
                policies.extend(_read_file(checker, root, names))
        problems.extend(checker.problems)
        warnings.extend(checker.warnings)
    problems.extend(_duplicate_names(names))
    return PolicyCheck(
        tuple(policies) if not problems else (),
        tuple(filename for filename, _ in texts),
        tuple(sorted(problems, key=_place)),
        tuple(sorted(warnings, key=_place)),
    )


def _place(problem: SourceProblem) -> tuple[str, int, int]:
    return (problem.file, problem.line, problem.column)


def expand_paths(
    paths: Sequence[Path],
) -> tuple[list[Path], list[SourceProblem], list[SourceProblem]]:
    """Files named, plus the ``*.yaml``/``*.yml`` files (sorted, not hidden) in directories named.

    Returns the files, the problems (missing paths) and the warnings (directories without policies).
    """
    files: list[Path] = []
    problems: list[SourceProblem] = []
    warnings: list[SourceProblem] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            try:
                found = _policy_files_in(path)
            except OSError as exc:
                reason = f"cannot list policy directory: {exc.strerror or exc}"
                problems.append(SourceProblem(str(path), 1, 1, reason))
                continue
            if not found:
                warnings.append(
                    SourceProblem(
                        str(path), 1, 1, "no *.yaml or *.yml policy files in this directory"
                    )
                )
        elif path.exists():
            found = [path]
        else:
            reason = "no such policy file or directory"
            if path.is_symlink():
                reason = "a symbolic link to nothing (its target is missing, or a loop of links)"
            problems.append(SourceProblem(str(path), 1, 1, reason))
            continue
        for file in found:
            real = Path(os.path.realpath(file))  # never raises, even on a loop of links
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files, problems, warnings


def _policy_files_in(directory: Path) -> list[Path]:
    """The ``*.yaml``/``*.yml`` entries of ``directory`` that are not hidden and not directories.

    A FIFO, device or dangling link named like a policy file is listed too, so that reading it
    reports it instead of skipping it in silence.
    """
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in SUFFIXES and not p.name.startswith(".") and not p.is_dir()
    )


def _read_file(checker: Checker, root: YamlValue, names: list[_Named]) -> list[Policy]:
    top = checker.read_mapping(root, "the policy file", FILE_KEYS)
    if top is None:
        return []
    entry = top.entries.get("policies")
    if entry is None:
        checker.problem(top, "missing 'policies:' list at the top level")
        return []
    if is_null(entry.value) or (isinstance(entry.value, YamlList) and not entry.value.items):
        checker.warning(entry.value, "no policies in this file")
        return []
    if not isinstance(entry.value, YamlList):
        checker.problem(
            entry.value, "policies must be a list of policies (each item starts with '- ')"
        )
        return []
    policies = [_read_policy(checker, item, names) for item in entry.value.items]
    return [policy for policy in policies if policy is not None]


def _read_policy(checker: Checker, value: YamlValue, names: list[_Named]) -> Policy | None:
    before = len(checker.problems)
    item = checker.read_mapping(value, "policy", POLICY_KEYS)
    if item is None:
        return None
    fields = {key: entry.value for key, entry in item.entries.items()}
    name = None
    if "name" in fields:
        name = checker.read_string(fields["name"], "name")
        if name is not None:
            names.append(_Named(name, checker.file, fields["name"].position))
    else:
        checker.problem(item, "name is required: a unique name for logs, metrics and the plan")
    repositories = None
    if "repositories" in fields:
        repositories = checker.read_selector(fields["repositories"], "repositories")
    else:
        checker.problem(item, 'repositories is required, e.g. repositories: ["ci/**"]')
    tags: Selector | None = ALL
    if "tags" in fields:  # a tag too long for the registry is in no policy's scope
        tags = checker.read_selector(fields["tags"], "tags", max_length=MAX_TAG_LENGTH)
    keep = None
    if "keep" in fields:
        keep = _read_keep(checker, fields["keep"])
    else:
        checker.problem(item, "keep: is required; use keep: {} to delete every tag in scope")
    order_by = OrderBy.PUSHED
    if "order_by" in fields:
        order_by = checker.read_choice(fields["order_by"], "order_by", OrderBy) or order_by
    untagged = Untagged.KEEP
    if "untagged" in fields:
        untagged = checker.read_choice(fields["untagged"], "untagged", Untagged) or untagged
    flags = {
        key: checker.read_bool(fields[key], key) if key in fields else False
        for key in ("allow_empty", "allow_mass_delete")
    }
    if len(checker.problems) > before or None in (name, repositories, tags, keep):
        return None
    assert name is not None and repositories is not None and tags is not None and keep is not None
    return Policy(
        name=name,
        repositories=repositories,
        tags=tags,
        keep=keep,
        order_by=order_by,
        untagged=untagged,
        allow_empty=bool(flags["allow_empty"]),
        allow_mass_delete=bool(flags["allow_mass_delete"]),
        source=f"{checker.file}:{item.position.line}",
    )


def _read_keep(checker: Checker, value: YamlValue) -> KeepRules | None:
    if is_null(value):
        checker.problem(
            value, "keep is empty; add rules, or write keep: {} to delete every tag in scope"
        )
        return None
    keep = checker.read_mapping(value, "keep", KEEP_KEYS)
    if keep is None:
        return None
    fields = {key: entry.value for key, entry in keep.entries.items()}
    return KeepRules(
        last=checker.read_positive_int(fields["last"], "keep.last") if "last" in fields else None,
        within=(
            checker.read_duration(fields["within"], "keep.within", allow_zero=False)
            if "within" in fields
            else None
        ),
        tags=(  # a tag too long for the registry is kept: never deleted unread
            checker.read_selector(
                fields["tags"], "keep.tags", max_length=MAX_TAG_LENGTH, when_too_long=True
            )
            if "tags" in fields
            else None
        ),
        semver=(
            checker.read_positive_int(fields["semver"], "keep.semver")
            if "semver" in fields
            else None
        ),
        pulled_within=(
            checker.read_duration(fields["pulled_within"], "keep.pulled_within", allow_zero=False)
            if "pulled_within" in fields
            else None
        ),
    )


def _duplicate_names(names: list[_Named]) -> list[SourceProblem]:
    by_name: dict[str, list[_Named]] = {}
    for named in names:
        by_name.setdefault(named.name, []).append(named)
    problems: list[SourceProblem] = []
    for name, places in by_name.items():
        for place in places if len(places) > 1 else ():
            others = ", ".join(
                f"{o.file}:{o.position.line}:{o.position.column}" for o in places if o is not place
            )
            problems.append(
                SourceProblem(
                    place.file,
                    place.position.line,
                    place.position.column,
                    f"duplicate policy name {excerpt(name)} (also at {others}); names must be"
                    " unique across all policy files",
                )
            )
    return problems
