"""``retentiond check [PATH ...]``: validate the config and policy files, change nothing.

Every problem is printed at once as ``FILE:LINE:COL: message`` on stderr (warnings as
``FILE:LINE:COL: warning: message``), and a one-line summary goes to stdout when all is well.
With PATHs only those policy files are checked and no config is needed (pre-commit hooks).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from retentiond.config import check_config, find_config_path
from retentiond.errors import SourceProblem, UsageError
from retentiond.policy.loader import check_policies

EXIT_OK = 0
EXIT_INVALID = 2


def run_check(
    config_path: Path | None,
    paths: list[Path],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Check ``paths``, or the config (found as usual when None) and every policy file it names.

    Returns 0 when nothing is wrong (warnings allowed), 2 otherwise.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    problems: list[SourceProblem] = []
    warnings: list[SourceProblem] = []
    config_file = None
    if not paths:
        try:
            config_file = find_config_path(str(config_path) if config_path else None)
        except UsageError as exc:
            print(f"error: {exc}", file=err)
            return EXIT_INVALID
        config = check_config(config_file)
        problems += config.problems
        warnings += config.warnings
        paths = list(config.policy_paths)
    policies = check_policies(paths)
    problems += policies.problems
    warnings += policies.warnings

    report = [(p, "") for p in problems] + [(w, "warning: ") for w in warnings]
    for item, label in sorted(report, key=lambda r: (r[0].file, r[0].line, r[0].column)):
        print(f"{item.file}:{item.line}:{item.column}: {label}{item.message}", file=err)
    if problems:
        print(f"{_count(len(problems), 'problem')} found", file=err)
        return EXIT_INVALID
    summary = f"{_count(len(policies.policies), 'policy')} in {_count(len(policies.files), 'file')}"
    if config_file is not None:
        summary = f"config {config_file}, {summary}"
    if warnings:
        summary += f", {_count(len(warnings), 'warning')}"
    print(f"ok: {summary}", file=out)
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {plural}"
