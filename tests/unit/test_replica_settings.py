"""Replicas without Docker: ``runtime.containers`` and ``runtime.instance_urls`` as the config
file gives them (each mistake a clear problem), and what ``docker inspect`` data says about an
instance: which storage it serves, where it answers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from retentiond.config import RuntimeConfig, RuntimeKind, check_config
from retentiond.runtime.docker import DockerRuntime
from retentiond.runtime.docker_specs import instance_address, storage_identity
from retentiond.runtime.factory import make_runtime
from retentiond.runtime.replicas import ReplicatedDockerRuntime


def check(tmp_path: Path, text: str) -> tuple[RuntimeConfig | None, list[str], list[str]]:
    path = tmp_path / "retentiond.yaml"
    path.write_text(text)
    result = check_config(path)
    strip = f"{path}:"
    return (
        result.config.runtime if result.config else None,
        [str(p).removeprefix(strip) for p in result.problems],
        [str(w).removeprefix(strip) for w in result.warnings],
    )


# ------------------------------------------------------------------------------------------
# the config file


def test_containers_and_instance_urls_are_read(tmp_path: Path) -> None:
    runtime, problems, warnings = check(
        tmp_path,
        "runtime:\n  containers: [reg-a, reg-b]\n"
        "  instance_urls: [http://10.0.0.1:5000/, https://reg-b.internal]\n",
    )
    assert problems == [] and warnings == []
    assert runtime is not None
    assert runtime.containers == ("reg-a", "reg-b")
    assert runtime.instance_urls == ("http://10.0.0.1:5000", "https://reg-b.internal")
    assert runtime.container_names == ("reg-a", "reg-b")
    assert isinstance(make_runtime(runtime), ReplicatedDockerRuntime)


def test_one_container_stays_as_it_was(tmp_path: Path) -> None:
    runtime, problems, _ = check(tmp_path, "runtime:\n  container: registry\n")
    assert problems == [] and runtime is not None
    assert runtime.containers == () and runtime.container_names == ("registry",)
    single = make_runtime(runtime)
    assert isinstance(single, DockerRuntime) and single.instances() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "runtime:\n  container: reg-a\n  containers: [reg-a, reg-b]\n",
            "3:3: runtime.container and runtime.containers are both written; keep container "
            "for one registry, or list every instance in containers",
        ),
        (
            "runtime:\n  containers: []\n",
            "2:15: runtime.containers is an empty list; give at least one entry",
        ),
        (
            "runtime:\n  containers: [reg-a, reg-b, reg-a]\n",
            "2:30: runtime.containers: 'reg-a' is listed twice; list each once",
        ),
        (
            "runtime:\n  containers: reg-a\n",
            "2:15: runtime.containers must be a list, e.g. [registry-a, registry-b]",
        ),
        (
            "runtime:\n  containers: [reg-a, 5]\n",
            "2:23: runtime.containers: each entry must be a string, got 5; quote it",
        ),
        (
            "runtime:\n  containers: [reg-a, reg-b]\n  instance_urls: [http://a:5000]\n",
            "3:3: runtime.instance_urls lists 1 URLs for 2 containers; give one URL per "
            "container, in the same order",
        ),
        (
            "runtime:\n  containers: [reg-a]\n  instance_urls: ['ftp://a']\n",
            "3:19: runtime.instance_urls must be a URL with scheme http or https, like "
            "http://host:port; got 'ftp://a'",
        ),
        (
            "runtime:\n  containers: [a, b]\n  instance_urls: [http://a:1, http://a:1]\n",
            "3:31: runtime.instance_urls: 'http://a:1' is listed twice; list each once",
        ),
        (
            "runtime:\n  instance_urls: [http://a:5000]\n",
            "2:3: runtime.instance_urls needs runtime.containers",
        ),
    ],
)
def test_each_mistake_is_a_problem(tmp_path: Path, text: str, expected: str) -> None:
    runtime, problems, _ = check(tmp_path, text)
    assert runtime is None
    assert problems == [expected]


def test_containers_with_another_kind_is_a_warning(tmp_path: Path) -> None:
    _, problems, warnings = check(
        tmp_path,
        "runtime:\n  kind: command\n  containers: [a, b]\n"
        "  commands: {readonly: r, start: s, gc: g}\n",
    )
    assert problems == []
    assert warnings == [
        "3:3: runtime.containers and runtime.instance_urls are ignored unless kind: docker "
        "(with kind: command, the commands switch every instance)"
    ]
    runtime = RuntimeConfig(kind=RuntimeKind.COMMAND, containers=("a", "b"))
    assert not isinstance(make_runtime(runtime), ReplicatedDockerRuntime)


# ------------------------------------------------------------------------------------------
# docker inspect: the storage an instance serves, and its address


def inspect_of(**changes: Any) -> dict[str, Any]:
    """``docker inspect`` of a registry with its storage bind-mounted and port 5000 published
    on the host's 127.0.0.1:5001."""
    info: dict[str, Any] = {
        "Id": "a" * 64,
        "Name": "/reg-a",
        "Config": {"Env": [], "Labels": {}},
        "HostConfig": {},
        "Mounts": [
            {"Type": "bind", "Source": "/srv/registry", "Destination": "/var/lib/registry"},
            {"Type": "volume", "Source": "/var/lib/docker/volumes/c/_data", "Destination": "/c"},
        ],
        "NetworkSettings": {
            "Ports": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5001"}]},
            "Networks": {"infra": {"IPAddress": "172.30.0.5"}},
        },
    }
    info.update(copy.deepcopy(changes))
    return info


