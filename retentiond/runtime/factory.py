"""Build the runtime that ``runtime.kind`` names; the only place that chooses one."""

from __future__ import annotations

from retentiond.config import RuntimeConfig, RuntimeKind
from retentiond.runtime.base import Runtime
from retentiond.runtime.command import CommandRuntime, NoRuntime
from retentiond.runtime.docker import DockerRuntime
from retentiond.runtime.replicas import ReplicatedDockerRuntime


def make_runtime(config: RuntimeConfig, run_id: str = "") -> Runtime:
    """The runtime for ``config.kind``. Nothing is contacted yet: the Docker client is created
    on first use, so a missing daemon shows up in ``check()`` with its fix."""
    if config.kind is RuntimeKind.DOCKER and config.containers:
        return ReplicatedDockerRuntime(config, run_id=run_id)
    if config.kind is RuntimeKind.DOCKER:
        return DockerRuntime(config, run_id=run_id)
    if config.kind is RuntimeKind.COMMAND:
        return CommandRuntime(config)
    return NoRuntime(config)
