"""The registry's HTTP API: health, the read-only probe, and verification of tags by real requests.

Requests go over one kept-alive ``http.client`` connection per client
(:mod:`retentiond.registry_wire`), or through httpx when a proxy from the environment applies or
a ``transport`` is given (httpx's own plug-in point). Every failure to get an answer is
translated into :class:`~retentiond.errors.RegistryError` here. Tests hand in a real registry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import httpx

from retentiond import __version__
from retentiond.core.inventory import ALL_MANIFEST_TYPES, MEDIA_SCHEMA1
from retentiond.core.manifests import ManifestError, parse_manifest
from retentiond.core.pulls import USER_AGENT_PRODUCT
from retentiond.errors import RegistryError
from retentiond.registry_wire import Answer, Wire, WireError, wire_for

#: how retentiond's requests name themselves: the pull tracker ignores them
USER_AGENT = f"{USER_AGENT_PRODUCT}{__version__}"

ACCEPT = ", ".join((*ALL_MANIFEST_TYPES, MEDIA_SCHEMA1))
#: the answers that send a blob's client to the storage (the registry's ``redirect``)
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


class RegistryClient:
    """A client of the registry, for one thread at a time (:meth:`clone` gives each thread its
    own)."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        verify: bool = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._settings = (auth, verify, timeout, transport)
        self._http = httpx.Client(
            base_url=self.url,
            auth=auth,
            verify=verify,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )
        self._wire: Wire | None = (
            wire_for(self.url, auth=auth, verify=verify, timeout=timeout, user_agent=USER_AGENT)
            if transport is None
            else None
        )
        #: requests sent so far
        self.requests = 0
        #: for the storage URLs blobs are redirected to (no credentials of the registry's)
        self._storage: httpx.Client | None = None

    def clone(self) -> RegistryClient:
        """A new client of the same registry with the same settings and connections of its
        own: threads do not share one client, whose connection pool (httpcore 1.0) can close
        a connection it has just given to another thread (encode/httpcore#1110)."""
        auth, verify, timeout, transport = self._settings
        return RegistryClient(
            self.url, auth=auth, verify=verify, timeout=timeout, transport=transport
        )

    def at(self, url: str) -> RegistryClient:
        """A client with the same settings (credentials, TLS) for the registry at ``url``:
        one instance of a replicated registry."""
        auth, verify, timeout, transport = self._settings
        return RegistryClient(url, auth=auth, verify=verify, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()
        if self._wire is not None:
            self._wire.close()
        if self._storage is not None:
            self._storage.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        self.requests += 1
        try:
            if self._wire is not None and path.startswith("/"):  # (httpx for a full URL)
                return self._wire.request(method, path, headers)
            response = self._http.request(method, path, headers=headers)
        except (WireError, httpx.HTTPError) as exc:
            raise RegistryError(
                f"registry at {self.url} did not answer {method} {path}: {exc}; check "
                "registry.url and that the registry is running"
            ) from exc
        return Answer(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content,
            str(response.url),
        )

    # -- health -------------------------------------------------------------------------------

    def answering(self) -> bool:
        """True when ``GET /v2/`` answers 200 (or 401: up, but wants credentials)."""
        try:
            return self._request("GET", "/v2/").status_code in (200, 401)
        except RegistryError:
            return False

    def check_health(self) -> None:
        response = self._request("GET", "/v2/")
        if response.status_code == 401:
            raise RegistryError(
                f"registry at {self.url} wants credentials: set registry.username and "
                "registry.password_file"
            )
        if response.status_code != 200:
            raise RegistryError(
                f"registry at {self.url} answered GET /v2/ with {response.status_code}"
            )

    def wait_answering(self, timeout: float = 60.0, interval: float = 0.1) -> float:
        """Wait until the registry answers; return the seconds waited."""
        start = time.monotonic()
        while not self.answering():
            if time.monotonic() - start > timeout:
                raise RegistryError(
                    f"registry at {self.url} did not answer within {timeout:.0f}s; look at its "
                    "logs (docker logs / journalctl)"
                )
            time.sleep(interval)
        return time.monotonic() - start

    def writes_refused(self, repository: str) -> bool:
        """Start an upload: 405 means read-only. An accepted upload is cancelled at once."""
        response = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        if response.status_code == 405:
            return True
        location = response.headers.get("location")
        if response.status_code == 202 and location:
            self._request("DELETE", location)
        return False

    # -- reading ------------------------------------------------------------------------------

    def catalog(self) -> list[str]:
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            response = self._request("GET", path)
            if response.status_code != 200:
                raise RegistryError(f"GET {path} answered {response.status_code}")
            names.extend(_json(response).get("repositories") or [])
            path = _next_page(response)
        return names

    def listed_tags(self, repository: str) -> set[str] | None:
        """The tags ``GET /v2/<repository>/tags/list`` names (every page); empty for a
        repository the registry does not know; None when it answers anything else."""
        tags: set[str] = set()
        path: str | None = f"/v2/{repository}/tags/list"
        while path:
            response = self._request("GET", path)
            if response.status_code == 404:
                return tags
            if response.status_code != 200:
                return None
            tags.update(_json(response).get("tags") or [])
            path = _next_page(response)
        return tags

    def tag_status(self, repository: str, tag: str) -> int:
        """The status ``HEAD`` of the tag's manifest answers (404: no such tag)."""
        return self._request(
            "HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}
        ).status_code

    def blob_status(self, repository: str, digest: str) -> int:
        """The status ``HEAD`` of a blob answers in ``repository`` (the registry answers 200
        only for a blob linked into that repository whose data is there).

        A registry on object storage answers with a redirect (307) to a presigned URL of the
        blob's ``data`` in the bucket, as clients pulling it are; that URL is asked too (HEAD,
        as presigned for it), without the registry's credentials, and its status is the
        answer: a redirect alone only says the registry believes the blob is there (its
        cache may be stale)."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self._request("HEAD", path)
        location = response.location()
        if response.status_code not in _REDIRECTS or not location:
            return response.status_code
        return self._storage_status(location, path)

    def _storage_status(self, url: str, asked: str) -> int:
        """The status of ``HEAD url`` (a storage URL a blob was redirected to), followed no
        further."""
        if self._storage is None:
            self._storage = httpx.Client(
                verify=self._settings[1],
                timeout=self._settings[2],
                headers={"User-Agent": USER_AGENT},
            )
        self.requests += 1
        try:
            return self._storage.head(url).status_code
        except httpx.HTTPError as exc:
            host = httpx.URL(url).host
            raise RegistryError(
                f"registry at {self.url} redirected HEAD {asked} to its storage at {host}, "
                f"which did not answer: {exc}; retentiond must reach the storage URLs the "
                "registry hands to clients (or set the registry's storage.redirect.disable)"
            ) from exc

    def check_manifest(
        self,
        repository: str,
        ref: str,
        expected: str,
        answers: Answers,
        parents: frozenset[str] = frozenset(),
    ) -> str:
        """GET ``ref``, expect ``expected``, then HEAD its blobs and check its children; ""
        when all answer, else the first problem. ``answers`` holds what this repository's
        digests answered already (shared by threads, each with a client of its own).
        ``parents``: the manifests above this one, so that a corrupt index naming one of them
        is a problem, not an endless descent."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPT}
        )
        if response.status_code != 200:
            return f"GET manifest {ref} answered {response.status_code}"
        digest = response.headers.get("docker-content-digest", "")
        if digest != expected:
            return f"manifest {ref} answered with digest {digest or 'none'}, expected {expected}"
        try:
            manifest = parse_manifest(digest, response.content)
        except ManifestError as exc:
            return f"manifest {ref} does not parse: {exc}"
        for blob in manifest.blobs:
            status = answers.blob(blob, partial(self.blob_status, repository, blob))
            if status != 200:
                return f"blob {blob} of {digest} answered {status}"
        above = parents | {digest}
        for child in manifest.children:
            if child in above:
                return f"manifest {digest} names {child}, a manifest above it, as its child"
            problem = answers.manifest(
                child, partial(self.check_manifest, repository, child, child, answers, above)
            )
            if problem:
                return problem
        return ""


