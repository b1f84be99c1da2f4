"""Several registry containers on one storage and one redis (``runtime.containers``): one
maintenance window across all of them.

Each container is driven by a :class:`~retentiond.runtime.docker.DockerRuntime` of its own, so
each switch is exactly the one-container switch (twin, stop, restart) and each container's
crash recovery is the one-container recovery. This class decides the order:

- :meth:`ReplicatedDockerRuntime.enter_maintenance`: every container is checked first (running,
  no ``--rm``, config file known), then switched one after the other (so that behind a load
  balancer the others keep answering while one switches); if one cannot be switched, those
  already switched are brought back, then the error is raised: no instance is left read-only
  or stopped. With ``gc_mode: readonly``, each instance that answers without credentials must
  then refuse an upload (405) before the window goes on.
- :meth:`~ReplicatedDockerRuntime.run_gc`: once, in the first container (its twin, its
  one-off GC container, or itself online): the storage is shared.
- :meth:`~ReplicatedDockerRuntime.leave_maintenance` and
  :meth:`~ReplicatedDockerRuntime.recover`: every container, each attempted even when an
  earlier one failed; the errors are raised together at the end.
- :meth:`~ReplicatedDockerRuntime.instances`: the URL of each instance for the verification
  after the window (``runtime.instance_urls``, else found from Docker now: its published port,
  else its address on its network).

The shared redis is flushed once by the run (it is one cache): nothing here touches it.
``check`` refuses containers that do not serve the same storage when Docker shows it (the
host directory of the mount that holds the filesystem root, or the s3 endpoint, bucket and
root directory); where it cannot be told, sharing one storage is the operator's promise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TypeVar

import docker
import httpx

from retentiond.config import RuntimeConfig
from retentiond.errors import RuntimeControlError
from retentiond.logs import get_logger
from retentiond.runtime.base import GcOutcome, MaintenanceState
from retentiond.runtime.discovery import ConfigLocation, RegistryFacts
from retentiond.runtime.docker import DockerRuntime

T = TypeVar("T")

#: the repository an unauthenticated upload is tried on to prove an instance is read-only
PROBE_REPOSITORY = "retentiond-probe"


class ReplicatedDockerRuntime:
    """Controls the containers ``config.containers`` (names or ids) as one registry.

    ``client``, ``stop_timeout`` and ``ready_timeout`` are those of each container's
    :class:`DockerRuntime`; ``probe_timeout`` how long an instance may take to answer the
    read-only probe."""

    def __init__(
        self,
        config: RuntimeConfig,
        client: docker.DockerClient | None = None,
        run_id: str = "",
        *,
        stop_timeout: int = 10,
        ready_timeout: float = 60.0,
        probe_timeout: float = 30.0,
    ) -> None:
        if not config.containers:
            raise ValueError("ReplicatedDockerRuntime needs runtime.containers")
        self.config = config
        self.run_id = run_id
        self.probe_timeout = probe_timeout
        self.each = [
            DockerRuntime(
                dataclasses.replace(config, container=name),  # (containers: for messages)
                client,
                run_id,
                stop_timeout=stop_timeout,
                ready_timeout=ready_timeout,
            )
            for name in config.containers
        ]
        self._log = get_logger(component="runtime", runtime="docker-replicas")

    @property
    def first(self) -> DockerRuntime:
        """The container the GC runs in (and whose config file the run reads)."""
        return self.each[0]

    # ---------------------------------------------------------------------------------------
    # Runtime protocol

    def describe(self) -> str:
        names = ", ".join(self.config.containers)
        return f"docker containers {names} (gc_mode {self.config.gc_mode.value})"

    def check(self) -> list[str]:
        """Each container's problems, then whether they serve one storage and run one major
        version, and whether each instance's URL can be found."""
        problems: list[str] = []
        for rt in self.each:
            problems += rt.check()
        if problems:
            return problems
        return self._shared_problems()

    def _shared_problems(self) -> list[str]:
        problems: list[str] = []
        storages = {rt.name: rt.storage_identity() for rt in self.each}
        known = {name: s for name, s in storages.items() if s is not None}
        if len(set(known.values())) > 1:
            said = "; ".join(f"{name}: {storage}" for name, storage in known.items())
            problems.append(
                "runtime.containers do not serve the same storage, so one GC would collect "
                f"blobs the others still serve ({said}); list only the instances of one "
                "registry, mounting the same directory or bucket"
            )
        elif len(known) < len(storages):
            unknown = ", ".join(n for n, s in storages.items() if s is None)
            self._log.warning(
                "cannot tell which storage these containers serve; retentiond trusts that "
                "every runtime.containers entry serves the same storage",
                containers=unknown,
            )
        majors = {rt.name: rt.registry_major() for rt in self.each}
        if len({m for m in majors.values() if m is not None}) > 1:
            said = ", ".join(f"{n}: v{m}" for n, m in majors.items() if m is not None)
            problems.append(
                f"runtime.containers run different registry versions ({said}); the plan and "
                "the GC follow one version's rules: upgrade every instance to one version"
            )
        if not self.config.instance_urls:
            for rt in self.each:
                if rt.instance_url() is None:
                    problems.append(
                        f"cannot find the address of container {rt.name} (no published port, "
                        "no network address) to verify through it; set runtime.instance_urls"
                    )
        return problems

    def registry_facts(self) -> RegistryFacts:
        """The first container's version and config file for ``check``, with what would stop
        a run across all of them, and a line per instance."""
        facts = self.first.registry_facts()
        problems = list(facts.problems)
        lines = []
        for n, rt in enumerate(self.each):
            if n > 0:
                problems += rt.registry_facts().problems
            url = self._url_of(n)
            lines.append(
                f"{rt.name}: storage {rt.storage_identity() or 'unknown'}, "
                f"verified at {url or 'unknown'}"
            )
        if not problems:
            problems = self._shared_problems()
        return dataclasses.replace(
            facts,
            container=", ".join(rt.name for rt in self.each),
            problems=tuple(problems),
            instances=tuple(lines),
        )

    def registry_config_text(self) -> str | None:
        return self.first.registry_config_text()

    def registry_major(self) -> int | None:
        return self.first.registry_major()

    def config_location(self) -> ConfigLocation:
        return self.first.config_location()

    def recover(self) -> bool:
        """Every container's recovery (twins and GC containers removed, originals started),
        each attempted even when another fails; True when anything was done."""
        done = self._every("recover", lambda rt: rt.recover())
        return any(done)

    def enter_maintenance(self) -> MaintenanceState:
        """Check every container, then switch them one after the other; a failure brings
        the ones already switched back before it is raised."""
        for rt in self.each:  # nothing changes before every container is known ready
            rt.ready_for_maintenance()
        switched: list[DockerRuntime] = []
        state = MaintenanceState.ONLINE
        try:
            for rt in self.each:
                state = rt.enter_maintenance()
                switched.append(rt)
            if state is MaintenanceState.READ_ONLY:
                self._prove_read_only()
        except BaseException as exc:
            self._log.error(
                "switching the instances failed: bringing back those already switched",
                error=str(exc),
                switched=[rt.name for rt in switched],
            )
            failures = []
            for rt in switched:
                try:
                    rt.leave_maintenance()
                except RuntimeControlError as back:
                    failures.append(str(back))
            if failures:
                raise RuntimeControlError(
                    f"{exc}; bringing the other instances back failed too: "
                    + "; ".join(failures)
                    + " (the next start retries: it recovers every container)"
                ) from exc
            raise
        return state

    def switched_at(self) -> float | None:
        """The first container's switch: from then on it refuses writes."""
        return self.first.switched_at()

    def run_gc(
        self, *, dry_run: bool = False, on_line: Callable[[str], None] | None = None
    ) -> GcOutcome:
        """One GC, in the first container (the storage is shared)."""
        return self.first.run_gc(dry_run=dry_run, on_line=on_line)

    def leave_maintenance(self) -> None:
        """Every container back read-write, each attempted even when another fails."""
        self._every("leave maintenance", lambda rt: rt.leave_maintenance())

    def instances(self) -> list[tuple[str, str]]:
        """``(container, URL)`` of every instance: ``runtime.instance_urls``, else found from
        Docker now; an instance whose address cannot be found has the URL ""."""
        return [(rt.name, self._url_of(n) or "") for n, rt in enumerate(self.each)]

    # ---------------------------------------------------------------------------------------

    def _url_of(self, n: int) -> str | None:
        if self.config.instance_urls:
            return self.config.instance_urls[n].rstrip("/")
        try:
            return self.each[n].instance_url()
        except RuntimeControlError as exc:
            name = self.each[n].name
            self._log.warning("instance address unknown", container=name, error=str(exc))
            return None

    def _every(self, what: str, action: Callable[[DockerRuntime], T]) -> list[T]:
        """``action`` on every container in order; the errors raised together at the end."""
        results: list[T] = []
        failures: list[str] = []
        for rt in self.each:
            try:
                results.append(action(rt))
            except RuntimeControlError as exc:
                self._log.error(f"{what} failed", container=rt.name, error=str(exc))
                failures.append(str(exc))
        if failures:
            raise RuntimeControlError("; ".join(failures))
        return results

    def _prove_read_only(self) -> None:
        """Each instance must refuse an upload (405) now; one that accepts it is an error.
        An instance that wants credentials (401) cannot be asked this way: the run's own
        probe through ``registry.url`` (with the credentials) stands for it."""
        for n, rt in enumerate(self.each):
            url = self._url_of(n)
            if url is None:
                continue
            status = self._upload_status(url)
            if status == 405:
                continue
            if status in (401, 403):
                self._log.info("instance wants credentials: read-only not probed", url=url)
                continue
            raise RuntimeControlError(
                f"instance {rt.name} at {url} answered {status} to an upload after entering "
                "read-only mode; the GC would race with pushes. Check that "
                "REGISTRY_STORAGE_MAINTENANCE_READONLY reaches its registry process"
            )

    def _upload_status(self, url: str) -> int:
        """The status of ``POST /v2/<probe>/blobs/uploads/`` (an upload accepted is
        cancelled at once), waiting for the instance to answer."""
        deadline = time.monotonic() + self.probe_timeout
        with httpx.Client(base_url=url, verify=False, timeout=5.0) as http:
            while True:
                try:
                    response = http.post(f"/v2/{PROBE_REPOSITORY}/blobs/uploads/")
                except httpx.HTTPError as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeControlError(
                            f"instance at {url} does not answer ({exc}); set "
                            "runtime.instance_urls to where retentiond reaches each instance"
                        ) from exc
                    time.sleep(0.1)
                    continue
                if response.status_code == 202 and response.headers.get("Location"):
                    with contextlib.suppress(httpx.HTTPError):
                        http.delete(response.headers["Location"])
                return response.status_code
