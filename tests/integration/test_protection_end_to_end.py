"""In-use protection (``protect:``) end to end: a real registry (2.8.2 and 3.1.1), real
containers on the real Docker engine, ``retentiond apply --yes`` and ``serve`` as real
processes.

The Docker engine is shared (other tests, other registries): protection reads every container
on it, so each test's images carry a seed of their own and no other container can pin them.
"""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import pull_ok, push_docker_image, push_oci_index
from tests.harness.proc import docker
from tests.harness.registry import RunningRegistry
from tests.harness.tree import list_revisions, list_tags, set_pushed_at
from tests.integration.test_apply import make_setup
from tests.integration.test_serve import Served, served, wait_for

__all__ = ["served"]  # the fixture, used below

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]

DOCKER_SOCKET = "unix:///var/run/docker.sock"
KEEP_NEWEST = """\
    policies:
      - name: app
        repositories: ["app", "base"]
        keep: {last: 1}
"""


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@pytest.fixture
def containers() -> Iterator[Callable[[str], str]]:
    """``create(image) -> name``: ``docker create`` a container (never started: a stopped
    container pins its image as much as a running one), removed after the test with the
    images pulled for it."""
    made: list[tuple[str, str]] = []

    def create(image: str) -> str:
        name = f"retentiond-protect-{uuid.uuid4().hex[:10]}"
        docker("pull", "-q", image, timeout=300)
        docker("create", "--name", name, image, "/not-run")
        made.append((name, image))
        return name

    yield create
    for name, image in made:
        docker("rm", "-f", name, check=False)
        docker("rmi", image, check=False)


def three_images(registry: RunningRegistry, seed: str) -> dict[str, str]:
    """app:v1, v2 (old, deleted by KEEP_NEWEST) and v3 (the newest): tag -> digest."""
    digests = {}
    for n, tag in enumerate(("v1", "v2", "v3")):
        digests[tag] = push_docker_image(registry, "app", tag, seed=f"{seed}-{tag}")
        set_pushed_at(registry.root, "app", tag, ago(30 - 10 * n))
    return digests


def with_protect(config: Path, section: str) -> None:
    """Add a ``protect:`` section to the config file ``config``."""
    config.write_text(config.read_text() + textwrap.dedent(section))


def test_an_image_a_container_uses_survives_a_policy_that_would_delete_it(
    registry: RunningRegistry, tmp_path: Path, containers: Callable[[str], str]
) -> None:
    digests = three_images(registry, uuid.uuid4().hex)
    setup = make_setup(registry, tmp_path, KEEP_NEWEST)
    with_protect(setup.config, f"protect:\n  docker_hosts: [{DOCKER_SOCKET}]\n")
    name = containers(registry.ref("app", "v1"))

    plan = setup.plan()
    assert [t["tag"] for t in plan["tags"]] == ["v2"]
    [kept] = plan["protected"]
    assert kept["tag"] == "v1" and kept["digest"] == digests["v1"]
    assert kept["reason"] == f"protected: in use by container {name} on {DOCKER_SOCKET}"
    assert kept["policy"] == "app"
    assert plan["protection"]["available"] is True
    assert plan["summary"]["protected_tags"] == 1

    setup.run("apply", "--yes")
    assert list_tags(registry.root, "app") == ["v1", "v3"]
    assert digests["v2"] not in list_revisions(registry.root, "app")
    assert pull_ok(registry, "app", "v1") and pull_ok(registry, "app", "v3")
    assert not pull_ok(registry, "app", "v2")  # the neighbour is gone
    [run] = setup.history()
    assert run["status"] == "ok" and run["removed"]["tags"] == 1


def test_a_multi_arch_image_in_use_keeps_its_index_and_children(
    registry: RunningRegistry, tmp_path: Path, containers: Callable[[str], str]
) -> None:
    seed = uuid.uuid4().hex
    index, children = push_oci_index(registry, "base", "old", seed=f"{seed}-old")
    push_oci_index(registry, "base", "new", seed=f"{seed}-new")
    set_pushed_at(registry.root, "base", "old", ago(30))
    setup = make_setup(registry, tmp_path, KEEP_NEWEST)
    with_protect(setup.config, f"protect:\n  docker_hosts: [{DOCKER_SOCKET}]\n")
    containers(registry.ref("base", "old"))  # docker pulls its platform's child
    inspect = json.loads(docker("image", "inspect", registry.ref("base", "old")).stdout)
    assert f"{registry.host}/base@{index}" in inspect[0]["RepoDigests"]  # the index's digest

    setup.run("apply", "--yes")
    assert list_tags(registry.root, "base") == ["new", "old"]
    assert {index, *children} <= list_revisions(registry.root, "base")
    assert pull_ok(registry, "base", "old")  # every platform, every blob


