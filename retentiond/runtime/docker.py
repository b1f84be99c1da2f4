"""The registry as a Docker container, controlled through the docker SDK.

``gc_mode`` decides how the registry is frozen for the GC:

- ``readonly`` (default): a *twin* of the container (same image, entrypoint, command,
  environment, mounts, ports, networks and aliases) is created, the original is stopped, the twin
  is started with ``REGISTRY_STORAGE_MAINTENANCE_READONLY`` so pulls go on and pushes get 405,
  the GC runs in the twin (``docker exec``), then the twin is removed and the original started
  again (which also empties its in-memory blob descriptor cache).
- ``stop``: the original is stopped; the GC runs in a one-off container from the same image and
  mounts; the original is started again.
- ``online``: the GC runs in the live container (writes are still accepted), then it restarts.

Every container retentiond creates carries the label ``retentiond.twin-of=<original id>`` (and
``retentiond.run=<run id>``), so :meth:`DockerRuntime.recover` finds and removes it after a crash
at any point, and starts the original again if it is not running.

Errors: every docker, requests, httpx and OS exception is translated into
:class:`~retentiond.errors.RuntimeControlError` with what to do about it.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import httpx
import requests.exceptions
import structlog
import yaml

from retentiond.config import GcMode, RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.logs import get_logger
from retentiond.runtime.base import GcOutcome, MaintenanceState

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
#: Without a published port, a started container counts as up once it ran this long.
UNPROBED_GRACE_SECONDS = 2.0
#: Labels of the original that are not copied to the twin (compose would adopt the twin).
_UNCOPIED_LABEL_PREFIXES = ("com.docker.compose.", "retentiond.")
#: HostConfig fields of the original that are not given to the twin.
_UNCOPIED_HOST_CONFIG = ("Links", "ContainerIDFile", "AutoRemove", "RestartPolicy")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
SOCKET_FIX = "run retentiond as root or add its user to the docker group"


class DockerRuntime:
    """Controls the registry container ``config.container`` (a name or an id).

    ``client`` defaults to ``docker.from_env()`` (``DOCKER_HOST`` and friends), created on first
    use so that constructing the runtime never fails. ``run_id`` labels the containers this run
    creates. ``stop_timeout`` is the grace given to the registry on stop; ``ready_timeout`` how
    long a started registry may take to answer ``GET /v2/``.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        client: docker.DockerClient | None = None,
        run_id: str = "",
        *,
        stop_timeout: int = 10,
        ready_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self._client = client
        self._original_id: str | None = None
        # the run's id reaches log lines through structlog's context (bound by the run)
        self._log = get_logger(component="runtime", runtime="docker")

    # ---------------------------------------------------------------------------------------
    # Runtime protocol

    def describe(self) -> str:
        return f"docker container {self.config.container} (gc_mode {self.config.gc_mode.value})"

    def check(self) -> list[str]:
        try:
            info = self._inspect_original()
        except RuntimeControlError as exc:
            return [str(exc)]
        problems: list[str] = []
        name = _name(info)
        mode = self.config.gc_mode
        if mode is not GcMode.ONLINE and info["HostConfig"].get("AutoRemove"):
            problems.append(
                f"container {name} was started with --rm: stopping it for gc_mode {mode.value} "
                "would delete it; recreate it without --rm (e.g. with --restart unless-stopped)"
            )
        root = self._storage_root(info)
        if root is not None and not _covering_mount(info, root):
            where = (
                "the GC would run on another tree than the one the registry serves"
                if mode is not GcMode.ONLINE
                else "retentiond cannot read the tree from the host, and it is lost with the "
                "container"
            )
            problems.append(
                f"container {name} has no mount that covers the registry's storage {root}: its "
                f"images live in the container's own layer, so {where}; mount a host directory "
                f"or a volume at {root} (docker run -v /srv/registry:{root} ...)"
            )
        return problems

    def registry_config_text(self) -> str | None:
        """The file ``config.registry_config`` read from inside the container (running or not),
        following symbolic links; None when it cannot be read there. A missing container or an
        unreachable daemon raises RuntimeControlError."""
        info = self._inspect_original()
        path = self.config.registry_config
        for _ in range(8):  # symlink hops
            try:
                with self._docker(f"read {path} from container {_name(info)}"):
                    chunks, _stat = self.client.api.get_archive(info["Id"], path)
                    data = b"".join(chunks)
            except RuntimeControlError as exc:
                self._log.warning("registry config unreadable", path=path, error=str(exc))
                return None
            try:
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    member = tar.next()
                    if member is None:
                        return None
                    if member.issym():
                        path = posixpath.normpath(
                            posixpath.join(posixpath.dirname(path), member.linkname)
                        )
                        continue
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        return None
                    return extracted.read().decode("utf-8", errors="replace")
            except (tarfile.TarError, OSError) as exc:
                self._log.warning("registry config unreadable", path=path, error=str(exc))
                return None
        return None

    def recover(self) -> bool:
        """Remove every container a previous run left (twin, one-off GC container, in any
        state) and start the original if it is not running. True when anything was done."""
        info = self._inspect_original()
        did = False
        for leftover in self._leftovers(info):
            self._log.warning(
                "removing a container left by an interrupted run",
                container=leftover.name,
                status=leftover.status,
                run=leftover.labels.get(RUN_LABEL),
            )
            self._remove(leftover.id, leftover.name)
            did = True
        info = self._inspect(info["Id"])
        if not info["State"].get("Running"):
            self._log.warning("starting the registry container left stopped", container=_name(info))
            self._start_and_wait(info["Id"], _name(info))
            did = True
        return did

    def enter_maintenance(self) -> MaintenanceState:
        mode = self.config.gc_mode
        if mode is GcMode.ONLINE:
            self._log.warning("gc_mode online: the registry keeps accepting writes during GC")
            return MaintenanceState.ONLINE
        info = self._inspect_original()
        name = _name(info)
        if not info["State"].get("Running"):
            raise RuntimeControlError(
                f"container {name} is not running ({info['State'].get('Status')}): start it "
                "(`docker start " + name + "`) before a maintenance run"
            )
        if info["HostConfig"].get("AutoRemove"):
            raise RuntimeControlError(
                f"container {name} was started with --rm: stopping it would delete it; "
                "recreate it without --rm or use gc_mode: online"
            )
        for leftover in self._leftovers(info):
            self._remove(leftover.id, leftover.name)
        if mode is GcMode.STOP:
            self._stop(info["Id"], name)
            return MaintenanceState.STOPPED
        # readonly: create the twin first (nothing changes yet), then switch.
        twin_id = self._create_twin(info)
        try:
            self._stop(info["Id"], name)
        except RuntimeControlError:
            self._remove(twin_id, name + TWIN_SUFFIX)
            raise
        try:
            with self._docker(f"start the read-only twin of {name}"):
                self.client.api.start(twin_id)
            self._wait_answers(twin_id, name + TWIN_SUFFIX)
        except RuntimeControlError:
            self._log.error("the read-only twin did not come up: restoring the original")
            self._remove(twin_id, name + TWIN_SUFFIX)
            self._start_and_wait(info["Id"], name)
            raise
        return MaintenanceState.READ_ONLY

    def run_gc(self, *, dry_run: bool = False) -> GcOutcome:
        info = self._inspect_original()
        binary = _registry_binary(info)
        args = ["garbage-collect", *(["--dry-run"] if dry_run else []), self.config.registry_config]
        mode = self.config.gc_mode
        started = time.monotonic()
        if mode is GcMode.STOP:
            if info["State"].get("Running"):
                raise RuntimeControlError(
                    f"container {_name(info)} is running: with gc_mode stop the GC runs only "
                    "while it is stopped; call enter_maintenance before run_gc"
                )
            code, output = self._gc_in_one_off(info, binary, args)
        else:
            if mode is GcMode.READONLY:
                target = self._twin_of(info)
                if target is None:
                    raise RuntimeControlError(
                        f"no running read-only twin of {_name(info)}: call enter_maintenance "
                        "before run_gc"
                    )
            else:
                target = info["Id"]
            code, output = self._exec(target, [binary, *args])
        seconds = time.monotonic() - started
        self._log.info(
            "garbage collection finished",
            dry_run=dry_run,
            returncode=code,
            seconds=round(seconds, 3),
            gc_mode=mode.value,
        )
        return GcOutcome(returncode=code, output=output, seconds=seconds)

    def leave_maintenance(self) -> None:
        """Back to normal: remove the twin (or one-off container), then start the original
        (readonly, stop) or restart it (online), and wait until it answers. Idempotent."""
        info = self._inspect_original()
        name = _name(info)
        if self.config.gc_mode is GcMode.ONLINE:
            with self._docker(f"restart container {name}"):
                self.client.api.restart(info["Id"], timeout=self.stop_timeout)
            self._wait_answers(info["Id"], name)
            return
        for leftover in self._leftovers(info):
            self._remove(leftover.id, leftover.name)
        self._start_and_wait(info["Id"], name)

    # ---------------------------------------------------------------------------------------
    # Docker access

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._docker("connect to the Docker daemon"):
                self._client = docker.from_env()
        return self._client

    @contextmanager
    def _docker(self, action: str) -> Iterator[None]:
        """Translate every exception of the docker SDK (and the transport under it) into
        RuntimeControlError saying what failed and what to do."""
        try:
            yield
        except RuntimeControlError:
            raise
        except docker.errors.NotFound as exc:
            raise RuntimeControlError(f"cannot {action}: {_explanation(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError) as exc:
            raise RuntimeControlError(self._transport_message(action, exc)) from exc

    def _transport_message(self, action: str, exc: BaseException) -> str:
        text = _chain_text(exc)
        host = self._base_url()
        if "Permission denied" in text or "PermissionError" in text:
            return f"cannot {action}: no permission on {host.removeprefix('unix://')}: {SOCKET_FIX}"
        if any(
            s in text
            for s in ("No such file or directory", "Connection refused", "FileNotFoundError",
                      "Failed to establish a new connection", "Connection aborted")
        ):
            return (
                f"cannot {action}: the Docker daemon does not answer at {host}: start it "
                "(`systemctl start docker`) or point DOCKER_HOST at it"
            )
        return f"cannot {action}: {_explanation(exc)}"

    def _base_url(self) -> str:
        """Where the daemon is expected: the client's socket path or URL, else DOCKER_HOST."""
        if self._client is not None:
            adapter = getattr(self._client.api, "_custom_adapter", None)
            socket_path = getattr(adapter, "socket_path", None)
            if socket_path:
                return f"unix://{socket_path}"
            return str(self._client.api.base_url)
        return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    def _inspect(self, container: str) -> dict[str, Any]:
        with self._docker(f"inspect container {container}"):
            info: dict[str, Any] = self.client.api.inspect_container(container)
            return info

    def _inspect_original(self) -> dict[str, Any]:
        """The original container's inspect data; remembers its id (its name may be reused by
        nobody else while we run, but an id is exact)."""
        ref = self._original_id or self.config.container
        try:
            info = self._inspect(ref)
        except RuntimeControlError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise RuntimeControlError(self._not_found_message(ref)) from exc.__cause__
            raise
        if info["Config"].get("Labels", {}).get(TWIN_LABEL):
            raise RuntimeControlError(
                f"container {_name(info)} is a temporary container made by retentiond, not the "
                "registry: set runtime.container to the registry container's name"
            )
        self._original_id = info["Id"]
        return info

    def _not_found_message(self, ref: str) -> str:
        message = f"registry container {ref!r} not found (runtime.container)"
        try:
            with self._docker("list retentiond's temporary containers"):
                left = self.client.containers.list(all=True, filters={"label": TWIN_LABEL})
        except RuntimeControlError:
            left = []
        orphans = sorted(c.name for c in left if str(c.name).startswith(ref + "-retentiond-"))
        if orphans:
            return (
                f"{message}, but {', '.join(orphans)} left by an interrupted run still exist: "
                "recreate the registry container, then `docker rm -f` them (the next run also "
                "removes them)"
            )
        try:
            candidates = self._registry_like_names()
        except RuntimeControlError:
            candidates = []
        if candidates:
            return (
                f"{message}; running containers that look like registries: "
                f"{', '.join(candidates)}; set runtime.container to one of them"
            )
        return f"{message}; no running container looks like a registry: start it, or set " \
            "runtime.container to its name (`docker ps` lists them)"

    def _registry_like_names(self) -> list[str]:
        with self._docker("list containers"):
            listed = self.client.api.containers()
        names: list[str] = []
        for c in listed:
            if c.get("Labels", {}).get(TWIN_LABEL):
                continue
            text = f"{c.get('Image', '')} {c.get('Command', '')}".lower()
            ports = {p.get("PrivatePort") for p in c.get("Ports", [])}
            if "registry" in text or 5000 in ports:
                names.extend(n.lstrip("/") for n in c.get("Names", [])[:1])
        return sorted(names)

    def _leftovers(self, info: dict[str, Any]) -> list[Any]:
        """Containers made by retentiond for this registry: labelled with its id, or named
        after it and labelled by retentiond (a registry recreated since the crash)."""
        ours = {_name(info) + TWIN_SUFFIX, _name(info) + GC_SUFFIX}
        with self._docker("list retentiond's temporary containers"):
            found = self.client.containers.list(all=True, filters={"label": TWIN_LABEL})
        return [
            c for c in found
            if c.labels.get(TWIN_LABEL) == info["Id"] or c.name in ours
        ]

    def _twin_of(self, info: dict[str, Any]) -> str | None:
        for c in self._leftovers(info):
            if c.labels.get(ROLE_LABEL) == "readonly" and c.status == "running":
                return str(c.id)
        return None

    def _remove(self, container_id: str, name: str) -> None:
        try:
            with self._docker(f"remove container {name}"):
                self.client.api.remove_container(container_id, force=True, v=False)
        except RuntimeControlError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return
            if "already in progress" in str(exc):
                self._wait_gone(container_id)
                return
            raise
        self._wait_gone(container_id)

    def _wait_gone(self, container_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._inspect(container_id)
            except RuntimeControlError as exc:
                if isinstance(exc.__cause__, docker.errors.NotFound):
                    return
                raise
            time.sleep(0.05)
        raise RuntimeControlError(f"container {container_id[:12]} is still there {timeout:.0f}s "
                                  "after its removal: check `docker ps -a` and the daemon's log")

    def _stop(self, container_id: str, name: str) -> None:
        self._log.info("stopping the registry container", container=name)
        with self._docker(f"stop container {name}"):
            self.client.api.stop(container_id, timeout=self.stop_timeout)

    def _start_and_wait(self, container_id: str, name: str) -> None:
        self._log.info("starting the registry container", container=name)
        with self._docker(f"start container {name}"):
            self.client.api.start(container_id)
        self._wait_answers(container_id, name)

    # ---------------------------------------------------------------------------------------
    # Building the twin and the one-off GC container

    def _labels(self, info: dict[str, Any], role: str) -> dict[str, str]:
        run_id = self.run_id or str(structlog.contextvars.get_contextvars().get("run_id", ""))
        return {TWIN_LABEL: info["Id"], RUN_LABEL: run_id, ROLE_LABEL: role}

    def _create_twin(self, info: dict[str, Any]) -> str:
        """Create (not start) the read-only twin: same image, entrypoint, command, environment,
        user, labels (but compose's), mounts, ports, networks with their aliases; no restart."""
        name = _name(info)
        cfg = info["Config"]
        env = [e for e in cfg.get("Env") or [] if not e.startswith(READONLY_ENV + "=")]
        env.append(f"{READONLY_ENV}={READONLY_VALUE}")
        labels = {
            k: v for k, v in (cfg.get("Labels") or {}).items()
            if not k.startswith(_UNCOPIED_LABEL_PREFIXES)
        }
        labels.update(self._labels(info, "readonly"))
        host_config = {
            k: v for k, v in info["HostConfig"].items() if k not in _UNCOPIED_HOST_CONFIG
        }
        host_config["Binds"] = _binds_with_anonymous_volumes(info)
        host_config["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
        host_config["AutoRemove"] = False
        primary, endpoints = _networks(info)
        twin_name = name + TWIN_SUFFIX
        api = self.client.api
        self._log.info("creating the read-only twin", container=twin_name)
        with self._docker(f"create the read-only twin {twin_name}"):
            created = api.create_container(
                image=info["Image"],
                command=cfg.get("Cmd"),
                entrypoint=cfg.get("Entrypoint"),
                environment=env,
                labels=labels,
                name=twin_name,
                user=cfg.get("User") or None,
                working_dir=cfg.get("WorkingDir") or None,
                ports=list((cfg.get("ExposedPorts") or {}).keys()),
                host_config=host_config,
                networking_config=(
                    {"EndpointsConfig": {primary: endpoints[primary]}} if primary else None
                ),
            )
        twin_id = str(created["Id"])
        try:
            for net, endpoint in endpoints.items():
                if net == primary:
                    continue
                with self._docker(f"connect {twin_name} to network {net}"):
                    api.connect_container_to_network(
                        twin_id,
                        net,
                        aliases=endpoint.get("Aliases"),
                        ipv4_address=(endpoint.get("IPAMConfig") or {}).get("IPv4Address"),
                        ipv6_address=(endpoint.get("IPAMConfig") or {}).get("IPv6Address"),
                    )
        except RuntimeControlError:
            self._remove(twin_id, twin_name)
            raise
        return twin_id

    def _gc_in_one_off(
        self, info: dict[str, Any], binary: str, args: list[str]
    ) -> tuple[int, str]:
        """gc_mode stop: run the GC in a new container from the same image, mounts, environment
        and network mode (object storage drivers need the network), then remove it."""
        name = _name(info) + GC_SUFFIX
        cfg = info["Config"]
        hc = info["HostConfig"]
        host_config = {
            "Binds": _binds_with_anonymous_volumes(info),
            "Mounts": hc.get("Mounts"),
            "VolumesFrom": hc.get("VolumesFrom"),
            "Tmpfs": hc.get("Tmpfs"),
            "NetworkMode": hc.get("NetworkMode") or "default",
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        }
        env = [e for e in cfg.get("Env") or [] if not e.startswith(READONLY_ENV + "=")]
        api = self.client.api
        with self._docker(f"create the GC container {name}"):
            created = api.create_container(
                image=info["Image"],
                entrypoint=[binary],
                command=args,
                environment=env,
                labels=self._labels(info, "gc"),
                name=name,
                user=cfg.get("User") or None,
                working_dir=cfg.get("WorkingDir") or None,
                host_config={k: v for k, v in host_config.items() if v is not None},
            )
        gc_id = str(created["Id"])
        try:
            self._log.info("running the GC in a one-off container", container=name, args=args)
            with self._docker(f"run the GC container {name}"):
                api.start(gc_id)
                # No read timeout: a GC of a large tree runs for hours.
                result = api.wait(gc_id, timeout=None)
                logs = api.logs(gc_id, stdout=True, stderr=True)
            code = int(result.get("StatusCode", -1))
            return code, _text(logs)
        finally:
            self._remove(gc_id, name)

    def _exec(self, container_id: str, cmd: list[str]) -> tuple[int, str]:
        """``docker exec`` and wait for the end, however long it takes."""
        api = self.client.api
        self._log.info("running the GC with docker exec", container=container_id[:12], cmd=cmd)
        with self._docker(f"run {' '.join(cmd)} in container {container_id[:12]}"):
            exec_id = api.exec_create(container_id, cmd, stdout=True, stderr=True)["Id"]
            # The attached exec stream is read without the client's timeout (a 4 s silent
            # exec works with timeout=2), so a GC that prints nothing for minutes is fine.
            raw = api.exec_start(exec_id, stream=False, demux=False)
            code = api.exec_inspect(exec_id).get("ExitCode")
        if code is None:
            raise RuntimeControlError(
                f"the GC in container {container_id[:12]} did not finish (no exit code): "
                "check `docker logs` of the container"
            )
        return int(code), _text(raw)

    # ---------------------------------------------------------------------------------------
    # Readiness

    def _wait_answers(self, container_id: str, name: str) -> None:
        """Wait until the container answers ``GET /v2/`` (200 or 401) on its published port;
        with no published port, until it has been running for a couple of seconds."""
        deadline = time.monotonic() + self.ready_timeout
        running_since: float | None = None
        said_unprobed = False
        while True:
            info = self._inspect(container_id)
            state = info["State"]
            if state.get("Running"):
                running_since = running_since or time.monotonic()
                url = _probe_address(info)
                if url is None:
                    if not said_unprobed:
                        self._log.info(
                            "no published port to probe: waiting for the container to keep "
                            "running",
                            container=name,
                            seconds=UNPROBED_GRACE_SECONDS,
                        )
                        said_unprobed = True
                    if time.monotonic() - running_since >= UNPROBED_GRACE_SECONDS:
                        return
                elif _answers(url):
                    self._log.info("registry answers", container=name, url=url)
                    return
            elif state.get("Status") in ("exited", "dead"):
                raise RuntimeControlError(
                    f"container {name} exited with code {state.get('ExitCode')} right after its "
                    f"start; its last log lines:\n{self._tail(container_id)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeControlError(
                    f"container {name} does not answer GET /v2/ {self.ready_timeout:.0f}s after "
                    f"its start; its last log lines:\n{self._tail(container_id)}"
                )
            time.sleep(0.05)

    def _tail(self, container_id: str) -> str:
        try:
            with self._docker("read the container's log"):
                return _text(self.client.api.logs(container_id, tail=20)).strip()
        except RuntimeControlError as exc:
            return f"(unavailable: {exc})"

    # ---------------------------------------------------------------------------------------
    # Storage location

    def _storage_root(self, info: dict[str, Any]) -> str | None:
        """The registry's filesystem rootdirectory as the container sees it; None when it
        stores elsewhere (s3, azure, gcs...)."""
        env: dict[str, str] = _env(info)
        if env.get(ROOT_ENV):
            return env[ROOT_ENV]
        driver = env.get("REGISTRY_STORAGE")
        if driver and driver != "filesystem":
            return None
        try:
            text = self.registry_config_text()
        except RuntimeControlError:
            text = None
        if text is None:
            return DEFAULT_ROOT
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            return DEFAULT_ROOT
        storage = doc.get("storage") if isinstance(doc, dict) else None
        if not isinstance(storage, dict):
            return DEFAULT_ROOT
        fs = storage.get("filesystem")
        drivers = {"s3", "azure", "gcs", "swift", "oss", "inmemory"} & set(storage)
        if fs is None and drivers:
            return None
        if isinstance(fs, dict) and fs.get("rootdirectory"):
            return str(fs["rootdirectory"])
        return DEFAULT_ROOT


# -------------------------------------------------------------------------------------------
# Pure helpers on inspect data


def _name(info: dict[str, Any]) -> str:
    return str(info.get("Name", "")).lstrip("/") or str(info["Id"])[:12]


def _registry_binary(info: dict[str, Any]) -> str:
    """The registry program in the image: the entrypoint when it is the registry itself
    (``/bin/registry``), else ``registry`` on PATH (registry:2 runs ``/entrypoint.sh``)."""
    for argv in (info["Config"].get("Entrypoint"), info["Config"].get("Cmd")):
        if argv:
            first = str(argv[0])
            return first if posixpath.basename(first) == "registry" else "registry"
    return "registry"


def _env(info: dict[str, Any]) -> dict[str, str]:
    pairs = (str(e).split("=", 1) for e in info["Config"].get("Env") or [] if "=" in str(e))
    return {k: v for k, v in pairs}


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def _binds_with_anonymous_volumes(info: dict[str, Any]) -> list[str]:
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


def _covering_mount(info: dict[str, Any], root: str) -> bool:
    root = posixpath.normpath(root)
    for mount in info.get("Mounts") or []:
        dest = posixpath.normpath(str(mount.get("Destination", "")))
        if root == dest or root.startswith(dest.rstrip("/") + "/"):
            return True
    return False


def _networks(info: dict[str, Any]) -> tuple[str | None, dict[str, dict[str, Any]]]:
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
        if _name(info) not in aliases:
            aliases.append(_name(info))
        endpoint: dict[str, Any] = {"Aliases": aliases}
        if settings.get("IPAMConfig"):
            endpoint["IPAMConfig"] = settings["IPAMConfig"]
        endpoints[net] = endpoint
    if builtin:
        return None, endpoints
    if mode not in endpoints:  # NetworkMode holds an id, or the network was disconnected
        endpoints[mode] = {"Aliases": [_name(info)]}
    return mode, endpoints


def _probe_address(info: dict[str, Any]) -> str | None:
    """``http://HOST:PORT`` of the registry's published port (5000/tcp preferred)."""
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


def _answers(hostport: str) -> bool:
    """GET /v2/ answers 200 or 401 (auth configured), over HTTP or HTTPS."""
    for scheme in ("http", "https"):
        try:
            resp = httpx.get(f"{scheme}://{hostport}/v2/", timeout=2.0, verify=False)
        except (httpx.HTTPError, OSError):
            continue
        if resp.status_code in (200, 401):
            return True
    return False


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if raw is None:
        return ""
    if isinstance(raw, tuple):  # demuxed (stdout, stderr)
        return "".join(_text(part) for part in raw)
    return str(raw)


def _chain_text(exc: BaseException) -> str:
    parts = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return " | ".join(parts)


def _explanation(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)
