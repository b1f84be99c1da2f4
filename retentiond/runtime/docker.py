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

The registry's config file (the GC's argument, read for the storage root and
``storage.delete.enabled``) is ``runtime.registry_config`` when set; else it is found from the
container (:mod:`retentiond.runtime.discovery`): its command, its environment, else the default
of the version ``registry --version`` prints in it. It is found again by every :meth:`check`
(the start of each run) and kept for the run, so the GC of ``gc_mode: stop`` knows it while the
registry is stopped.

Every container retentiond creates carries the label ``retentiond.twin-of=<original id>`` (and
``retentiond.run=<run id>``), so :meth:`DockerRuntime.recover` finds and removes it after a crash
at any point, and starts the original again if it is not running.

This module decides the steps of each mode and of recovery. What it creates is computed without
Docker in :mod:`retentiond.runtime.docker_specs`; the calls, and the waits for their effect, are
in :mod:`retentiond.runtime.docker_containers`. Errors: every docker, requests and OS exception
is translated into :class:`~retentiond.errors.RuntimeControlError` with what to do about it
(:mod:`retentiond.runtime.docker_errors`).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import structlog

from retentiond.config import GcMode, RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.logs import get_logger
from retentiond.runtime.base import GcLines, GcOutcome, MaintenanceState
from retentiond.runtime.discovery import (
    ConfigLocation,
    RegistryFacts,
    RegistryVersion,
    locate_registry_config,
    needs_version,
    parse_registry_version,
)
from retentiond.runtime.docker_containers import Containers
from retentiond.runtime.docker_specs import (
    ROLE_LABEL,
    RUN_LABEL,
    TWIN_SUFFIX,
    Inspect,
    container_env,
    container_name,
    covering_mount,
    gc_arguments,
    gc_container_spec,
    instance_address,
    is_leftover,
    looks_like_registry,
    made_by_retentiond,
    registry_binary,
    root_needs_config_file,
    storage_identity,
    storage_root,
    twin_spec,
)


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
        self._containers = Containers(
            client, stop_timeout=stop_timeout, ready_timeout=ready_timeout
        )
        self._original_id: str | None = None
        #: the config file found for the container of this id (see _config_location)
        self._location: tuple[str, ConfigLocation] | None = None
        #: the registry's major version in the container of this id (see registry_major)
        self._major: tuple[str, int] | None = None
        #: when the last enter_maintenance asked the original to stop (see switched_at)
        self._switched_at: float | None = None
        # the run's id reaches log lines through structlog's context (bound by the run)
        self._log = get_logger(component="runtime", runtime="docker")

    # ---------------------------------------------------------------------------------------
    # Runtime protocol

    def describe(self) -> str:
        return f"docker container {self.config.container} (gc_mode {self.config.gc_mode.value})"

    def check(self) -> list[str]:
        """What would stop a run: the container missing or unusable, its config file not to be
        found. Finds the config file again (a container recreated since the last run)."""
        try:
            info = self._inspect_original()
        except RuntimeControlError as exc:
            return [str(exc)]
        self._location = None
        try:
            self._config_location(info)
        except RuntimeControlError as exc:
            return [str(exc), *self._problems(info)]
        return self._problems(info)

    def registry_facts(self) -> RegistryFacts:
        """The registry's version (``registry --version`` in the container) and config file,
        and what would stop a run, for ``check``. Changes nothing. A missing container or an
        unreachable daemon raises RuntimeControlError."""
        info = self._inspect_original()
        version: RegistryVersion | None = None
        version_error = None
        try:
            version = self._registry_version(info)
        except RuntimeControlError as exc:
            version_error = str(exc)
        location = locate_registry_config(self.config.registry_config, info, version)
        config_error = None
        problems = []
        if location is None:
            config_error = self._unlocated_message(info, version_error, version)
        else:
            self._location = (info["Id"], location)
            if self.registry_config_text() is None:
                problems.append(
                    f"the registry's config file {location.path} cannot be read in container "
                    f"{container_name(info)}: the GC would fail on it; set "
                    "runtime.registry_config to the file the registry reads"
                )
        return RegistryFacts(
            container=container_name(info),
            version=version,
            version_error=version_error,
            config=location,
            config_error=config_error,
            problems=(*problems, *self._problems(info)),
        )

    def registry_major(self) -> int | None:
        """The major version ``registry --version`` prints in the running container, asked
        once per container; None when it cannot be asked (not running, no such program)."""
        try:
            info = self._inspect_original()
            if self._major is None or self._major[0] != info["Id"]:
                self._major = (info["Id"], self._registry_version(info).major)
        except RuntimeControlError as exc:
            self._log.info("registry version unknown", error=str(exc))
            return None
        return self._major[1]

    def config_location(self) -> ConfigLocation:
        """The registry's config file, and how it was found; RuntimeControlError when the
        container cannot be inspected or nothing tells."""
        return self._config_location(self._inspect_original())

    def _problems(self, info: Inspect) -> list[str]:
        problems: list[str] = []
        name = container_name(info)
        mode = self.config.gc_mode
        if mode is not GcMode.ONLINE and info["HostConfig"].get("AutoRemove"):
            problems.append(
                f"container {name} was started with --rm: stopping it for gc_mode {mode.value} "
                "would delete it; recreate it without --rm (e.g. with --restart unless-stopped)"
            )
        root = self._storage_root(info)
        if root is not None and not covering_mount(info, root):
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
        """The registry's config file (:meth:`config_location`) read from inside the container
        (running or not), following symbolic links; None when it cannot be found or read there.
        A missing container or an unreachable daemon raises RuntimeControlError."""
        info = self._inspect_original()
        try:
            path = self._config_location(info).path
        except RuntimeControlError as exc:
            self._log.warning("registry config not found", error=str(exc))
            return None
        for _ in range(8):  # symlink hops
            try:
                data = self._containers.archive(
                    info["Id"], path, f"read {path} from container {container_name(info)}"
                )
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
            self._containers.remove(leftover.id, leftover.name)
            did = True
        info = self._containers.inspect(info["Id"])
        if not info["State"].get("Running"):
            name = container_name(info)
            self._log.warning("starting the registry container left stopped", container=name)
            self._containers.start_and_wait(info["Id"], name)
            did = True
        return did

    def ready_for_maintenance(self) -> Inspect:
        """What :meth:`enter_maintenance` checks before it changes anything (the container
        runs, without ``--rm``; its config file is known): RuntimeControlError when it would
        refuse. Its inspect data."""
        info = self._inspect_original()
        # before anything changes: the GC needs it, and a stopped registry cannot say it
        self._config_location(info)
        if self.config.gc_mode is GcMode.ONLINE:
            return info
        name = container_name(info)
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
        return info

    def enter_maintenance(self) -> MaintenanceState:
        mode = self.config.gc_mode
        self._switched_at = None
        info = self.ready_for_maintenance()
        if mode is GcMode.ONLINE:
            self._log.warning("gc_mode online: the registry keeps accepting writes during GC")
            return MaintenanceState.ONLINE
        name = container_name(info)
        containers = self._containers
        for leftover in self._leftovers(info):
            containers.remove(leftover.id, leftover.name)
        if mode is GcMode.STOP:
            self._switched_at = time.time()
            containers.stop(info["Id"], name)
            return MaintenanceState.STOPPED
        # readonly: create the twin first (nothing changes yet), then switch.
        twin_id = self._create_twin(info)
        try:
            self._switched_at = time.time()
            containers.stop(info["Id"], name)
        except RuntimeControlError:
            containers.remove(twin_id, name + TWIN_SUFFIX)
            raise
        try:
            containers.start(twin_id, f"start the read-only twin of {name}")
            containers.wait_answers(twin_id, name + TWIN_SUFFIX)
        except RuntimeControlError:
            self._log.error("the read-only twin did not come up: restoring the original")
            containers.remove(twin_id, name + TWIN_SUFFIX)
            containers.start_and_wait(info["Id"], name)
            raise
        return MaintenanceState.READ_ONLY

    def switched_at(self) -> float | None:
        return self._switched_at

    def run_gc(
        self, *, dry_run: bool = False, on_line: Callable[[str], None] | None = None
    ) -> GcOutcome:
        """The GC in the twin (readonly), in a one-off container (stop) or in the registry
        container itself (online); each line it prints goes to ``on_line`` as it arrives."""
        info = self._inspect_original()
        binary = registry_binary(info)
        args = gc_arguments(self._config_location(info).path, dry_run=dry_run)
        mode = self.config.gc_mode
        lines = GcLines(on_line)
        started = time.monotonic()
        if mode is GcMode.STOP:
            if info["State"].get("Running"):
                raise RuntimeControlError(
                    f"container {container_name(info)} is running: with gc_mode stop the GC "
                    "runs only while it is stopped; call enter_maintenance before run_gc"
                )
            code = self._gc_in_one_off(info, binary, args, lines)
        else:
            if mode is GcMode.READONLY:
                target = self._twin_of(info)
                if target is None:
                    raise RuntimeControlError(
                        f"no running read-only twin of {container_name(info)}: call "
                        "enter_maintenance before run_gc"
                    )
            else:
                target = info["Id"]
            code = self._containers.exec(target, [binary, *args], lines)
        seconds = time.monotonic() - started
        self._log.info(
            "garbage collection finished",
            dry_run=dry_run,
            returncode=code,
            seconds=round(seconds, 3),
            gc_mode=mode.value,
            lines=lines.count,
        )
        return GcOutcome(returncode=code, output=lines.output, seconds=seconds, lines=lines.count)

    def leave_maintenance(self) -> None:
        """Back to normal: remove the twin (or one-off container), then start the original
        (readonly, stop) or restart it (online), and wait until it answers. Idempotent."""
        info = self._inspect_original()
        name = container_name(info)
        if self.config.gc_mode is GcMode.ONLINE:
            self._containers.restart_and_wait(info["Id"], name)
            return
        for leftover in self._leftovers(info):
            self._containers.remove(leftover.id, leftover.name)
        self._containers.start_and_wait(info["Id"], name)

    def instances(self) -> list[tuple[str, str]]:
        """One container: verified through ``registry.url``, as ever (none listed here)."""
        return []

    # ---------------------------------------------------------------------------------------
    # Replicas (:mod:`retentiond.runtime.replicas` asks each of its containers)

    @property
    def name(self) -> str:
        """The container's name as configured (``runtime.container``, or one of
        ``runtime.containers``)."""
        return self.config.container

    def storage_identity(self) -> str | None:
        """What storage the registry serves (:func:`~retentiond.runtime.docker_specs.
        storage_identity`); None when it cannot be told."""
        info = self._inspect_original()
        text = self.registry_config_text() if self._config_needed(info) else None
        return storage_identity(info, text)

    def instance_url(self) -> str | None:
        """Where this instance answers itself (:func:`~retentiond.runtime.docker_specs.
        instance_address`), found now (a restarted container may have a new address)."""
        info = self._inspect_original()
        text = self.registry_config_text() if self._config_needed(info) else None
        return instance_address(info, text)

    def _config_needed(self, info: Inspect) -> bool:
        """Whether the environment leaves something to the config file (storage, address)."""
        env = container_env(info)
        return (
            root_needs_config_file(env)
            or not env.get("REGISTRY_HTTP_ADDR")
            or (env.get("REGISTRY_STORAGE") == "s3")
        )

    # ---------------------------------------------------------------------------------------
    # The registry's version and config file

    def _config_location(self, info: Inspect) -> ConfigLocation:
        """The config file of the registry ``info``: the setting, its command or environment,
        else its version's default (``registry --version`` run in it, once: kept for the
        container's id until the next :meth:`check`)."""
        explicit = self.config.registry_config
        if not needs_version(explicit, info):
            found = locate_registry_config(explicit, info)
            assert found is not None
            return found
        if self._location is not None and self._location[0] == info["Id"]:
            return self._location[1]
        error = None
        version = None
        try:
            version = self._registry_version(info)
        except RuntimeControlError as exc:
            error = str(exc)
        found = locate_registry_config(explicit, info, version)
        if found is None:
            raise RuntimeControlError(self._unlocated_message(info, error, version))
        self._log.info("registry config found", path=found.path, how=found.how)
        self._location = (info["Id"], found)
        return found

    def _registry_version(self, info: Inspect) -> RegistryVersion:
        """``registry --version`` run in the (running) registry container, parsed."""
        name = container_name(info)
        if not info["State"].get("Running"):
            raise RuntimeControlError(
                f"cannot ask the registry in container {name} for its version: the container "
                f"is not running ({info['State'].get('Status')})"
            )
        cmd = [registry_binary(info), "--version"]
        code, output = self._containers.exec_output(info["Id"], cmd, "registry --version")
        version = parse_registry_version(output) if code == 0 else None
        if version is None:
            said = output.strip().replace("\n", " | ")[:300] or "nothing"
            raise RuntimeControlError(
                f"`{' '.join(cmd)}` in container {name} exited with code {code} and printed "
                f"no version: {said}"
            )
        return version

    def _unlocated_message(
        self, info: Inspect, version_error: str | None, version: RegistryVersion | None = None
    ) -> str:
        name = container_name(info)
        why = version_error or f"{version or 'its version'} has no known default config file"
        return (
            f"cannot tell which config file the registry in container {name} reads: its "
            f"command names none, REGISTRY_CONFIGURATION_PATH is not set, and {why}; set "
            "runtime.registry_config to the file's path inside the container"
        )

    # ---------------------------------------------------------------------------------------
    # The registry container and the containers made for it

    def _inspect_original(self) -> Inspect:
        """The original container's inspect data; remembers its id (its name may be reused by
        nobody else while we run, but an id is exact)."""
        ref = self._original_id or self.config.container
        try:
            info = self._containers.inspect(ref)
        except RuntimeControlError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise RuntimeControlError(self._not_found_message(ref)) from exc.__cause__
            raise
        if made_by_retentiond(info):
            raise RuntimeControlError(
                f"container {container_name(info)} is a temporary container made by retentiond, "
                "not the registry: set runtime.container to the registry container's name"
            )
        self._original_id = info["Id"]
        return info

    def _not_found_message(self, ref: str) -> str:
        setting = "runtime.containers" if self.config.containers else "runtime.container"
        message = f"registry container {ref!r} not found ({setting})"
        try:
            left = self._containers.labelled_by_retentiond()
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
                f"{', '.join(candidates)}; "
                + (
                    "list the registry's in runtime.containers"
                    if self.config.containers
                    else "set runtime.container to one of them"
                )
            )
        return (
            f"{message}; no running container looks like a registry: start it, or set "
            f"{setting} to its name (`docker ps` lists them)"
        )

    def _registry_like_names(self) -> list[str]:
        names: list[str] = []
        for c in self._containers.running():
            if looks_like_registry(c):
                names.extend(n.lstrip("/") for n in c.get("Names", [])[:1])
        return sorted(names)

    def _leftovers(self, info: Inspect) -> list[Any]:
        """Containers made by retentiond for this registry: labelled with its id, or named
        after it and labelled by retentiond (a registry recreated since the crash)."""
        found = self._containers.labelled_by_retentiond()
        return [c for c in found if is_leftover(info, c.name, c.labels)]

    def _twin_of(self, info: Inspect) -> str | None:
        for c in self._leftovers(info):
            if c.labels.get(ROLE_LABEL) == "readonly" and c.status == "running":
                return str(c.id)
        return None

    # ---------------------------------------------------------------------------------------
    # Creating the twin and the one-off GC container (their specs: docker_specs)

    def _run_id(self) -> str:
        """The run that creates containers: the one given, else the run bound to the logs."""
        return self.run_id or str(structlog.contextvars.get_contextvars().get("run_id", ""))

    def _create_twin(self, info: Inspect) -> str:
        """Create (not start) the read-only twin of the registry ``info``; its id."""
        spec = twin_spec(info, self._run_id())
        self._log.info("creating the read-only twin", container=spec.name)
        return self._containers.create(spec, "the read-only twin")

    def _gc_in_one_off(self, info: Inspect, binary: str, args: list[str], lines: GcLines) -> int:
        """gc_mode stop: run the GC in a new container from the same image, mounts, environment
        and network mode (object storage drivers need the network), then remove it; its exit
        code, its output given to ``lines``."""
        spec = gc_container_spec(info, binary, args, self._run_id())
        gc_id = self._containers.create(spec, "the GC container")
        try:
            self._log.info("running the GC in a one-off container", container=spec.name, args=args)
            return self._containers.run_to_end(gc_id, spec.name, lines)
        finally:
            self._containers.remove(gc_id, spec.name)

    # ---------------------------------------------------------------------------------------
    # Storage location

    def _storage_root(self, info: Inspect) -> str | None:
        """The registry's filesystem rootdirectory as the container sees it; None when it
        stores elsewhere (s3, azure, gcs...). Reads the registry's config file only when the
        environment does not say."""
        env = container_env(info)
        text = None
        if root_needs_config_file(env):
            try:
                text = self.registry_config_text()
            except RuntimeControlError:
                text = None
        return storage_root(env, text)
