"""The registry's redis blob descriptor cache: forget the blobs a GC deleted.

A restart does not clear a redis cache, and a stale entry makes a re-push of a collected image
"succeed" and then fail to pull. The registry (2.8 and v3) keeps, per blob digest D and
repository R: the hash ``blobs::D``, the hash ``repository::R::blobs::D`` and the set
``repository::R::blobs``. This speaks just enough RESP to delete them, over one connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlparse

from retentiond.errors import RegistryError

CHUNK = 500


def _encode(args: Sequence[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisCache:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urlparse(url if "://" in url else f"redis://{url}")
        if parsed.scheme not in ("redis", ""):
            raise RegistryError(f"registry.redis_url {url!r}: only redis:// URLs are supported")
        self.url = url
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.password = unquote(parsed.password) if parsed.password else None
        self.db = int(parsed.path.lstrip("/") or 0)
        self.timeout = timeout

    def _call(self, sock: socket.socket, reader: Iterable[bytes], *args: str) -> bytes:
        sock.sendall(_encode(args))
        line = next(iter(reader))
        if line.startswith(b"-"):
            raise RegistryError(f"redis at {self.url} answered {args[0]} with {line[1:].strip()!r}")
        return line

    def forget(self, digests: Iterable[str], repositories: Iterable[str]) -> int:
        """Delete the cache entries of ``digests``; return the number of commands sent."""
        gone = sorted(set(digests))
        if not gone:
            return 0
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                lines = sock.makefile("rb")
                sent = 0
                if self.password:
                    self._call(sock, lines, "AUTH", self.password)
                if self.db:
                    self._call(sock, lines, "SELECT", str(self.db))
                batches = [("", gone[i : i + CHUNK]) for i in range(0, len(gone), CHUNK)]
                for _, chunk in batches:
                    self._call(sock, lines, "DEL", *(f"blobs::{d}" for d in chunk))
                    sent += 1
                for repo in repositories:
                    for _, chunk in batches:
                        self._call(
                            sock, lines, "DEL", *(f"repository::{repo}::blobs::{d}" for d in chunk)
                        )
                        self._call(sock, lines, "SREM", f"repository::{repo}::blobs", *chunk)
                        sent += 2
                return sent
        except OSError as exc:
            raise RegistryError(
                f"cannot reach the registry's redis cache at {self.url}: {exc}; its stale entries "
                "would make re-pushed images fail to pull: fix registry.redis_url"
            ) from exc
