"""What retentiond asks Docker for, computed from the registry container's inspect data.

:class:`~retentiond.runtime.docker.DockerRuntime` inspects the registry container, hands the
inspect data (``docker inspect``'s JSON, as a dict) to these functions and sends what they return
to the Docker daemon. They read nothing and call nothing, so the containers retentiond creates
are unit-tested without Docker:

- the read-only *twin* (:func:`twin_spec`): the original's image, entrypoint, command,
  environment (plus ``REGISTRY_STORAGE_MAINTENANCE_READONLY``), user, labels (but compose's),
  mounts, ports, networks and aliases; never restarted by the daemon;
- the one-off GC container of ``gc_mode: stop`` (:func:`gc_container_spec`): the same image,
  mounts, environment (without the read-only switch) and network mode, running
  ``registry garbage-collect``;
- the labels that let a later run find and remove both after a crash, where the registry keeps
  its storage, and the address that tells whether it answers.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import yaml

#: ``docker inspect`` data of one container.
Inspect = dict[str, Any]

TWIN_LABEL = "retentiond.twin-of"
RUN_LABEL = "retentiond.run"
ROLE_LABEL = "retentiond.role"
READONLY_ENV = "REGISTRY_STORAGE_MAINTENANCE_READONLY"
READONLY_VALUE = '{"enabled": true}'
DEFAULT_ROOT = "/var/lib/registry"
ROOT_ENV = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
#: Suffixes of the names of the containers retentiond creates next to the original.
TWIN_SUFFIX = "-retentiond-readonly"
GC_SUFFIX = "-retentiond-gc"
#: Labels of the original that are not copied to the twin (compose would adopt the twin).
_UNCOPIED_LABEL_PREFIXES = ("com.docker.compose.", "retentiond.")
#: HostConfig fields of the original that are not given to the twin.
_UNCOPIED_HOST_CONFIG = ("Links", "ContainerIDFile", "AutoRemove", "RestartPolicy")
_NO_RESTART = {"Name": "no", "MaximumRetryCount": 0}
#: Storage drivers of the registry that keep nothing on a filesystem.
_OBJECT_STORAGE_DRIVERS = {"s3", "azure", "gcs", "swift", "oss", "inmemory"}


@dataclass(frozen=True, slots=True)
class NetworkJoin:
    """A network to connect a created container to, with its aliases and fixed addresses."""

    network: str
    aliases: list[str] | None
    ipv4_address: str | None
    ipv6_address: str | None


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A container to create (not start), then connect to ``joins`` in order."""

    name: str
    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: list[str]
    labels: dict[str, str]
    user: str | None
    working_dir: str | None
    host_config: dict[str, Any]
    ports: list[str] | None = None
    networking_config: dict[str, Any] | None = None
    joins: tuple[NetworkJoin, ...] = ()

    def create_arguments(self) -> dict[str, Any]:
        """The keyword arguments of docker's ``APIClient.create_container``."""
        return {
            "image": self.image,
            "command": self.command,
            "entrypoint": self.entrypoint,
            "environment": self.environment,
            "labels": self.labels,
            "name": self.name,
            "user": self.user,
            "working_dir": self.working_dir,
            "ports": self.ports,
            "host_config": self.host_config,
            "networking_config": self.networking_config,
        }


# -------------------------------------------------------------------------------------------
# Reading the inspect data


def container_name(info: Inspect) -> str:
    """The container's name without Docker's leading ``/``, else its short id."""
    return str(info.get("Name", "")).lstrip("/") or str(info["Id"])[:12]


def container_env(info: Inspect) -> dict[str, str]:
    """The container's environment as a mapping (entries without ``=`` are left out)."""
    pairs = (str(e).split("=", 1) for e in info["Config"].get("Env") or [] if "=" in str(e))
    return {k: v for k, v in pairs}


def made_by_retentiond(info: Inspect) -> bool:
    """Whether the container is a twin or GC container retentiond created, not a registry."""
    return bool(info["Config"].get("Labels", {}).get(TWIN_LABEL))


def registry_binary(info: Inspect) -> str:
    """The registry program in the image: the entrypoint when it is the registry itself
    (``/bin/registry``), else ``registry`` on PATH (registry:2 runs ``/entrypoint.sh``)."""
    for argv in (info["Config"].get("Entrypoint"), info["Config"].get("Cmd")):
        if argv:
            first = str(argv[0])
            return first if posixpath.basename(first) == "registry" else "registry"
    return "registry"


