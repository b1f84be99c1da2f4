"""The registry's HTTP API: health, the read-only probe, and verification of tags by real requests.

Every httpx error is translated into :class:`~retentiond.errors.RegistryError` here. Tests hand
in a real registry; ``transport`` exists for httpx's own plug-in point only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from retentiond.core.inventory import ALL_MANIFEST_TYPES, MEDIA_SCHEMA1
from retentiond.core.manifests import ManifestError, parse_manifest
from retentiond.errors import RegistryError

ACCEPT = ", ".join((*ALL_MANIFEST_TYPES, MEDIA_SCHEMA1))


@dataclass(frozen=True, slots=True)
class TagCheck:
    repository: str
    tag: str
    ok: bool
    reason: str = ""


class RegistryClient:
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
        self._http = httpx.Client(
            base_url=self.url, auth=auth, verify=verify, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"registry at {self.url} did not answer {method} {path}: {exc}; check "
                "registry.url and that the registry is running"
            ) from exc

    # -- health -------------------------------------------------------------------------------

    def answering(self) -> bool:
        """True when ``GET /v2/`` answers 200 (or 401: up, but wants credentials)."""
        try:
            return self._http.get("/v2/").status_code in (200, 401)
        except httpx.HTTPError:
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
        if response.status_code == 202 and response.headers.get("Location"):
            self._request("DELETE", response.headers["Location"])
        return False

    # -- reading ------------------------------------------------------------------------------

    def catalog(self) -> list[str]:
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            response = self._request("GET", path)
            if response.status_code != 200:
                raise RegistryError(f"GET {path} answered {response.status_code}")
            names.extend(response.json().get("repositories") or [])
            link = response.headers.get("Link", "")
            path = link[link.find("<") + 1 : link.find(">")] if 'rel="next"' in link else None
        return names

    def tag_status(self, repository: str, tag: str) -> int:
        return self._request(
            "HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT}
        ).status_code

    def _check_manifest(self, repository: str, ref: str, expected: str, verified: set[str]) -> str:
        """GET ``ref``, expect ``expected``, then HEAD its blobs and check its children.
        ``verified`` holds what was already proven in this repository; proven digests join it."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPT}
        )
        if response.status_code != 200:
            return f"GET manifest {ref} answered {response.status_code}"
        digest = response.headers.get("Docker-Content-Digest", "")
        if digest != expected:
            return f"manifest {ref} answered with digest {digest or 'none'}, expected {expected}"
        try:
            manifest = parse_manifest(digest, response.content)
        except ManifestError as exc:
            return f"manifest {ref} does not parse: {exc}"
        for blob in manifest.blobs:
            if blob in verified:
                continue
            status = self._request("HEAD", f"/v2/{repository}/blobs/{blob}").status_code
            if status != 200:
                return f"blob {blob} of {digest} answered {status}"
            verified.add(blob)
        for child in manifest.children:
            if child in verified:
                continue
            problem = self._check_manifest(repository, child, child, verified)
            if problem:
                return problem
        verified.add(digest)
        return ""

    def check_tags(self, repository: str, tags: Sequence[tuple[str, str]]) -> list[TagCheck]:
        """Each ``(tag, digest)`` answers with its digest, and every child manifest and blob
        answers too; what one tag proved is not asked again for the next."""
        verified: set[str] = set()
        checks = []
        for tag, digest in tags:
            problem = self._check_manifest(repository, tag, digest, verified)
            checks.append(TagCheck(repository, tag, not problem, problem))
        return checks

    def check_tag(self, repository: str, tag: str, digest: str) -> TagCheck:
        return self.check_tags(repository, [(tag, digest)])[0]
