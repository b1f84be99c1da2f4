"""The boto3 client of the S3 backend (:mod:`retentiond.storage.s3`), one per process, and what
its errors mean in the storage port's terms.

A boto3 client holds open connections (a urllib3 pool) and must never be used on both sides of
a fork: the reading code forks worker processes and pickles readers into them. So a client is
made lazily, on first use in a process, and kept per process id and settings; a forked child
starts with none (the parent's are dropped from the child's table at the fork, never closed
there: closing a connection the parent still uses would cut it short).

The connection: ``endpoint_url`` from ``regionendpoint`` (AWS for ``region`` when None), TLS
verification unless ``skipverify`` (with ``AWS_CA_BUNDLE`` or the profile's ``ca_bundle`` when
set, as boto3 does), Signature Version 4 (2 when ``v4auth`` is false), path-style requests with
``forcepathstyle`` or any ``regionendpoint`` (as the registry 2.8 driver does), throttling and
5xx retried with backoff (botocore's adaptive mode), a connection pool as large as the threads a
storage runs. Credentials: ``accesskey``/``secretkey``/``sessiontoken``, else boto3's chain
(environment, profile, instance role).

Errors (:func:`port_error`): no such key (404) is :class:`FileNotFoundError`, access refused
(403) :class:`PermissionError`, anything else the store answers or fails with (a missing
bucket, 5xx after the retries, a connection error, no credentials) an :class:`OSError` whose
message names the ``s3://`` URL.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from retentiond import __version__
from retentiond.storage.s3_settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

#: threads a storage runs requests in (copies, deletes, HEADs); the pool holds a connection
#: for each, and for the parts of a managed (multipart) copy
THREADS = 16
POOL_CONNECTIONS = 4 * THREADS
#: attempts of a request (throttling, 5xx, a dropped connection), with backoff
ATTEMPTS = 10
#: the codes of a key that is not there
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
#: the codes of a request the credentials may not make
DENIED = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)

_lock = threading.Lock()
_clients: dict[tuple[int, S3Settings], S3Client] = {}
_executors: dict[int, ThreadPoolExecutor] = {}
#: every table of per-process things (:func:`per_process`), emptied in a forked child
_tables: list[dict[Any, Any]] = [_clients, _executors]
#: what a forked child inherited from its parent: kept referenced (never closed, never used)
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by a thread that is not here
    for table in _tables:
        _inherited.extend(table.values())
        table.clear()


def per_process(
    table: dict[tuple[int, S3Settings], T], settings: S3Settings, make: Callable[[S3Settings], T]
) -> T:
    """``table``'s thing for this process and ``settings``, made on first use by ``make``
    (a forked child makes its own: ``table`` is emptied in it, see :func:`forget_at_fork`)."""
    key = (os.getpid(), settings)
    found = table.get(key)
    if found is None:
        with _lock:
            found = table.get(key)
            if found is None:
                found = table[key] = make(settings)
    return found


def forget_at_fork(table: dict[Any, Any]) -> None:
    """Empty ``table`` in every forked child (what it holds is the parent's)."""
    _tables.append(table)


os.register_at_fork(after_in_child=_after_fork_in_child)


def make_client(
    settings: S3Settings, *, attempts: int = ATTEMPTS, connect_timeout: float = 10.0
) -> S3Client:
    """A new client for ``settings`` (:func:`client` keeps one per process)."""
    session = boto3.session.Session(
        aws_access_key_id=settings.accesskey,
        aws_secret_access_key=settings.secretkey,
        aws_session_token=settings.sessiontoken,
        region_name=settings.region,
    )
    path_style = settings.forcepathstyle or settings.regionendpoint is not None
    config = Config(
        signature_version="s3v4" if settings.v4auth else "s3",
        s3={"addressing_style": "path" if path_style else "auto"},
        retries={"mode": "adaptive", "max_attempts": attempts},
        max_pool_connections=POOL_CONNECTIONS,
        connect_timeout=connect_timeout,
        read_timeout=60,
        user_agent_extra=f"retentiond/{__version__}",
    )
    made: S3Client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        # None, not True: True would ignore AWS_CA_BUNDLE and the profile's ca_bundle
        verify=False if settings.skipverify else None,
        config=config,
    )
    return made


def client(settings: S3Settings) -> S3Client:
    """This process's client for ``settings``, made on first use (clients are thread-safe)."""
    return per_process(_clients, settings, make_client)


def executor() -> ThreadPoolExecutor:
    """This process's threads for requests made side by side."""
    pid = os.getpid()
    found = _executors.get(pid)
    if found is None:
        with _lock:
            found = _executors.get(pid)
            if found is None:
                found = _executors[pid] = ThreadPoolExecutor(
                    THREADS, thread_name_prefix="retentiond-s3"
                )
    return found


def error_code(exc: ClientError) -> tuple[str, int]:
    """The S3 error code of a response (``NoSuchKey``; a HEAD's is its status, ``404``) and
    its HTTP status."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def port_error(exc: Exception, url: str, path: str | None) -> OSError:
    """The port's exception for a failed request on ``url`` (``path``: its ``filename``,
    relative to the reader; None for a failure after the object was opened)."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message") or code or status)
        if code in NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
            return FileNotFoundError(errno.ENOENT, f"no object at {url}", path)
        if code in DENIED or status == 403:
            return PermissionError(
                errno.EACCES,
                f"access denied to {url} ({code or status}: {message}); the credentials need "
                "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket",
                path,
            )
        if code == "NoSuchBucket":
            return OSError(errno.EIO, f"the bucket of {url} does not exist", path)
        return OSError(errno.EIO, f"{url}: {code or status} {message}", path)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionError(errno.EACCES, f"no S3 credentials for {url}: {exc}", path)
    if isinstance(exc, BotoCoreError | OSError):
        return OSError(errno.EIO, f"cannot reach {url}: {exc}", path)
    return OSError(errno.EIO, f"{url}: {exc}", path)
