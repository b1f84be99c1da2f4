"""The readers of in-use protection (``protect:``): Docker hosts and files of references.

Each source gives :class:`~retentiond.core.protection.ProtectedReference` values; the decision
is :mod:`retentiond.core.protection`'s and the planner's. :func:`read_protection` never raises:
a source that cannot be read (a Docker host that does not answer, a file missing, unreadable,
too large or with a line that is not an image reference) is recorded in the result's
``sources`` with the reason, and the result is then not ``available``: ``apply`` refuses,
``serve`` skips the window (``windows_skipped_total{reason="protection_unavailable"}``),
``plan`` shows the problem. A source that cannot be read may be hiding an image in use, so
nothing is deleted on the strength of the others.

Docker hosts: every container, running or stopped (``GET /containers/json?all=1``), and the
image it was created from (``GET /images/<id>/json``). A container's image id is its config
digest; what pins it in a registry is the image's ``RepoDigests`` (``repo@sha256:<manifest or
index digest>``: for a multi-arch image pulled by tag, the index's). Every RepoDigest is
protected, by repository path whatever its host (see :mod:`retentiond.core.protection`), and
the image id too in those repositories (with Docker's containerd image store the id is the
manifest's or index's digest). An image with no RepoDigests was built or loaded locally: no
registry holds it, nothing to protect.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from retentiond.core.protection import (
    BadReference,
    ImageReference,
    ProtectedReference,
    Protection,
    ProtectionSource,
    parse_reference,
)
from retentiond.logs import get_logger
from retentiond.protection_config import ProtectConfig

#: seconds a Docker host may take to answer one request
DOCKER_TIMEOUT = 15
#: a file of references larger than this is refused (a cluster of 100,000 pods writes ~10 MiB)
MAX_FILE_BYTES = 64 * 1024 * 1024


class SourceUnreadable(Exception):
    """One protection source could not be read; the message says why and what to do."""


def read_protection(config: ProtectConfig) -> Protection:
    """Every source of ``config``, read now; see the module's docstring."""
    log = get_logger(component="protection")
    references: list[ProtectedReference] = []
    sources: list[ProtectionSource] = []
    readers: list[tuple[str, str, Callable[[], list[ProtectedReference]]]] = []
    for host in config.docker_hosts:
        readers.append(("docker", host, partial(docker_references, host)))
    for path in config.files:
        readers.append(("file", str(path), partial(file_references, path)))
    for kind, source, read in readers:
        try:
            found = read()
        except SourceUnreadable as exc:
            log.warning("protection source unreadable", kind=kind, source=source, error=str(exc))
            sources.append(ProtectionSource(kind, source, error=str(exc)))
            continue
        references += found
        sources.append(ProtectionSource(kind, source, references=len(found)))
    protection = Protection(references, sources)
    if config.enabled:
        log.debug(
            "protection read",
            references=protection.references,
            unreadable=len(protection.problems),
        )
    return protection


def protection_reader(config: ProtectConfig) -> Callable[[], Protection]:
    """A function reading ``config``'s sources each time it is called."""
    return lambda: read_protection(config)


# ---------------------------------------------------------------------------------- Docker


def docker_references(host: str) -> list[ProtectedReference]:
    """What the containers of the Docker daemon at ``host`` use; SourceUnreadable when the
    daemon cannot be asked."""
    try:
        client = docker.DockerClient(base_url=host, timeout=DOCKER_TIMEOUT)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise SourceUnreadable(_docker_failure("connect", host, exc)) from exc
    try:
        return _containers_references(client.api, host)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise SourceUnreadable(_docker_failure("list the containers", host, exc)) from exc
    finally:
        client.close()


def _containers_references(api: Any, host: str) -> list[ProtectedReference]:
    users: dict[str, str] = {}  # image id -> the first container using it
    for container in api.containers(all=True):
        image_id = container.get("ImageID") or ""
        names = container.get("Names") or []
        name = names[0].lstrip("/") if names else str(container.get("Id", ""))[:12]
        if image_id:
            users.setdefault(image_id, name)
    out: list[ProtectedReference] = []
    for image_id, name in users.items():
        try:
            image = api.inspect_image(image_id)
        except docker.errors.NotFound:
            # removed with its container between the two requests: nothing runs from it
            continue
        reason = f"in use by container {name} on {host}"
        repo_digests = image.get("RepoDigests") or []
        for text in repo_digests:
            try:
                ref = parse_reference(text)
            except BadReference:
                continue  # Docker wrote it: never malformed in practice
            out.append(ProtectedReference(ref, reason))
            if ref.path is not None and image_id.startswith("sha256:"):
                out.append(
                    ProtectedReference(ImageReference(ref.host, ref.path, None, image_id), reason)
                )
    return out


def _docker_failure(action: str, host: str, exc: BaseException) -> str:
    text = _chain(exc)
    if "Permission denied" in text:
        why = "permission denied: run retentiond as root or add its user to the docker group"
    elif any(
        s in text
        for s in ("No such file", "Connection refused", "Failed to establish", "timed out")
    ):
        why = "the Docker daemon does not answer there"
    else:
        why = text.splitlines()[0][:300] if text else type(exc).__name__
    return f"cannot {action} at {host}: {why}"


def _chain(exc: BaseException | None) -> str:
    parts: list[str] = []
    while exc is not None and len(parts) < 8:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " / ".join(parts)


# ------------------------------------------------------------------------------------ files


def file_references(path: Path) -> list[ProtectedReference]:
    """The references in ``path``, one a line (``#`` starts a comment, blank lines are
    skipped); SourceUnreadable when it is missing, not a regular file, too large, not UTF-8,
    or has a line that is not an image reference."""
    text = _read_file(path)
    reason = f"listed in {path}"
    out: list[ProtectedReference] = []
    for number, line in enumerate(text.splitlines(), 1):
        content = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not content or content.startswith("#"):
            continue
        try:
            out.append(ProtectedReference(parse_reference(content), reason))
        except BadReference as exc:
            raise SourceUnreadable(
                f"{path}:{number}: {content[:80]!r} is not an image reference: {exc}"
            ) from exc
    return out


def _read_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceUnreadable(
            f"{path} does not exist: the job that writes it has not run, or the path is wrong"
        ) from None
    except OSError as exc:
        raise SourceUnreadable(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceUnreadable(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise SourceUnreadable(
                f"{path} has {info.st_size} bytes, more than {MAX_FILE_BYTES}; is it the "
                "right file?"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SourceUnreadable(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceUnreadable(f"{path} is not UTF-8 text (byte {exc.start})") from exc
