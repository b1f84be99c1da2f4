"""The exceptions retentiond raises on purpose.

    RetentiondError              expected failure of a job: exit 1
    ├── StorageError             the storage tree cannot be read or changed
    ├── RegistryError            the registry's HTTP API did not answer as it should
    ├── RuntimeControlError      docker / commands could not control the registry process
    ├── ProtectionUnavailable    a source of in-use protection (protect:) could not be read
    └── UsageError               bad usage, invalid config or policy: exit 2
        └── ConfigError          config or policy files are invalid (carries every problem)

Anything else reaching the CLI boundary is an internal error: exit 3.
Adapters translate foreign exceptions (OSError, httpx, docker) into these with
``raise ... from exc`` and put the fix in the message.
"""

from __future__ import annotations

from dataclasses import dataclass


class RetentiondError(Exception):
    """A job failed for a reason we expected and can explain."""

    exit_code = 1


class StorageError(RetentiondError):
    """The storage tree could not be read or changed."""


class RegistryError(RetentiondError):
    """The registry's HTTP API did not answer as expected."""


class RuntimeControlError(RetentiondError):
    """The registry process could not be controlled (docker, commands)."""


class ProtectionUnavailable(RetentiondError):
    """A source of in-use protection (``protect:``) could not be read: nothing is deleted."""


class UsageError(RetentiondError):
    """Bad usage of the command line."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """One problem in a config or policy file, located as FILE:LINE:COL."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigError(UsageError):
    """Config or policy files are invalid; carries every problem found."""

    def __init__(self, problems: list[SourceProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))
