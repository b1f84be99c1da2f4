"""The registry's requests sent over one kept-alive ``http.client`` connection.

Verification sends tens of thousands of small requests to a registry that shares the CPUs with
us. httpx spends about 1.3 ms of CPU on each (measured with ``bench.verify``: 770 µs of ours
per request against 1,100 µs of the registry's), ``http.client`` a third of that. So a
:class:`~retentiond.registry.RegistryClient` sends its requests through a :class:`Wire` when
nothing asks for more than one plain connection to the registry:

- the same TLS trust as httpx (its own :func:`httpx.create_ssl_context`: certifi, or
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``; or no verification with ``tls_verify: false``);
- basic credentials sent with every request, as httpx does;
- no redirect followed (the caller reads ``Location``);
- a request on a kept-alive connection the registry closed meanwhile is sent again once, on
  a new connection (every request sent here may be: none changes anything but an upload
  started and cancelled by the read-only probe).

A proxy from the environment (``HTTPS_PROXY`` and the like, unless ``NO_PROXY`` exempts the
registry) is httpx's to honour: :func:`wire_for` gives no wire then.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import httpx

#: the characters a path and query may hold as they are (RFC 3986), ``%`` included
_URL_SAFE = "/:@!$&'()*+,;=?%-._~"


@dataclass(frozen=True, slots=True)
class Answer:
    """A registry's answer: its status, headers (names in lower case) and body; ``url`` is the
    URL asked (a ``Location`` is relative to it)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    url: str

    def location(self) -> str | None:
        """The absolute URL ``Location`` names, if any."""
        location = self.headers.get("location")
        return urljoin(self.url, location) if location else None


class WireError(Exception):
    """The request got no answer (the message says why)."""


class Wire:
    """One connection to the registry at ``url``, for one thread at a time."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None,
        verify: bool,
        timeout: float,
        user_agent: str,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._timeout = timeout
        self._context: ssl.SSLContext | None = (
            httpx.create_ssl_context(verify=verify) if self._https else None
        )
        self._headers = {"User-Agent": user_agent}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        """Send ``method path`` (``path`` below the URL's own path) and read the whole answer.
        Raises :class:`WireError` when there is none."""
        # what is not allowed in a URL (a space, a control character, non-ASCII: a hostile
        # name from the tree) is percent-encoded, as httpx does; the rest is sent as it is
        target = quote(self._base + path, safe=_URL_SAFE)
        sent = {**self._headers, **(headers or {})}
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect()
            try:
                connection.request(method, target, headers=sent)
                response = connection.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                # a kept-alive connection the registry closed since: once more, afresh
                if reused and attempt == 1 and _closed_meanwhile(exc):
                    continue
                raise WireError(_reason(exc)) from exc
            if response.will_close:
                self.close()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            return Answer(response.status, answer_headers, body, self._origin + target)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            self._connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        else:
            self._connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._timeout
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _closed_meanwhile(exc: BaseException) -> bool:
    """Whether ``exc`` is what a kept-alive connection the server closed gives."""
    return isinstance(
        exc,
        http.client.RemoteDisconnected
        | http.client.BadStatusLine
        | BrokenPipeError
        | ConnectionResetError
        | ConnectionAbortedError,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc}"
    return str(exc) or type(exc).__name__


def proxied(url: str) -> bool:
    """Whether the environment names a proxy for ``url`` that ``NO_PROXY`` does not exempt
    it from (httpx would send through it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def wire_for(
    url: str,
    *,
    auth: tuple[str, str] | None,
    verify: bool,
    timeout: float,
    user_agent: str,
) -> Wire | None:
    """A :class:`Wire` to ``url``; None when a proxy applies (or the URL is not plain
    http(s)): then httpx sends the requests."""
    if proxied(url):
        return None
    try:
        return Wire(url, auth=auth, verify=verify, timeout=timeout, user_agent=user_agent)
    except ValueError:
        return None