def gc_arguments(registry_config: str, *, dry_run: bool) -> list[str]:
    """The registry's arguments for a GC run on ``registry_config`` (never
    ``--delete-untagged``: retentiond decides what is untagged and removable)."""
    return ["garbage-collect", *(["--dry-run"] if dry_run else []), registry_config]


def probe_address(info: Inspect) -> str | None:
    """``HOST:PORT`` of the registry's published port (5000/tcp preferred), reachable from
    the host; None when no TCP port is published."""
    ports = info.get("NetworkSettings", {}).get("Ports") or {}
    keys = sorted(k for k, v in ports.items() if k.endswith("/tcp") and v)
    if not keys:
        return None
    key = "5000/tcp" if "5000/tcp" in keys else keys[0]
    binding = ports[key][0]
    host = binding.get("HostIp") or "127.0.0.1"
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{binding['HostPort']}"


def looks_like_registry(summary: dict[str, Any]) -> bool:
    """Whether a container of ``docker ps`` (the API's list entry) is probably a registry: its
    image or command says so, or it listens on 5000. Retentiond's own containers are not."""
    if summary.get("Labels", {}).get(TWIN_LABEL):
        return False
    text = f"{summary.get('Image', '')} {summary.get('Command', '')}".lower()
    ports = {p.get("PrivatePort") for p in summary.get("Ports", [])}
    return "registry" in text or 5000 in ports


# -------------------------------------------------------------------------------------------
# Containers made by retentiond


def retentiond_labels(original_id: str, run_id: str, role: str) -> dict[str, str]:
    """The labels of a container made for the original: who it stands in for, the run that made
    it, and its role (``readonly`` or ``gc``)."""
    return {TWIN_LABEL: original_id, RUN_LABEL: run_id, ROLE_LABEL: role}


def is_leftover(info: Inspect, name: str, labels: dict[str, str]) -> bool:
    """Whether a container labelled by retentiond (``name``, ``labels``) was made for the
    registry ``info``: labelled with its id, or named after it (a registry recreated since the
    run that made it crashed)."""
    original = container_name(info)
    return labels.get(TWIN_LABEL) == info["Id"] or name in {
        original + TWIN_SUFFIX,
        original + GC_SUFFIX,
    }


def twin_spec(info: Inspect, run_id: str) -> ContainerSpec:
    """The read-only twin of the registry ``info``: same image, entrypoint, command,
    environment with the read-only switch on, user, labels (but compose's), mounts, ports,
    networks with their aliases; no restart policy, no ``--rm``."""
    cfg = info["Config"]
    labels = {
        k: v
        for k, v in (cfg.get("Labels") or {}).items()
        if not k.startswith(_UNCOPIED_LABEL_PREFIXES)
    }
    labels.update(retentiond_labels(info["Id"], run_id, "readonly"))
    host_config = {k: v for k, v in info["HostConfig"].items() if k not in _UNCOPIED_HOST_CONFIG}
    host_config["Binds"] = binds_with_anonymous_volumes(info)
    host_config["RestartPolicy"] = dict(_NO_RESTART)
    host_config["AutoRemove"] = False
    primary, endpoints = networks(info)
    joins = tuple(
        NetworkJoin(
            network=net,
            aliases=endpoint.get("Aliases"),
            ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
            ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
        )
        for net, endpoint in endpoints.items()
        if net != primary
    )
    return ContainerSpec(
        name=container_name(info) + TWIN_SUFFIX,
        image=info["Image"],
        entrypoint=cfg.get("Entrypoint"),
        command=cfg.get("Cmd"),
        environment=[*without_readonly(cfg.get("Env") or []), f"{READONLY_ENV}={READONLY_VALUE}"],
        labels=labels,
        user=cfg.get("User") or None,
        working_dir=cfg.get("WorkingDir") or None,
        host_config=host_config,
        ports=list((cfg.get("ExposedPorts") or {}).keys()),
        networking_config=({"EndpointsConfig": {primary: endpoints[primary]}} if primary else None),
        joins=joins,
    )


