"""Shared fixtures. Integration tests use a real registry in Docker: 2.8.2 by default, and both
2.8.2 and 3.1.1 for tests marked ``both_registries`` (parametrized over ``registry_version``,
their ids gaining ``[2.8.2]`` / ``[3.1.1]``). When Docker, a registry image or a registry binary
is missing they FAIL (never skip) and say how to set the machine up."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.gc import registry_bin
from tests.harness.proc import docker
from tests.harness.redis import RunningRedis, start_redis, stop_redis
from tests.harness.registry import (
    DEFAULT_VERSION,
    VERSIONS,
    RunningRegistry,
    image_exists,
    registry_image,
    start_registry,
    stop_registry,
)
from tests.harness.s3 import (
    RunningS3,
    S3Bucket,
    create_bucket,
    delete_bucket,
    rgw_missing,
    start_s3,
    stop_s3,
)
from tests.harness.tree import copy_tree

__all__ = ["copy_tree"]

SETUP_HINT = "run `bash scripts/start-docker.sh` (as root) to install and start everything"
BOTH = "both_registries"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``both_registries`` that uses ``registry_version`` (directly or through
    ``registry``, ``docker_ready``...) runs once per version."""
    if "registry_version" in metafunc.fixturenames and metafunc.definition.get_closest_marker(BOTH):
        metafunc.parametrize("registry_version", VERSIONS, indirect=True, ids=VERSIONS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a registry fixture is a ``registry`` test."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "registry" in names or "docker_ready" in names or "redis" in names:
            item.add_marker(pytest.mark.registry)


@pytest.fixture
def registry_version(request: pytest.FixtureRequest) -> str:
    """The registry version the test runs against: "2.8.2", or each of "2.8.2" and "3.1.1"
    for a test marked ``both_registries``."""
    version: str = getattr(request, "param", DEFAULT_VERSION)
    return version


@functools.cache
def _docker_problems() -> tuple[str, ...]:
    """What is missing for any integration test (checked once per session)."""
    problems = []
    if shutil.which("docker") is None:
        problems.append("the docker CLI is not installed")
    else:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
        if info.returncode != 0:
            problems.append(f"`docker info` fails: {(info.stderr or info.stdout).strip()}")
    if shutil.which("skopeo") is None:
        problems.append("skopeo is not installed")
    return tuple(problems)


@functools.cache
def _version_problems(version: str) -> tuple[str, ...]:
    """What is missing to run a registry of ``version`` (checked once per session)."""
    problems = []
    image = registry_image(version)
    if shutil.which("docker") is not None and not image_exists(image):
        problems.append(f"the image {image} does not exist")
    binary = registry_bin(version)
    if not Path(binary).is_file():
        what = (
            "Debian package docker-registry"
            if version == "2.8.2"
            else "built by scripts/build-registry-image.sh 3.1.1; "
            "$RETENTIOND_TEST_REGISTRY3_BIN overrides it"
        )
        problems.append(f"the registry {version} binary {binary} is missing ({what})")
    return tuple(problems)


@pytest.fixture
def docker_ready(registry_version: str) -> None:
    """Docker answers, skopeo is installed, and the registry image and host binary of
    ``registry_version`` exist."""
    problems = _docker_problems() + _version_problems(registry_version)
    if problems:
        pytest.fail(
            "integration tests need Docker: " + "; ".join(problems) + f"; {SETUP_HINT}",
            pytrace=False,
        )


@pytest.fixture
def registry(
    docker_ready: None, registry_version: str, tmp_path: Path
) -> Iterator[RunningRegistry]:
    """A fresh registry container of ``registry_version`` on an empty root
    (``tmp_path/registry``), removed after the test. Its last log lines are printed at teardown
    (shown when the test fails)."""
    reg = start_registry(tmp_path / "registry", version=registry_version)
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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningS3]:
    """One real S3 server (Ceph RADOS Gateway, scripts/s3/start-rgw.sh) for the whole session,
    on 127.0.0.1 and the Docker bridge's gateway, stopped at the end (its logs stay in the
    session's temporary directory; if pytest is killed, the script's watcher stops it).
    Started on first use only."""
    problems = list(_docker_problems())
    if rgw_missing() and os.geteuid() != 0:
        problems.append(f"the Ceph packages are missing ({', '.join(rgw_missing())})")
    if problems:
        pytest.fail("S3 tests need: " + "; ".join(problems) + f"; {SETUP_HINT}", pytrace=False)
    server = start_s3(tmp_path_factory.mktemp("s3"), owner_pid=os.getpid())
    try:
        yield server
    finally:
        stop_s3(server)


@pytest.fixture
def s3_bucket(s3_server: RunningS3) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on the session's S3 server (endpoint, keys, name, region, boto3
    client), emptied and deleted after the test."""
    bucket = create_bucket(s3_server)
    try:
        yield bucket
    finally:
        delete_bucket(bucket)