def _json(answer: Answer) -> dict[str, Any]:
    """The JSON object an answer holds; empty when it holds anything else."""
    try:
        loaded = json.loads(answer.content)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _next_page(response: Answer) -> str | None:
    """The path of the next page a paginated answer names in its ``Link`` header, if any."""
    link = response.headers.get("link", "")
    return link[link.find("<") + 1 : link.find(">")] if 'rel="next"' in link else None


class Answers:
    """What one repository's blobs and child manifests answered, shared by the threads that
    check its tags, so that each is asked once.

    A thread that wants a blob another thread is asking waits for that answer (a blob's check
    is one request, it waits for nothing). A child manifest's check makes more checks, which
    could wait in a circle on a corrupt tree; so a child two threads want at the same moment is
    checked by both, and only the answer is shared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, Future[int]] = {}
        self._manifests: dict[str, str] = {}

    def blob(self, digest: str, ask: Callable[[], int]) -> int:
        """The status of blob ``digest``: ``ask()``'s answer, asked by the first caller."""
        with self._lock:
            future = self._blobs.get(digest)
            first = future is None
            if future is None:
                future = self._blobs[digest] = Future()
        if first:
            try:
                future.set_result(ask())
            except BaseException as exc:
                future.set_exception(exc)
                raise
        return future.result()

    def manifest(self, digest: str, check: Callable[[], str]) -> str:
        """The problem of child manifest ``digest`` ("" for none): the answer known, or
        ``check()``'s."""
        with self._lock:
            known = self._manifests.get(digest)
        if known is not None:
            return known
        problem = check()
        with self._lock:
            self._manifests[digest] = problem
        return problem
