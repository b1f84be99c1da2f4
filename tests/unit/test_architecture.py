"""The architecture's rules, checked on the source (docs/ARCHITECTURE.md explains them).

- ``retentiond/core`` decides and does no I/O: it imports no module that touches the world.
- ``storage``, ``registry`` and ``runtime`` are adapters: none imports another.
- Commands do not import each other.
- One module, ``retentiond/storage/layout.py``, spells the registry's storage layout: no other
  module has a path-like string (no spaces) with a layout name in its code; docstrings,
  comments and messages may name them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "retentiond"

#: modules (and packages) whose import is I/O, a clock or a process
#: names of I/O modules that do no I/O: an in-memory buffer (a table's keys built without a copy)
IN_MEMORY = frozenset({"io.BytesIO"})
IO_MODULES = frozenset(
    {
        "os",
        "io",
        "pathlib",
        "shutil",
        "socket",
        "subprocess",
        "multiprocessing",
        "threading",
        "time",
        "httpx",
        "docker",
        "redis",
        "structlog",
        "sqlite3",
        "tempfile",
        "fcntl",
        "signal",
        "ctypes",
        "urllib",
        "http",
        "boto3",
        "botocore",
    }
)
ADAPTERS = ("retentiond.storage", "retentiond.registry", "retentiond.runtime")
#: what only the layout module may spell
LAYOUT_WORDS = (
    "_manifests",
    "_layers",
    "_uploads",
    "blobs/sha256",
    "current/link",
    "revisions/sha256",
    "docker/registry/v2",
    "retentiond-quarantine",
)
#: a layout word as whole path components ("unlinked_manifests_total" is a metric, not a path)
LAYOUT_PATH = re.compile(
    r"(?:^|/)(?:" + "|".join(re.escape(word) for word in LAYOUT_WORDS) + r")(?:/|$)"
)
LAYOUT_MODULE = PACKAGE / "storage" / "layout.py"


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(module: str, tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.split(".")[: -node.level]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings or bare expression strings."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            ids.add(id(node.value))
    return ids


def _code_strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _top(name: str) -> str:
    return name.split(".")[0]


def test_core_does_no_io() -> None:
    offenders = [
        f"{module} imports {imported}"
        for module, _, tree in _modules()
        if module.startswith("retentiond.core")
        for imported in sorted(_imports(module, tree))
        if (_top(imported) in IO_MODULES and imported not in IN_MEMORY)
        or (
            (imported.startswith("retentiond.") and not imported.startswith("retentiond.core"))
            and imported not in ("retentiond.errors", "retentiond.policy", "retentiond.durations")
            and not imported.startswith("retentiond.storage.layout")  # names only, no I/O
            and not imported.startswith(("retentiond.policy.model", "retentiond.config"))
        )
    ]
    assert offenders == []


def test_adapters_do_not_import_each_other() -> None:
    offenders = []
    for module, _, tree in _modules():
        own = next((a for a in ADAPTERS if module == a or module.startswith(a + ".")), None)
        if own is None:
            continue
        for imported in sorted(_imports(module, tree)):
            other = next(
                (a for a in ADAPTERS if imported == a or imported.startswith(a + ".")), None
            )
            if other is not None and other != own:
                offenders.append(f"{module} imports {imported}")
    assert offenders == []


def test_commands_do_not_import_each_other() -> None:
    shared = ("retentiond.commands.context",)
    offenders = [
        f"{module} imports {imported}"
        for module, _, tree in _modules()
        if module.startswith("retentiond.commands.")
        for imported in sorted(_imports(module, tree))
        if imported.startswith("retentiond.commands.")
        and not imported.startswith(shared)
        and not imported.startswith(module)
    ]
    assert offenders == []


def test_only_the_layout_module_spells_registry_paths() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:60]!r}"
        for _, path, tree in _modules()
        if path != LAYOUT_MODULE
        for line, text in _code_strings(tree)
        if " " not in text and LAYOUT_PATH.search(text)  # a message may name them
    ]
    assert offenders == []