def test_an_unreachable_docker_host_makes_apply_refuse_and_deletes_nothing(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    three_images(registry, uuid.uuid4().hex)
    setup = make_setup(registry, tmp_path, KEEP_NEWEST)
    with_protect(setup.config, "protect:\n  docker_hosts: [unix:///nonexistent.sock]\n")
    before = sorted(p.relative_to(registry.root) for p in registry.root.rglob("*"))

    plan = setup.plan()  # shows the problem, and what a run could delete once it is fixed
    assert plan["protection"]["available"] is False
    [source] = plan["protection"]["sources"]
    assert source["source"] == "unix:///nonexistent.sock"
    assert "the Docker daemon does not answer there" in source["error"]
    table = setup.run("plan").stdout
    assert "PROTECTION UNAVAILABLE docker unix:///nonexistent.sock" in table

    proc = setup.run("apply", "--yes", check=False)
    assert proc.returncode == 1
    assert "in-use protection could not be read, so nothing is deleted" in proc.stderr
    assert "unix:///nonexistent.sock" in proc.stderr
    assert sorted(p.relative_to(registry.root) for p in registry.root.rglob("*")) == before
    assert setup.history() == []  # refused before the registry was touched
    assert all(pull_ok(registry, "app", tag) for tag in ("v1", "v2", "v3"))


def test_a_protection_file_keeps_what_it_lists(registry: RunningRegistry, tmp_path: Path) -> None:
    digests = three_images(registry, uuid.uuid4().hex)
    setup = make_setup(registry, tmp_path, KEEP_NEWEST)
    with_protect(setup.config, "protect:\n  files: [deploy/images.txt]\n")

    proc = setup.run("apply", "--yes", check=False)  # the deploy job has not written it yet
    assert proc.returncode == 1 and "images.txt does not exist" in proc.stderr
    assert list_tags(registry.root, "app") == ["v1", "v2", "v3"]

    listed = tmp_path / "deploy" / "images.txt"
    listed.parent.mkdir()
    listed.write_text(
        "# written by the deploy job\n"
        f"{registry.host}/app:v1   # api, by tag\n"
        "\n"
        f"{registry.host}/other@{digests['v2']}\n"  # the same digest in another repository
    )
    plan = setup.plan()
    assert [(p["tag"], p["reason"]) for p in plan["protected"]] == [
        ("v1", f"protected: listed in {listed}")
    ]
    setup.run("apply", "--yes")
    assert list_tags(registry.root, "app") == ["v1", "v3"]
    assert pull_ok(registry, "app", "v1") and not pull_ok(registry, "app", "v2")


def metric(s: Served, name: str, **labels: str) -> float | None:
    _, body = s.http("/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else ""))
    for line in body.decode().splitlines():
        head, _, value = line.rpartition(" ")
        if pattern.fullmatch(head):
            return float(value)
    return None


def test_serve_skips_the_window_when_protection_is_unavailable(
    registry: RunningRegistry, served: Callable[..., Served]
) -> None:
    seed = uuid.uuid4().hex
    for n, tag in enumerate(("old", "latest")):
        push_docker_image(registry, "app", tag, seed=f"{seed}-{tag}")
        set_pushed_at(registry.root, "app", tag, ago(3 - n))
    s = served()  # a window open now: keep "latest" only
    with_protect(s.config, "protect:\n  docker_hosts: [unix:///nonexistent.sock]\n")
    s.start()
    wait_for(
        "a window skipped for protection_unavailable",
        lambda: (
            (metric(s, "retentiond_windows_skipped_total", reason="protection_unavailable") or 0)
            >= 1
        ),
        60,
    )
    assert metric(s, "retentiond_protected_tags") == 0
    status: dict[str, Any] = wait_for(
        "a plan", lambda: json.loads(s.http("/status")[1]).get("last_plan")
    )
    assert status["protection_problems"][0].startswith("docker unix:///nonexistent.sock: ")
    assert s.stop() == 0
    assert s.history() == []
    assert list_tags(registry.root, "app") == ["latest", "old"]
    assert "maintenance window skipped" in s.logs()
