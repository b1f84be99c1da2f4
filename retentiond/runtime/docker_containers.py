"""The Docker calls of the Docker runtime: one container at a time, through the docker SDK.

Each operation translates every failure into
:class:`~retentiond.errors.RuntimeControlError` (:mod:`retentiond.runtime.docker_errors`) and
waits for its effect where the next step depends on it: a started registry until it answers
``GET /v2/``, a removed container until it is gone, a GC until it ends however long it takes
(its output read as it comes).
Which containers to create, stop or remove, and when, is decided by
:class:`~retentiond.runtime.docker.DockerRuntime`.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from typing import Any

import docker
import docker.errors
import httpx

from retentiond.errors import RuntimeControlError
from retentiond.logs import get_logger
from retentiond.runtime.base import GcLines
from retentiond.runtime.docker_errors import DEFAULT_DOCKER_HOST, translated
from retentiond.runtime.docker_specs import TWIN_LABEL, ContainerSpec, Inspect, probe_address

#: Without a published port, a started container counts as up once it ran this long.
UNPROBED_GRACE_SECONDS = 2.0


class Containers:
    """Containers of the Docker daemon ``client`` (default ``docker.from_env()``, created on
    first use so that constructing never fails). ``stop_timeout`` is the grace given to a
    container on stop; ``ready_timeout`` how long a started registry may take to answer."""

    def __init__(
        self,
        client: docker.DockerClient | None,
        *,
        stop_timeout: int,
        ready_timeout: float,
    ) -> None:
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self._client = client
        # the run's id reaches log lines through structlog's context (bound by the run)
        self._log = get_logger(component="runtime", runtime="docker")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self.translated("connect to the Docker daemon"):
                self._client = docker.from_env()
        return self._client

    def translated(self, action: str) -> AbstractContextManager[None]:
        """Translate every exception of the docker SDK (and the transport under it) into
        RuntimeControlError saying what failed and what to do."""
        return translated(action, self._base_url)

    def _base_url(self) -> str:
        """Where the daemon is expected: the client's socket path or URL, else DOCKER_HOST."""
        if self._client is not None:
            adapter = getattr(self._client.api, "_custom_adapter", None)
            socket_path = getattr(adapter, "socket_path", None)
            if socket_path:
                return f"unix://{socket_path}"
            return str(self._client.api.base_url)
        return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    # ---------------------------------------------------------------------------------------
    # Looking

    def inspect(self, container: str) -> Inspect:
        with self.translated(f"inspect container {container}"):
            info: Inspect = self.client.api.inspect_container(container)
            return info

    def labelled_by_retentiond(self) -> list[Any]:
        """Every container, in any state, that carries retentiond's label (docker SDK
        ``Container`` objects); one removed while they are listed is left out."""
        with self.translated("list retentiond's temporary containers"):
            found: list[Any] = self.client.containers.list(
                all=True, filters={"label": TWIN_LABEL}, ignore_removed=True
            )
            return found

    def running(self) -> list[dict[str, Any]]:
        """The running containers as ``docker ps`` lists them."""
        with self.translated("list containers"):
            listed: list[dict[str, Any]] = self.client.api.containers()
            return listed

    def archive(self, container_id: str, path: str, action: str) -> bytes:
        """The tar archive of ``path`` in the container (running or not)."""
        with self.translated(action):
            chunks, _stat = self.client.api.get_archive(container_id, path)
            return b"".join(chunks)

    # ---------------------------------------------------------------------------------------
    # Changing

    def create(self, spec: ContainerSpec, what: str) -> str:
        """Create the container ``spec`` (``what`` it is, for errors) and connect it to its
        other networks; its id. A container that cannot join a network is removed again."""
        api = self.client.api
        with self.translated(f"create {what} {spec.name}"):
            created = api.create_container(**spec.create_arguments())
        container_id = str(created["Id"])
        try:
            for join in spec.joins:
                with self.translated(f"connect {spec.name} to network {join.network}"):
                    api.connect_container_to_network(
                        container_id,
                        join.network,
                        aliases=join.aliases,
                        ipv4_address=join.ipv4_address,
                        ipv6_address=join.ipv6_address,
                    )
        except RuntimeControlError:
            self.remove(container_id, spec.name)
            raise
        return container_id

    def start(self, container_id: str, action: str) -> None:
        with self.translated(action):
            self.client.api.start(container_id)

    def start_and_wait(self, container_id: str, name: str) -> None:
        """Start the registry container and wait until it answers."""
        self._log.info("starting the registry container", container=name)
        self.start(container_id, f"start container {name}")
        self.wait_answers(container_id, name)

    def restart_and_wait(self, container_id: str, name: str) -> None:
        with self.translated(f"restart container {name}"):
            self.client.api.restart(container_id, timeout=self.stop_timeout)
        self.wait_answers(container_id, name)

    def stop(self, container_id: str, name: str) -> None:
        self._log.info("stopping the registry container", container=name)
        with self.translated(f"stop container {name}"):
            self.client.api.stop(container_id, timeout=self.stop_timeout)

    def remove(self, container_id: str, name: str) -> None:
        """Remove the container (its volumes stay) and wait until it is gone; nothing to do
        when it is gone already."""
        try:
            with self.translated(f"remove container {name}"):
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
                self.inspect(container_id)
            except RuntimeControlError as exc:
                if isinstance(exc.__cause__, docker.errors.NotFound):
                    return
                raise
            time.sleep(0.05)
        raise RuntimeControlError(
            f"container {container_id[:12]} is still there {timeout:.0f}s "
            "after its removal: check `docker ps -a` and the daemon's log"
        )

    # ---------------------------------------------------------------------------------------
    # Running a command

    def run_to_end(self, container_id: str, name: str, lines: GcLines) -> int:
        """Start the created container and give its output to ``lines`` as it comes, until it
        ends however long it takes; its exit code. The container stays: the caller removes
        it."""
        api = self.client.api
        action = f"run the GC container {name}"
        with self.translated(action):
            # attached before the start (as `docker run` does), so no line is missed
            output = api.attach(container_id, stdout=True, stderr=True, stream=True, demux=True)
        try:
            with self.translated(action):
                api.start(container_id)
            self._pass_lines(output, action, lines)
        finally:
            output.close()
        with self.translated(action):
            # No read timeout: a GC of a large tree runs for hours.
            result = api.wait(container_id, timeout=None)
        return int(result.get("StatusCode", -1))

    def exec(
        self, container_id: str, cmd: list[str], lines: GcLines, *, what: str = "the GC"
    ) -> int:
        """``docker exec`` of ``what`` (for logs and errors), its output given to ``lines`` as
        it comes, until it ends however long it takes; its exit code."""
        api = self.client.api
        self._log.info(f"running {what} with docker exec", container=container_id[:12], cmd=cmd)
        action = f"run {' '.join(cmd)} in container {container_id[:12]}"
        with self.translated(action):
            exec_id = api.exec_create(container_id, cmd, stdout=True, stderr=True)["Id"]
            # The attached exec stream is read without the client's timeout (a 4 s silent
            # exec works with timeout=2), so a GC that prints nothing for minutes is fine.
            output = api.exec_start(exec_id, stream=True, demux=True)
        try:
            self._pass_lines(output, action, lines)
        finally:
            output.close()
        with self.translated(action):
            code = api.exec_inspect(exec_id).get("ExitCode")
        if code is None:
            raise RuntimeControlError(
                f"{what} in container {container_id[:12]} did not finish (no exit code): "
                "check `docker logs` of the container"
            )
        return int(code)

    def exec_output(self, container_id: str, cmd: list[str], what: str) -> tuple[int, str]:
        """``docker exec`` of a short command (``what`` it is): its exit code and its last
        lines of output (stdout and stderr)."""
        lines = GcLines(tail=20)
        code = self.exec(container_id, cmd, lines, what=what)
        return code, lines.output

    def _pass_lines(self, output: Any, action: str, lines: GcLines) -> None:
        """Give a demultiplexed attach stream (``(stdout, stderr)`` chunks, one of them None)
        to ``lines``, stdout and stderr cut into lines apart; the stream's errors are
        translated, those of ``lines`` (the caller's ``on_line``) are not."""
        stdout, stderr = lines.stream(), lines.stream()
        chunks = iter(output)
        while True:
            with self.translated(action):
                chunk = next(chunks, None)
            if chunk is None:
                break
            out, err = chunk
            if out:
                stdout.feed(out)
            if err:
                stderr.feed(err)
        stdout.close()
        stderr.close()

    # ---------------------------------------------------------------------------------------
    # Readiness

    def wait_answers(self, container_id: str, name: str) -> None:
        """Wait until the container answers ``GET /v2/`` (200 or 401) on its published port;
        with no published port, until it has been running for a couple of seconds."""
        deadline = time.monotonic() + self.ready_timeout
        running_since: float | None = None
        said_unprobed = False
        while True:
            info = self.inspect(container_id)
            state = info["State"]
            if state.get("Running"):
                running_since = running_since or time.monotonic()
                url = probe_address(info)
                if url is None:
                    if not said_unprobed:
                        self._log.info(
                            "no published port to probe: waiting for the container to keep running",
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
            with self.translated("read the container's log"):
                return _text(self.client.api.logs(container_id, tail=20)).strip()
        except RuntimeControlError as exc:
            return f"(unavailable: {exc})"


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
    """What the daemon returned for a log, as text."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if raw is None:
        return ""
    return str(raw)