def gc_container_spec(info: Inspect, binary: str, args: list[str], run_id: str) -> ContainerSpec:
    """The one-off container of ``gc_mode: stop`` that runs ``binary args`` on the stopped
    registry's storage: same image, mounts, environment (read-only switch off) and network mode
    (object storage drivers need the network), user and working directory; no restart."""
    cfg = info["Config"]
    hc = info["HostConfig"]
    host_config = {
        "Binds": binds_with_anonymous_volumes(info),
        "Mounts": hc.get("Mounts"),
        "VolumesFrom": hc.get("VolumesFrom"),
        "Tmpfs": hc.get("Tmpfs"),
        "NetworkMode": hc.get("NetworkMode") or "default",
        "RestartPolicy": dict(_NO_RESTART),
    }
    return ContainerSpec(
        name=container_name(info) + GC_SUFFIX,
        image=info["Image"],
        entrypoint=[binary],
        command=args,
        environment=without_readonly(cfg.get("Env") or []),
        labels=retentiond_labels(info["Id"], run_id, "gc"),
        user=cfg.get("User") or None,
        working_dir=cfg.get("WorkingDir") or None,
        host_config={k: v for k, v in host_config.items() if v is not None},
    )


def without_readonly(env: list[str]) -> list[str]:
    """``env`` (``NAME=value`` entries) without the registry's read-only switch."""
    return [e for e in env if not e.startswith(READONLY_ENV + "=")]


def binds_with_anonymous_volumes(info: Inspect) -> list[str]:
    """The original's binds plus every volume mount not named in its HostConfig (the image's
    ``VOLUME``, an anonymous volume): without it the twin would get a new, empty volume."""
    hc = info["HostConfig"]
    binds = list(hc.get("Binds") or [])
    explicit = {_bind_target(b) for b in binds}
    explicit |= {m.get("Target") for m in hc.get("Mounts") or []}
    for mount in info.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in explicit:
            mode = "rw" if mount.get("RW", True) else "ro"
            binds.append(f"{mount['Name']}:{mount['Destination']}:{mode}")
    return binds


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def networks(info: Inspect) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(network to create the twin on, endpoint config per user-defined network). The twin
    answers to the original's aliases and to its name on every user-defined network, so other
    containers reach it as they reached the original."""
    mode = str(info["HostConfig"].get("NetworkMode") or "default")
    builtin = mode in ("default", "bridge", "host", "none") or mode.startswith("container:")
    short_id = str(info["Id"])[:12]
    endpoints: dict[str, dict[str, Any]] = {}
    for net, settings in (info.get("NetworkSettings", {}).get("Networks") or {}).items():
        if net in ("bridge", "host", "none"):
            continue
        aliases = [a for a in settings.get("Aliases") or [] if a != short_id]
        if container_name(info) not in aliases:
            aliases.append(container_name(info))
        endpoint: dict[str, Any] = {"Aliases": aliases}
        if settings.get("IPAMConfig"):
            endpoint["IPAMConfig"] = settings["IPAMConfig"]
        endpoints[net] = endpoint
    if builtin:
        return None, endpoints
    if mode not in endpoints:  # NetworkMode holds an id, or the network was disconnected
        endpoints[mode] = {"Aliases": [container_name(info)]}
    return mode, endpoints


# -------------------------------------------------------------------------------------------
# Where the registry keeps its storage


def root_needs_config_file(env: dict[str, str]) -> bool:
    """Whether :func:`storage_root` needs the registry's config file: the environment neither
    sets the root directory nor picks another storage driver than the filesystem."""
    driver = env.get("REGISTRY_STORAGE")
    return not env.get(ROOT_ENV) and not (driver and driver != "filesystem")


def storage_root(env: dict[str, str], config_text: str | None) -> str | None:
    """The registry's filesystem root directory as the container sees it, from its
    environment, then its config file (``config_text``; None when unreadable); None when it
    stores elsewhere (s3, azure, gcs...). The registry's default when nothing says."""
    if env.get(ROOT_ENV):
        return env[ROOT_ENV]
    driver = env.get("REGISTRY_STORAGE")
    if driver and driver != "filesystem":
        return None
    if config_text is None:
        return DEFAULT_ROOT
    try:
        doc = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return DEFAULT_ROOT
    storage = doc.get("storage") if isinstance(doc, dict) else None
    if not isinstance(storage, dict):
        return DEFAULT_ROOT
    fs = storage.get("filesystem")
    if fs is None and _OBJECT_STORAGE_DRIVERS & set(storage):
        return None
    if isinstance(fs, dict) and fs.get("rootdirectory"):
        return str(fs["rootdirectory"])
    return DEFAULT_ROOT


