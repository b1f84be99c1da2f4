"""The containers retentiond asks Docker to create, computed from ``docker inspect`` data without
Docker: the read-only twin stands in for the registry (same data, ports, networks and names; the
read-only switch on; never restarted by the daemon), the one-off GC container runs the same
image on the same storage, and a later run recognises both as its own."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import docker
import pytest

from retentiond.runtime.docker_specs import (
    DEFAULT_ROOT,
    GC_SUFFIX,
    READONLY_ENV,
    ROLE_LABEL,
    RUN_LABEL,
    TWIN_LABEL,
    TWIN_SUFFIX,
    ContainerSpec,
    binds_with_anonymous_volumes,
    container_env,
    container_name,
    covering_mount,
    gc_arguments,
    gc_container_spec,
    is_leftover,
    looks_like_registry,
    made_by_retentiond,
    probe_address,
    registry_binary,
    root_needs_config_file,
    storage_root,
    twin_spec,
)

REGISTRY_ID = "3f2a9c0d1b7e" + "0" * 52
READONLY = f'{READONLY_ENV}={{"enabled": true}}'


def registry_inspect(**changes: Any) -> dict[str, Any]:
    """``docker inspect`` of a compose-started registry: a bind mount for its storage, an
    anonymous volume from the image, port 5000 published, on a user-defined network with an
    alias and on a second network with a fixed address."""
    info: dict[str, Any] = {
        "Id": REGISTRY_ID,
        "Name": "/registry",
        "Image": "sha256:" + "ab" * 32,
        "Config": {
            "Entrypoint": ["/entrypoint.sh"],
            "Cmd": ["/etc/docker/registry/config.yml"],
            "Env": ["REGISTRY_HTTP_SECRET=s3cret", "PATH=/usr/bin:/bin"],
            "User": "1000:1000",
            "WorkingDir": "",
            "ExposedPorts": {"5000/tcp": {}},
            "Labels": {
                "com.docker.compose.project": "infra",
                "com.docker.compose.service": "registry",
                "org.example.team": "platform",
            },
        },
        "HostConfig": {
            "Binds": ["/srv/registry:/var/lib/registry:rw"],
            "PortBindings": {"5000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5000"}]},
            "NetworkMode": "infra_default",
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "AutoRemove": False,
            "Links": None,
            "Memory": 536870912,
        },
        "Mounts": [
            {
                "Type": "bind",
                "Source": "/srv/registry",
                "Destination": "/var/lib/registry",
                "RW": True,
            },
            {"Type": "volume", "Name": "4c1d" + "e" * 60, "Destination": "/cache", "RW": True},
        ],
        "NetworkSettings": {
            "Ports": {"5000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5000"}]},
            "Networks": {
                "infra_default": {
                    "Aliases": ["registry", "docker-registry", REGISTRY_ID[:12]],
                    "IPAMConfig": None,
                },
                "mirrors": {
                    "Aliases": ["reg-mirror"],
                    "IPAMConfig": {"IPv4Address": "172.30.0.10"},
                },
            },
        },
        "State": {"Running": True, "Status": "running"},
    }
    for key, value in changes.items():
        info[key] = value
    return info


def test_the_twin_runs_the_same_registry_with_the_readonly_switch_on() -> None:
    info = registry_inspect()
    info["Config"]["Env"].append(f"{READONLY_ENV}=" + '{"enabled": false}')
    twin = twin_spec(info, "run-1")
    assert twin.name == "registry" + TWIN_SUFFIX
    assert twin.image == info["Image"]
    assert twin.entrypoint == ["/entrypoint.sh"]
    assert twin.command == ["/etc/docker/registry/config.yml"]
    assert twin.environment == ["REGISTRY_HTTP_SECRET=s3cret", "PATH=/usr/bin:/bin", READONLY]
    assert twin.user == "1000:1000"
    assert twin.working_dir is None
    assert twin.ports == ["5000/tcp"]


def test_the_twin_keeps_the_mounts_and_published_ports_but_is_never_restarted() -> None:
    info = registry_inspect()
    host_config = twin_spec(info, "run-1").host_config
    assert host_config["Binds"] == [
        "/srv/registry:/var/lib/registry:rw",
        "4c1d" + "e" * 60 + ":/cache:rw",  # the image's anonymous volume, not a new empty one
    ]
    assert host_config["PortBindings"] == info["HostConfig"]["PortBindings"]
    assert host_config["Memory"] == info["HostConfig"]["Memory"]
    assert host_config["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host_config["AutoRemove"] is False
    assert "Links" not in host_config


def test_the_twin_answers_to_the_registry_names_on_every_network() -> None:
    twin = twin_spec(registry_inspect(), "run-1")
    assert twin.networking_config == {
        "EndpointsConfig": {"infra_default": {"Aliases": ["registry", "docker-registry"]}}
    }
    assert [(j.network, j.aliases, j.ipv4_address, j.ipv6_address) for j in twin.joins] == [
        ("mirrors", ["reg-mirror", "registry"], "172.30.0.10", None)
    ]


def test_a_twin_of_a_registry_on_the_default_bridge_joins_no_network_itself() -> None:
    info = registry_inspect()
    info["HostConfig"]["NetworkMode"] = "default"
    info["NetworkSettings"]["Networks"] = {"bridge": {"Aliases": None}}
    twin = twin_spec(info, "run-1")
    assert twin.networking_config is None
    assert twin.joins == ()
    assert twin.host_config["NetworkMode"] == "default"


def test_the_twin_is_labelled_for_recovery_and_not_adopted_by_compose() -> None:
    twin = twin_spec(registry_inspect(), "run-1")
    assert twin.labels == {
        "org.example.team": "platform",
        TWIN_LABEL: REGISTRY_ID,
        RUN_LABEL: "run-1",
        ROLE_LABEL: "readonly",
    }


def test_building_a_twin_leaves_the_inspect_data_unchanged() -> None:
    info = registry_inspect()
    before = copy.deepcopy(info)
    twin_spec(info, "run-1")
    gc_container_spec(info, "registry", gc_arguments("/etc/config.yml", dry_run=False), "run-1")
    assert info == before


def test_the_gc_container_runs_the_same_image_on_the_same_storage() -> None:
    info = registry_inspect()
    info["Config"]["Env"].append(READONLY)
    args = gc_arguments("/etc/docker/registry/config.yml", dry_run=False)
    spec = gc_container_spec(info, "registry", args, "run-2")
    assert spec.name == "registry" + GC_SUFFIX
    assert spec.image == info["Image"]
    assert spec.entrypoint == ["registry"]
    assert spec.command == ["garbage-collect", "/etc/docker/registry/config.yml"]
    assert spec.environment == ["REGISTRY_HTTP_SECRET=s3cret", "PATH=/usr/bin:/bin"]
    assert spec.user == "1000:1000"
    assert spec.labels == {TWIN_LABEL: REGISTRY_ID, RUN_LABEL: "run-2", ROLE_LABEL: "gc"}
    assert spec.host_config == {
        "Binds": ["/srv/registry:/var/lib/registry:rw", "4c1d" + "e" * 60 + ":/cache:rw"],
        "NetworkMode": "infra_default",
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    }
    assert spec.ports is None and spec.networking_config is None and spec.joins == ()


def test_a_dry_run_gc_says_so_and_never_deletes_untagged_manifests() -> None:
    assert gc_arguments("/c.yml", dry_run=True) == ["garbage-collect", "--dry-run", "/c.yml"]
    assert "--delete-untagged" not in gc_arguments("/c.yml", dry_run=False)


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "binary"),
    [
        (["/bin/registry"], ["serve", "/etc/docker/registry/config.yml"], "/bin/registry"),
        (["/entrypoint.sh"], ["/etc/docker/registry/config.yml"], "registry"),
        (None, ["/usr/local/bin/registry", "serve"], "/usr/local/bin/registry"),
        (None, None, "registry"),
    ],
)
def test_the_gc_runs_the_registry_binary_of_the_image(
    entrypoint: list[str] | None, cmd: list[str] | None, binary: str
) -> None:
    info = registry_inspect()
    info["Config"]["Entrypoint"], info["Config"]["Cmd"] = entrypoint, cmd
    assert registry_binary(info) == binary


def test_specs_are_arguments_docker_accepts() -> None:
    info = registry_inspect()
    specs: list[ContainerSpec] = [
        twin_spec(info, "r"),
        gc_container_spec(info, "registry", ["garbage-collect", "/c.yml"], "r"),
    ]
    signature = inspect.signature(docker.APIClient.create_container)
    for spec in specs:
        signature.bind(object(), **spec.create_arguments())


def test_a_later_run_recognises_the_containers_made_for_this_registry() -> None:
    info = registry_inspect()
    assert is_leftover(info, "anything", {TWIN_LABEL: REGISTRY_ID})
    # the registry was recreated since: a new id, the same name
    assert is_leftover(info, "registry" + TWIN_SUFFIX, {TWIN_LABEL: "an-older-id"})
    assert is_leftover(info, "registry" + GC_SUFFIX, {TWIN_LABEL: "an-older-id"})
    assert not is_leftover(info, "other" + TWIN_SUFFIX, {TWIN_LABEL: "another-registry"})


def test_retentiond_containers_are_not_taken_for_the_registry() -> None:
    info = registry_inspect()
    assert not made_by_retentiond(info)
    info["Config"]["Labels"][TWIN_LABEL] = "some-id"
    assert made_by_retentiond(info)
    listed = {"Image": "registry:2", "Command": "/entrypoint.sh", "Ports": [], "Labels": {}}
    assert looks_like_registry(listed)
    assert looks_like_registry({"Image": "nginx", "Ports": [{"PrivatePort": 5000}]})
    assert not looks_like_registry({"Image": "nginx", "Ports": [{"PrivatePort": 80}]})
    assert not looks_like_registry({**listed, "Labels": {TWIN_LABEL: "some-id"}})


def test_names_and_environment() -> None:
    assert container_name(registry_inspect()) == "registry"
    assert container_name(registry_inspect(Name="")) == REGISTRY_ID[:12]
    info = registry_inspect()
    info["Config"]["Env"] = ["A=1", "B=x=y", "NOVALUE"]
    assert container_env(info) == {"A": "1", "B": "x=y"}


def test_explicit_mounts_are_not_bound_twice() -> None:
    info = registry_inspect()
    info["HostConfig"]["Mounts"] = [{"Type": "volume", "Source": "cache", "Target": "/cache"}]
    assert binds_with_anonymous_volumes(info) == ["/srv/registry:/var/lib/registry:rw"]
    info["HostConfig"]["Mounts"] = None
    info["Mounts"][1]["RW"] = False
    assert binds_with_anonymous_volumes(info)[1].endswith(":/cache:ro")


@pytest.mark.parametrize(
    ("env", "config", "root"),
    [
        ({"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/data"}, None, "/data"),
        ({"REGISTRY_STORAGE": "s3"}, None, None),
        ({}, "storage:\n  filesystem:\n    rootdirectory: /srv/reg\n", "/srv/reg"),
        ({}, "storage:\n  s3:\n    bucket: images\n", None),
        ({}, "storage:\n  filesystem: {}\n  cache: {blobdescriptor: inmemory}\n", DEFAULT_ROOT),
        ({}, None, DEFAULT_ROOT),  # the config file could not be read
        ({}, "storage: [unclosed\n", DEFAULT_ROOT),
        ({"REGISTRY_STORAGE": "filesystem"}, "version: 0.1\n", DEFAULT_ROOT),
    ],
)
def test_where_the_registry_keeps_its_storage(
    env: dict[str, str], config: str | None, root: str | None
) -> None:
    assert storage_root(env, config) == root


def test_the_config_file_is_read_only_when_the_environment_does_not_say() -> None:
    assert not root_needs_config_file({"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/data"})
    assert not root_needs_config_file({"REGISTRY_STORAGE": "gcs"})
    assert root_needs_config_file({"REGISTRY_STORAGE": "filesystem"})
    assert root_needs_config_file({})


def test_a_storage_root_must_be_on_a_mount_to_outlive_the_container() -> None:
    info = registry_inspect()
    assert covering_mount(info, "/var/lib/registry")
    assert covering_mount(info, "/var/lib/registry/docker/")
    assert not covering_mount(info, "/var/lib/registry2")
    assert not covering_mount(info, "/srv")


@pytest.mark.parametrize(
    ("ports", "address"),
    [
        ({"5000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5001"}]}, "127.0.0.1:5001"),
        ({"5000/tcp": [{"HostIp": "::", "HostPort": "5000"}]}, "[::1]:5000"),
        ({"5000/tcp": [{"HostIp": "fd00::1", "HostPort": "5000"}]}, "[fd00::1]:5000"),
        (
            {
                "443/tcp": [{"HostIp": "10.0.0.2", "HostPort": "8443"}],
                "5000/tcp": [{"HostIp": "", "HostPort": "5000"}],
            },
            "127.0.0.1:5000",
        ),
        ({"443/tcp": [{"HostIp": "10.0.0.2", "HostPort": "8443"}]}, "10.0.0.2:8443"),
        ({"5000/tcp": None}, None),
        ({}, None),
    ],
)
def test_the_address_that_tells_whether_the_registry_answers(
    ports: dict[str, Any], address: str | None
) -> None:
    info = registry_inspect()
    info["NetworkSettings"]["Ports"] = ports
    assert probe_address(info) == address
