"""The registry's redis blob descriptor cache: forget the blobs a GC deleted.

A restart does not clear a redis cache, and a stale entry makes a re-push of a collected image
"succeed" and then fail to pull. The registry (2.8 and v3) keeps, per blob digest D and
repository R: the hash ``blobs::D``, the hash ``repository::R::blobs::D`` and the set
``repository::R::blobs``. This speaks just enough RESP to delete them, over one connection
(``redis://``, ``rediss://`` or ``unix://``, as ``registry.redis_url`` allows).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from itertools import islice
from typing import Any, BinaryIO
from urllib.parse import ParseResult, parse_qs, unquote, urlparse, urlunparse

from retentiond.core.blob_table import BlobTable
from retentiond.errors import RegistryError

#: keys (or set members) in one DEL or SREM
CHUNK = 500
#: commands sent before their replies are read: one round trip for this many
PIPELINE = 64
SCHEMES = ("redis", "rediss", "unix")

#: a RESP reply: a status or bulk string, an integer, an array of them, or nil
Reply = Any


def _chunks(items: Iterator[str]) -> Iterator[list[str]]:
    while chunk := list(islice(items, CHUNK)):
        yield chunk


def _batches(items: Iterable[str]) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, PIPELINE)):
        yield batch


def _encode(args: Sequence[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _lookup(gone: Collection[str]) -> Collection[str]:
    """``gone`` itself when asking it for a member is cheap (a set, a mapping such as a
    ``BlobTable``), else a set of it: a list would make every member test a scan."""
    return gone if isinstance(gone, Set | Mapping) else frozenset(gone)


def _present(lookup: Collection[str], members: list[str]) -> list[str]:
    """The ``members`` that are in ``lookup`` (a ``BlobTable`` is asked for all at once)."""
    if isinstance(lookup, BlobTable):
        return [
            m for m, blob_id in zip(members, lookup.ids_of(members), strict=True) if blob_id >= 0
        ]
    return [m for m in members if m in lookup]


def _forget_members(key: str, digests: list[str]) -> Iterator[list[str]]:
    """The commands that delete ``digests`` from the repository set ``key`` and their hashes."""
    for chunk in _chunks(iter(digests)):
        yield ["DEL", *(f"{key}::{d}" for d in chunk)]
        yield ["SREM", key, *chunk]


def _forget_in_sets(
    conn: _Connection, repositories: Iterable[str], select: Callable[[list[str]], list[str]]
) -> None:
    """For each repository R, delete the members ``select`` picks from the set
    ``repository::R::blobs`` with their hashes; a round trip for the sets of PIPELINE
    repositories, one for what is deleted from them."""
    for repos in _batches(repositories):
        keys = [f"repository::{repo}::blobs" for repo in repos]
        sets = conn.pipeline([("SMEMBERS", key) for key in keys])
        conn.pipeline(
            [
                command
                for key, members in zip(keys, sets, strict=True)
                for command in _forget_members(key, select(members or []))
            ]
        )


class _Connection:
    """One connection to redis: send a command, read its reply, count what was sent."""

    def __init__(self, sock: socket.socket, reader: BinaryIO, url: str) -> None:
        self.sock = sock
        self.reader = reader
        self.url = url
        self.sent = 0

    def call(self, *args: str) -> Reply:
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[str]]) -> list[Reply]:
        """Send ``commands`` at once, then read their replies: one round trip."""
        if not commands:
            return []
        self.sock.sendall(b"".join(_encode(args) for args in commands))
        self.sent += len(commands)
        return [self._reply(args[0]) for args in commands]

    def _reply(self, command: str) -> Reply:
        """One RESP reply; an error reply raises."""
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RegistryError(
                f"redis at {self.url} (registry.redis_url) closed the connection during {command}"
            )
        kind, body = line[:1], line[1:-2]
        if kind == b"-":
            hint = (
                "; put the password in the URL: redis://:PASSWORD@host:port/db"
                if body.startswith((b"NOAUTH", b"WRONGPASS"))
                else ""
            )
            raise RegistryError(
                f"redis at {self.url} (registry.redis_url) answered {command} with "
                f"{body.decode(errors='replace')!r}{hint}"
            )
        if kind in (b"+", b":"):
            return body.decode(errors="replace")
        if kind == b"$":
            size = int(body)
            return None if size < 0 else self.reader.read(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._reply(command) for _ in range(count)]
        raise RegistryError(
            f"redis at {self.url} (registry.redis_url) answered {command} with {line[:40]!r}: "
            "is it a redis server?"
        )


def _without_password(url: str, parsed: ParseResult) -> str:
    """``url`` with ``***`` for its password, if it has one."""
    if parsed.password is None:
        return url
    user = parsed.username or ""
    host = parsed.netloc.rpartition("@")[2]
    return urlunparse(parsed._replace(netloc=f"{user}:***@{host}"))


class RedisCache:
    """The registry's redis cache at ``url`` (``registry.redis_url``)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urlparse(url if "://" in url else f"redis://{url}")
        if parsed.scheme not in SCHEMES:
            raise RegistryError(
                f"registry.redis_url {url!r}: the scheme must be one of {', '.join(SCHEMES)}"
            )
        #: for messages: the URL without its password (it may come from the registry's config)
        self.url = _without_password(url, parsed)
        self.scheme = parsed.scheme
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.path = parsed.path
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        db = parse_qs(parsed.query).get("db", [""])[0] if self.scheme == "unix" else parsed.path
        try:
            self.db = int(db.lstrip("/") or 0)
        except ValueError:
            raise RegistryError(
                f"registry.redis_url {url!r}: the database must be a number, like "
                "redis://host:6379/0 or unix:///run/redis.sock?db=0"
            ) from None
        self.timeout = timeout

    def check(self) -> None:
        """Raise unless redis answers PING (after AUTH and SELECT): to be asked before the
        GC, since a cache that cannot be cleaned after it leaves entries no later run forgets."""
        with self._session() as conn:
            conn.call("PING")

    def forget(self, gone: Collection[str], repositories: Iterable[str]) -> int:
        """Delete the cache entries of the blobs in ``gone``; return the commands sent.

        ``blobs::D`` is deleted for every D in ``gone``; a repository's entries are read from
        its set ``repository::R::blobs`` (what the registry cached for it, often none) and only
        those in ``gone`` are deleted: the work grows with the cache, not with repositories
        times blobs."""
        if not gone:
            return 0
        lookup = _lookup(gone)
        with self._session() as conn:
            deletes = (["DEL", *(f"blobs::{d}" for d in chunk)] for chunk in _chunks(iter(gone)))
            while batch := list(islice(deletes, PIPELINE)):
                conn.pipeline(batch)
            _forget_in_sets(conn, repositories, lambda members: _present(lookup, members))
            return conn.sent

    def forget_repositories(self, repositories: Iterable[str]) -> int:
        """Delete everything cached for ``repositories`` (the ones the run removed whole); return
        the commands sent. Their ``_layers`` links went with them, also those of blobs other
        repositories keep: a stale entry would let a re-push into a new repository of that name
        skip those blobs, and its images would pull only while redis still holds the entry."""
        with self._session() as conn:
            _forget_in_sets(conn, repositories, lambda members: members)
            return conn.sent

    @contextmanager
    def _session(self) -> Iterator[_Connection]:
        """A logged-in connection; a network failure is an error naming the setting."""
        try:
            with self._connect() as sock, sock.makefile("rb") as reader:
                conn = _Connection(sock, reader, self.url)
                self._login(conn)
                yield conn
        except OSError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: OSError) -> RegistryError:
        return RegistryError(
            f"cannot reach the registry's redis cache at {self.url}: {exc}; its stale entries "
            "would make re-pushed images fail to pull: fix registry.redis_url"
        )

    def _connect(self) -> socket.socket:
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        if self.scheme != "rediss":
            return sock
        try:
            return ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except OSError:
            sock.close()
            raise

    def _login(self, conn: _Connection) -> None:
        if self.password:
            conn.call("AUTH", *([self.username] if self.username else []), self.password)
        if self.db:
            conn.call("SELECT", str(self.db))