def covering_mount(info: Inspect, root: str) -> bool:
    """Whether one of the container's mounts holds ``root`` (so the tree outlives the
    container and the host sees it)."""
    root = posixpath.normpath(root)
    for mount in info.get("Mounts") or []:
        dest = posixpath.normpath(str(mount.get("Destination", "")))
        if root == dest or root.startswith(dest.rstrip("/") + "/"):
            return True
    return False


# -------------------------------------------------------------------------------------------
# Replicas: what storage an instance serves, and where it answers


#: keys of the registry's ``storage`` section that are not a driver
_STORAGE_OPTIONS = {"delete", "cache", "maintenance", "redirect", "tag"}
#: the s3 driver's keys that say which objects it serves
_S3_IDENTITY = ("regionendpoint", "region", "bucket", "rootdirectory")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _storage_section(config_text: str | None) -> dict[str, Any]:
    if config_text is None:
        return {}
    try:
        doc = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return {}
    storage = doc.get("storage") if isinstance(doc, dict) else None
    return storage if isinstance(storage, dict) else {}


def storage_identity(info: Inspect, config_text: str | None) -> str | None:
    """What storage the registry ``info`` serves, in words that are equal for two containers
    serving the same tree: ``filesystem HOSTPATH`` (the host side of the mount that holds its
    root directory, a bind's directory or a volume's) or ``s3 ENDPOINT/BUCKET/ROOT`` (its
    config file's ``storage.s3``, overridden by ``REGISTRY_STORAGE_S3_*``). None when it cannot
    be told (another driver, no mount covering the root, the config file unreadable)."""
    env = container_env(info)
    root = storage_root(env, config_text)
    if root is not None:
        if root_needs_config_file(env) and config_text is None:
            return None
        root = posixpath.normpath(root)
        best: dict[str, Any] | None = None
        for mount in info.get("Mounts") or []:
            dest = posixpath.normpath(str(mount.get("Destination", "")))
            if (root == dest or root.startswith(dest.rstrip("/") + "/")) and (
                best is None or len(dest) > len(str(best.get("Destination", "")))
            ):
                best = mount
        if best is None or not best.get("Source"):
            return None
        rest = posixpath.relpath(root, posixpath.normpath(str(best["Destination"])))
        return "filesystem " + posixpath.normpath(posixpath.join(str(best["Source"]), rest))
    storage = _storage_section(config_text)
    drivers = [k for k in storage if k not in _STORAGE_OPTIONS]
    driver = env.get("REGISTRY_STORAGE") or (drivers[0] if len(drivers) == 1 else None)
    if driver != "s3":
        return None
    s3 = _mapping(storage.get("s3"))
    values = {
        key: env.get(f"REGISTRY_STORAGE_S3_{key.upper()}", str(s3.get(key) or ""))
        for key in _S3_IDENTITY
    }
    if not values["bucket"]:
        return None
    where = values["regionendpoint"].rstrip("/") or values["region"]
    root_dir = "/" + values["rootdirectory"].strip("/")
    return f"s3 {where}/{values['bucket']}{root_dir}"


def instance_address(info: Inspect, config_text: str | None) -> str | None:
    """The URL at which retentiond reaches the registry ``info`` itself (not a load balancer):
    its published port on the host (:func:`probe_address`), else its address on its first
    network with the port it listens on (``REGISTRY_HTTP_ADDR``, else its config file's
    ``http.addr``, else 5000); https when it serves TLS. None when it has no address (not
    running, ``--network host`` with nothing published)."""
    env = container_env(info)
    doc: Any = None
    if config_text is not None:
        try:
            doc = yaml.safe_load(config_text)
        except yaml.YAMLError:
            doc = None
    http = _mapping(doc.get("http") if isinstance(doc, dict) else None)
    tls = _mapping(http.get("tls"))
    secure = bool(env.get("REGISTRY_HTTP_TLS_CERTIFICATE") or tls.get("certificate"))
    scheme = "https" if secure else "http"
    published = probe_address(info)
    if published is not None:
        return f"{scheme}://{published}"
    addr = env.get("REGISTRY_HTTP_ADDR") or str(http.get("addr") or ":5000")
    port = addr.rpartition(":")[2]
    if not port.isdigit():
        return None
    for settings in (info.get("NetworkSettings", {}).get("Networks") or {}).values():
        if settings.get("IPAddress"):
            return f"{scheme}://{settings['IPAddress']}:{port}"
        if settings.get("GlobalIPv6Address"):
            return f"{scheme}://[{settings['GlobalIPv6Address']}]:{port}"
    return None
