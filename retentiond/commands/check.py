"""``retentiond check [PATH ...]``: validate the config and policy files, change nothing.

Every problem is printed at once as ``FILE:LINE:COL: message`` on stderr (warnings as
``FILE:LINE:COL: warning: message``), and a one-line summary goes to stdout when all is well.
With PATHs only those policy files are checked and no config is needed (pre-commit hooks).

Without PATHs, once the config and its policies are valid, the runtime is looked at, read-only:
with ``runtime.kind: docker`` the registry container is inspected and ``registry --version`` run
in it, and two lines follow the summary on stdout, the registry's version and its config file
with how it was found::

    registry: distribution v3.1.1 in container registry
    registry config: /etc/distribution/config.yml (from the container's command)

Then a line names the storage backend and where it is, from ``registry.root``,
``registry.storage`` or ``registry.config_file`` (never a secret)::

    storage: s3 bucket registry at http://rgw:7480, rootdirectory /prod (from /etc/reg.yml)

What stands in the way of a maintenance run, a version outside the tested release lines (2.8.x,
3.1.x), or a runtime that cannot be reached (no Docker where a pre-commit hook runs) is a
``warning: ...`` line on stderr; the exit code stays 0. ``kind: command`` prints the config
file it will read; ``kind: none`` nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import structlog

from retentiond.config import (
    Config,
    RegistryConfig,
    RuntimeConfig,
    check_config,
    find_config_path,
)
from retentiond.errors import RuntimeControlError, SourceProblem, StorageError, UsageError
from retentiond.policy.loader import check_policies
from retentiond.protection_config import ProtectConfig
from retentiond.pulls.report import pulls_report
from retentiond.runtime.discovery import TESTED_VERSIONS, RegistryFacts
from retentiond.storage_config import describe_storage

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
    runtime: RuntimeConfig | None = None
    checked: Config | None = None
    protect: ProtectConfig | None = None
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
        runtime = config.config.runtime if config.config is not None else None
        checked = config.config
        protect = config.config.protect if config.config is not None else None
    policies = check_policies(paths)
    problems += policies.problems
    warnings += policies.warnings
    pull_lines: list[str] = []
    if checked is not None:  # pull tracking: the registry's notifications (retentiond.pulls)
        pull_lines, pull_warnings = pulls_report(checked, policies.policies)
        warnings += pull_warnings

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
    lines, runtime_warnings = runtime_report(runtime) if runtime is not None else ([], [])
    if checked is not None:
        lines.append(storage_report(checked.registry))
        if runtime is not None:
            runtime_warnings += bucket_warnings(checked.registry)
    if protect is not None and protect.enabled:
        protect_lines, protect_warnings = protection_report(protect)
        lines += protect_lines
        runtime_warnings += protect_warnings
    for warning in runtime_warnings:
        print(f"warning: {warning}", file=err)
    print(f"ok: {summary}", file=out)
    for line in lines + pull_lines:
        print(line, file=out)
    return EXIT_OK


def storage_report(registry: RegistryConfig) -> str:
    """The line naming the storage backend and where it is, as the config says (never a
    secret), e.g. ``storage: s3 bucket registry at http://rgw:7480, rootdirectory /prod (from
    /etc/registry/config.yml)`` or ``storage: filesystem /var/lib/registry``."""
    return describe_storage(registry.location, registry.config_file)


def bucket_warnings(registry: RegistryConfig) -> list[str]:
    """When the storage is a bucket: a warning when it cannot be listed with the credentials
    retentiond will use (one listing of at most one key; nothing written). A bucket the
    registry has not written to yet is not one. A filesystem root is not looked at here:
    ``check`` may run where it is not mounted."""
    if registry.s3 is None:
        return []
    from retentiond.storage.s3 import open_s3_storage  # boto3 only when S3 is used

    try:
        open_s3_storage(registry.s3).close()
    except StorageError as exc:
        return [str(exc)]
    return []


def runtime_report(config: RuntimeConfig) -> tuple[list[str], list[str]]:
    """The lines for stdout and the warnings about the runtime ``config`` names, found
    read-only (see the module's docstring)."""
    # imported here: `check PATH...` in a pre-commit hook does without the docker SDK
    from retentiond.runtime.command import CommandRuntime
    from retentiond.runtime.docker import DockerRuntime
    from retentiond.runtime.factory import make_runtime
    from retentiond.runtime.replicas import ReplicatedDockerRuntime

    # check's output is its report: the runtime's log lines (what it runs, what it could
    # not read) would only repeat it, on stdout where structlog prints unconfigured
    with quiet_logs():
        runtime = make_runtime(config)
        if isinstance(runtime, CommandRuntime):
            return [f"registry config: {runtime.config_location()}"], []
        if not isinstance(runtime, DockerRuntime | ReplicatedDockerRuntime):
            return [], []
        try:
            facts = runtime.registry_facts()
        except RuntimeControlError as exc:
            return [], [f"the registry runtime could not be checked: {exc}"]
        return registry_report(facts)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """No log line while the block runs: nothing printed, no stream touched (stdout may be
    closed: ``check >&-``)."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def protection_report(config: ProtectConfig) -> tuple[list[str], list[str]]:
    """Each ``protect:`` source read now: a line each for stdout, a warning for each that
    cannot be read (a maintenance would then delete nothing: ``apply`` refuses, ``serve``
    skips the window; a file a deploy job has not written yet is the usual reason)."""
    from retentiond.protection import read_protection  # the docker SDK: only when needed

    with quiet_logs():
        protection = read_protection(config)
    lines = [
        f"protect: {s.kind} {s.source}: {s.references} references"
        for s in protection.sources
        if s.error is None
    ]
    warnings = [
        f"protect: {problem}; until it can be read, no maintenance deletes anything"
        for problem in protection.problems
    ]
    return lines, warnings


def registry_report(facts: RegistryFacts) -> tuple[list[str], list[str]]:
    """What ``check`` prints about the registry container: the lines for stdout, the
    warnings."""
    lines: list[str] = []
    warnings: list[str] = []
    version = facts.version
    where = f"container{'s' if facts.instances else ''} {facts.container}"
    if version is None:
        lines.append(f"registry: version unknown in {where}")
        warnings.append(f"cannot tell the registry's version: {facts.version_error}")
    else:
        lines.append(f"registry: {version} in {where}")
        if not version.tested:
            tested = " and ".join(TESTED_VERSIONS)
            warnings.append(
                f"registry {version} in {where} is not a version retentiond "
                f"is tested with (tested: {tested}, and the 2.8.x and 3.1.x lines); its plans and "
                "GC runs may not match what this registry does"
            )
    lines.extend(f"instance {line}" for line in facts.instances)
    if facts.config is not None:
        lines.append(f"registry config: {facts.config}")
    else:
        lines.append("registry config: not found")
        warnings.append(str(facts.config_error))
    warnings.extend(facts.problems)
    return lines, warnings


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {plural}"
