"""The edge between the docker SDK and retentiond's errors.

Every exception of the docker SDK and of the transport under it (requests, urllib3, the socket)
becomes a :class:`~retentiond.errors.RuntimeControlError` saying what could not be done and what
to do: start the daemon, fix the socket's permissions, or what the daemon itself explained.
The original exception stays the error's ``__cause__``, so callers can still tell a missing
container (``docker.errors.NotFound``) from the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from retentiond.errors import RuntimeControlError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
SOCKET_FIX = "run retentiond as root or add its user to the docker group"
_UNREACHABLE = (
    "No such file or directory",
    "Connection refused",
    "FileNotFoundError",
    "Failed to establish a new connection",
    "Connection aborted",
)


@contextmanager
def translated(action: str, daemon_address: Callable[[], str]) -> Iterator[None]:
    """Run the block; turn any docker, requests or OS exception into RuntimeControlError
    ``cannot <action>: ...``. ``daemon_address`` (asked only on a failure) says where the
    daemon was expected, for the messages about an unreachable or forbidden socket."""
    try:
        yield
    except RuntimeControlError:
        raise
    except docker.errors.NotFound as exc:
        raise RuntimeControlError(f"cannot {action}: {explanation(exc)}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise RuntimeControlError(transport_message(action, exc, daemon_address())) from exc


def transport_message(action: str, exc: BaseException, host: str) -> str:
    """The message for ``exc`` raised while doing ``action`` with the daemon at ``host``."""
    text = chain_text(exc)
    if "Permission denied" in text or "PermissionError" in text:
        return f"cannot {action}: no permission on {host.removeprefix('unix://')}: {SOCKET_FIX}"
    if any(s in text for s in _UNREACHABLE):
        return (
            f"cannot {action}: the Docker daemon does not answer at {host}: start it "
            "(`systemctl start docker`) or point DOCKER_HOST at it"
        )
    return f"cannot {action}: {explanation(exc)}"


def chain_text(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and of every exception it was raised from or during."""
    parts = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return " | ".join(parts)


def explanation(exc: BaseException) -> str:
    """The daemon's own explanation of an API error, else the exception's text."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)
