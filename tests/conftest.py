"""Shared fixtures. Integration tests use a real registry 2.8.2 in Docker; when Docker or the
registry image is missing they FAIL (never skip) and say how to set the machine up."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.gc import REGISTRY_BIN
from tests.harness.proc import docker
from tests.harness.redis import RunningRedis, start_redis, stop_redis
from tests.harness.registry import (
    REGISTRY_IMAGE,
    RunningRegistry,
    image_exists,
    start_registry,
    stop_registry,
)
from tests.harness.tree import copy_tree

__all__ = ["copy_tree"]

SETUP_HINT = "run `bash scripts/start-docker.sh` (as root) to install and start everything"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a registry fixture is a ``registry`` test."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "registry" in names or "docker_ready" in names or "redis" in names:
            item.add_marker(pytest.mark.registry)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker answers, the registry image exists, skopeo and docker-registry are installed."""
    problems = []
    if shutil.which("docker") is None:
        problems.append("the docker CLI is not installed")
    else:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
        if info.returncode != 0:
            problems.append(f"`docker info` fails: {(info.stderr or info.stdout).strip()}")
        elif not image_exists(REGISTRY_IMAGE):
            problems.append(f"the image {REGISTRY_IMAGE} does not exist")
    if shutil.which("skopeo") is None:
        problems.append("skopeo is not installed")
    if not Path(REGISTRY_BIN).is_file():
        problems.append(f"{REGISTRY_BIN} is missing (Debian package docker-registry)")
    if problems:
        pytest.fail(
            "integration tests need Docker: " + "; ".join(problems) + f"; {SETUP_HINT}",
            pytrace=False,
        )


@pytest.fixture
def registry(docker_ready: None, tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh registry container on an empty root (``tmp_path/registry``), removed after the
    test. Its last log lines are printed at teardown (shown when the test fails)."""
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ({reg.url}, root {reg.root}) ---")
        print((logs.stdout + logs.stderr).strip())
        stop_registry(reg)


@pytest.fixture
def redis(docker_ready: None, tmp_path: Path) -> Iterator[RunningRedis]:
    """A fresh redis-server (no persistence) in ``tmp_path/redis``, reachable from registry
    containers at ``redis.addr`` (the Docker bridge's gateway), stopped after the test. Its
    last log lines are printed at teardown (shown when the test fails)."""
    if shutil.which("redis-server") is None:
        pytest.fail(f"redis-server is not installed; {SETUP_HINT}", pytrace=False)
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        stop_redis(server)
        print(f"--- last log lines of redis-server on {server.addr} ---")
        print("\n".join(server.log.read_text(errors="replace").splitlines()[-20:]))


@pytest.fixture
def registry_root_copy(tmp_path: Path) -> Callable[[Path], Path]:
    """``copy(root) -> Path``: a copy of a registry root under ``tmp_path`` with mtimes kept,
    to edit and garbage-collect while the registry keeps running on the original."""
    counter = itertools.count(1)

    def copy(root: Path) -> Path:
        return copy_tree(root, tmp_path / f"root-copy-{next(counter)}")

    return copy