FS_CONFIG = (
    "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete: {enabled: true}\n"
)


def test_filesystem_storage_is_the_host_side_of_the_mount() -> None:
    assert storage_identity(inspect_of(), FS_CONFIG) == "filesystem /srv/registry"
    nested = inspect_of(
        Config={"Env": ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/var/lib/registry/prod"]}
    )
    assert storage_identity(nested, None) == "filesystem /srv/registry/prod"
    volume = inspect_of(
        Mounts=[
            {"Type": "volume", "Source": "/var/lib/docker/volumes/r/_data", "Destination": "/data"}
        ],
        Config={"Env": ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/data"]},
    )
    assert storage_identity(volume, None) == "filesystem /var/lib/docker/volumes/r/_data"


def test_storage_that_cannot_be_told_is_none() -> None:
    assert storage_identity(inspect_of(), None) is None  # config file unreadable
    assert storage_identity(inspect_of(Mounts=[]), FS_CONFIG) is None  # in the container's layer
    azure = "storage:\n  azure: {accountname: x, container: y}\n"
    assert storage_identity(inspect_of(), azure) is None


def test_s3_storage_is_its_endpoint_bucket_and_root() -> None:
    config = (
        "storage:\n  s3:\n    region: us-east-1\n    regionendpoint: http://rgw:7480/\n"
        "    bucket: images\n    rootdirectory: /prod\n  cache: {blobdescriptor: redis}\n"
    )
    assert storage_identity(inspect_of(), config) == "s3 http://rgw:7480/images/prod"
    env = [
        "REGISTRY_STORAGE=s3",
        "REGISTRY_STORAGE_S3_BUCKET=other",
        "REGISTRY_STORAGE_S3_REGION=eu-west-1",
    ]
    assert storage_identity(inspect_of(Config={"Env": env}), None) == "s3 eu-west-1/other/"
    assert storage_identity(inspect_of(Config={"Env": ["REGISTRY_STORAGE=s3"]}), None) is None


def test_instance_address_prefers_the_published_port() -> None:
    assert instance_address(inspect_of(), None) == "http://127.0.0.1:5001"
    tls = inspect_of(Config={"Env": ["REGISTRY_HTTP_TLS_CERTIFICATE=/certs/c.pem"]})
    assert instance_address(tls, None) == "https://127.0.0.1:5001"


def test_instance_address_without_a_published_port_is_its_network_address() -> None:
    unpublished = inspect_of(
        NetworkSettings={"Ports": {}, "Networks": {"infra": {"IPAddress": "172.30.0.5"}}}
    )
    assert instance_address(unpublished, None) == "http://172.30.0.5:5000"
    assert instance_address(unpublished, "http:\n  addr: :5443\n  tls:\n    certificate: c\n") == (
        "https://172.30.0.5:5443"
    )
    env = copy.deepcopy(unpublished)
    env["Config"]["Env"] = ["REGISTRY_HTTP_ADDR=0.0.0.0:8080"]
    assert instance_address(env, None) == "http://172.30.0.5:8080"
    host = inspect_of(NetworkSettings={"Ports": {}, "Networks": {"host": {"IPAddress": ""}}})
    assert instance_address(host, None) is None
