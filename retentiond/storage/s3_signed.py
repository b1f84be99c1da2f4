"""The S3 backend's reads (ListObjectsV2, GetObject, HeadObject) as plain HTTP requests signed
here with Signature Version 4, one connection pool per process.

Why not through the boto3 client like everything else: a plan on a bucket is about ten
thousand small reads per five thousand tags, and botocore spends about 1.2 ms of CPU on each
(its event hooks, its serializer, its response parser; measured: a GetObject of a link file
through the client, against 0.3 ms for the same request through urllib3), and its S3 service
model is about 14 MiB in every reading process. On a machine that also runs the store, that
CPU is the store's: the plan on the test gateway was bound by it. So the reads a plan makes by
the thousand are built here; boto3 still makes every write (copies, deletes, puts), every read
with Signature Version 2 (``v4auth: false``), and finds the credentials (botocore's chain:
the settings' keys, else the environment, a profile, an instance role; refreshed ones are read
for each request).

The requests are what botocore sends for the same calls: the bucket's URL (path-style
``<endpoint>/<bucket>/<key>`` whenever ``regionendpoint`` is set or with ``forcepathstyle``,
else ``https://<bucket>.s3.<region>.amazonaws.com/<key>`` for a DNS-compatible bucket),
``x-amz-content-sha256`` of the empty body, listings with ``encoding-type=url`` (a key with a
character XML cannot carry is listed as it is). TLS is verified with ``AWS_CA_BUNDLE``, the
profile's ``ca_bundle``, or certifi's bundle, unless ``skipverify``; a proxy from the
environment is used as urllib3 does. Throttling (429, 503 ``SlowDown``), 5xx and a dropped
connection are retried with exponential backoff and jitter, :data:`ATTEMPTS` times in all.

Failures are botocore's exceptions, so that the backend's messages (:func:`~retentiond.
storage.s3_client.port_error`, ``open_s3_storage``) are the same for either path: an answer of
the store a :class:`~botocore.exceptions.ClientError` with its code and status, a connection
that cannot be made an :class:`~botocore.exceptions.EndpointConnectionError` (TLS: an
:class:`~botocore.exceptions.SSLError`), no credentials a
:class:`~botocore.exceptions.NoCredentialsError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, cast

import botocore.session
import urllib3
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    SSLError,
)
from botocore.httpsession import get_cert_path

from retentiond import __version__
from retentiond.storage.s3_client import forget_at_fork, per_process
from retentiond.storage.s3_settings import S3Settings

#: attempts of a request (throttling, 5xx, a dropped connection), as the client's
ATTEMPTS = 10
#: connections kept per process (the threads of a reading process and of its storage)
POOL_CONNECTIONS = 64
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
#: the SHA-256 of an empty body (every request here has none)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRIED_CODES = frozenset({"SlowDown", "Throttling", "RequestTimeout", "InternalError"})
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_UNRESERVED = "-_.~"
_USER_AGENT = f"retentiond/{__version__} (signed reads)"

Page = dict[str, Any]


class Answer(NamedTuple):
    """A GetObject's or HeadObject's answer: the body (empty for a HEAD), the object's
    length (of the whole object, as ``Content-Length`` or ``Content-Range`` says), its
    LastModified (seconds) and its user metadata (``x-amz-meta-*`` without the prefix)."""

    data: bytes
    length: int
    mtime: float
    metadata: Mapping[str, str]


def endpoint_of(settings: S3Settings) -> tuple[str, str]:
    """(``scheme://host[:port]``, the path of the bucket on it: ``/<bucket>`` path-style, else
    ``""``), as :func:`~retentiond.storage.s3_client.make_client` addresses it: path-style
    with ``regionendpoint`` or ``forcepathstyle``, else a DNS-compatible bucket as a
    subdomain of AWS's endpoint for ``region``."""
    endpoint = settings.endpoint_url
    if endpoint is not None:
        parts = urllib.parse.urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}", f"{parts.path.rstrip('/')}/{settings.bucket}"
    domain = "amazonaws.com.cn" if settings.region.startswith("cn-") else "amazonaws.com"
    host = f"s3.{settings.region}.{domain}"
    if not settings.forcepathstyle and _DNS_BUCKET.fullmatch(settings.bucket):
        return f"https://{settings.bucket}.{host}", ""
    return f"https://{host}", f"/{settings.bucket}"


def _quote(text: str, safe: str = "/~") -> str:
    return urllib.parse.quote(text, safe=safe)


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class SignedReads:
    """The reads of one bucket (see the module's docstring), in one process."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        attempts: int = ATTEMPTS,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.attempts, self.connect_timeout = attempts, connect_timeout
        origin, self.bucket_path = endpoint_of(settings)
        self.origin = origin
        self.host = urllib.parse.urlsplit(origin).netloc
        self.region = settings.region
        self._session = botocore.session.get_session()
        self._credentials: Credentials | None = None
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.pool = self._pool()

    def _pool(self) -> urllib3.PoolManager:
        verify: dict[str, Any]
        if self.settings.skipverify:
            verify = {"cert_reqs": "CERT_NONE"}
        else:
            bundle = os.environ.get("AWS_CA_BUNDLE") or self._session.get_config_variable(
                "ca_bundle"
            )
            verify = {"cert_reqs": "CERT_REQUIRED", "ca_certs": bundle or get_cert_path(True)}
        options: dict[str, Any] = {
            "maxsize": POOL_CONNECTIONS,
            "block": False,
            "retries": False,
            "timeout": urllib3.Timeout(connect=self.connect_timeout, read=READ_TIMEOUT),
            **verify,
        }
        proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(self.origin).scheme)
        if proxy and not urllib.request.proxy_bypass(self.host.rpartition(":")[0] or self.host):
            return urllib3.ProxyManager(proxy, num_pools=2, **options)
        return urllib3.PoolManager(num_pools=2, **options)

    # -- signing -------------------------------------------------------------------------------

    def credentials(self) -> Credentials:
        """The settings' keys, else botocore's chain (found once, refreshed as it says)."""
        if self._credentials is None:
            with self._lock:
                if self._credentials is None:
                    s = self.settings
                    if s.accesskey is not None and s.secretkey is not None:
                        self._credentials = Credentials(s.accesskey, s.secretkey, s.sessiontoken)
                    else:
                        found = self._session.get_credentials()
                        if found is None:
                            raise NoCredentialsError()
                        self._credentials = found
        return self._credentials

    def signed_headers(self, method: str, path: str, query: str) -> dict[str, str]:
        """The headers of a request ``method`` on ``path`` (quoted) with the canonical
        ``query`` (sorted, quoted), signed."""
        frozen = self.credentials().get_frozen_credentials()
        access, secret = frozen.access_key, frozen.secret_key
        if not access or not secret:
            raise NoCredentialsError()
        when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = when[:8]
        headers = {"host": self.host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": when}
        if frozen.token:
            headers["x-amz-security-token"] = frozen.token
        names = ";".join(headers)  # in sorted order already
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{k}:{v}\n" for k, v in headers.items()),
                names,
                EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", when, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        cached = (secret, day)
        key = self._keys.get(cached)
        if key is None:
            key = self._keys[cached] = _signing_key(secret, day, self.region)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        headers["user-agent"] = _USER_AGENT
        return headers

    # -- requests ------------------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> tuple[urllib3.BaseHTTPResponse, bytes]:
        """The answer (2xx or 3xx... anything but a retried failure) and up to ``limit + 1``
        bytes of its body (all of it when None); ClientError for a 4xx or 5xx answer."""
        canonical = "&".join(
            f"{_quote(k, _UNRESERVED)}={_quote(v, _UNRESERVED)}"
            for k, v in sorted((query or {}).items())
        )
        url = self.origin + path + (f"?{canonical}" if canonical else "")
        attempt = 0
        while True:
            attempt += 1
            headers = self.signed_headers(method, path, canonical)
            if extra:
                headers.update(extra)
            try:
                answer = cast(
                    urllib3.HTTPResponse,
                    self.pool.urlopen(
                        method, url, headers=headers, preload_content=False, redirect=False
                    ),
                )
            except urllib3.exceptions.SSLError as exc:
                raise SSLError(endpoint_url=self.origin, error=exc) from exc
            except urllib3.exceptions.HTTPError as exc:
                self._failed(attempt, exc)
                continue
            try:
                if answer.status < 300:
                    length = answer.headers.get("content-length")
                    if limit is not None and length is not None and int(length) > limit:
                        return answer, b""  # the caller refuses it by its length
                    body = answer.read() if limit is None else answer.read(limit + 1)
                    return answer, body
                body = answer.read(1 << 16)
            except urllib3.exceptions.HTTPError as exc:
                self._failed(attempt, exc)
                continue
            finally:
                if not answer.isclosed():
                    answer.close()  # a body left unread: the connection is not reused
                answer.release_conn()
            error = _client_error(answer.status, body, operation)
            code = str(error.response["Error"]["Code"])
            retried = answer.status in _RETRIED_STATUS or code in _RETRIED_CODES
            if retried and attempt < self.attempts:
                _backoff(attempt)
                continue
            raise error

    def _failed(self, attempt: int, exc: urllib3.exceptions.HTTPError) -> None:
        """A request that got no answer (a connection refused or dropped, a timeout): the
        wait before the next attempt, or EndpointConnectionError after the last."""
        if attempt >= self.attempts:
            raise EndpointConnectionError(endpoint_url=self.origin, error=exc) from exc
        _backoff(attempt)

    def list_page(
        self, prefix: str, *, delimiter: bool, start_after: str, max_keys: int, token: str
    ) -> Page:
        """One page of ListObjectsV2, in the shape boto3 gives it (``Contents`` with ``Key``,
        ``Size``, ``ETag``, ``LastModified`` as a datetime; ``CommonPrefixes``; ``IsTruncated``;
        ``NextContinuationToken``)."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        query["encoding-type"] = "url"
        if delimiter:
            query["delimiter"] = "/"
        if start_after:
            query["start-after"] = start_after
        if token:
            query["continuation-token"] = token
        _, body = self._request("ListObjectsV2", "GET", _quote(self.bucket_path or "/"), query)
        return parse_listing(body)

    def get(self, key: str, limit: int, first: int | None = None) -> Answer:
        """GetObject of ``key``: its first ``limit + 1`` bytes at most (a length above
        ``limit`` is read from the answer's headers, no byte of the body); ``first``: a
        ranged GET of the first ``first`` bytes (a 416 for an empty object is a
        ClientError)."""
        extra = {"range": f"bytes=0-{first - 1}"} if first is not None else None
        answer, body = self._request(
            "GetObject", "GET", self.key_path(key), extra=extra, limit=limit
        )
        return _answer(answer, body)

    def head(self, key: str) -> Answer:
        answer, _ = self._request("HeadObject", "HEAD", self.key_path(key))
        return _answer(answer, b"")

    def key_path(self, key: str) -> str:
        return _quote(f"{self.bucket_path}/{key}")


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(20.0, 0.05 * 2**attempt)))


def _answer(answer: urllib3.BaseHTTPResponse, body: bytes) -> Answer:
    headers = answer.headers
    length = int(headers.get("content-length") or 0)
    ranged = headers.get("content-range")  # bytes 0-99/1234
    if ranged and "/" in ranged:
        total = ranged.rpartition("/")[2]
        if total.isdigit():
            length = int(total)
    modified = headers.get("last-modified")
    mtime = parsedate_to_datetime(modified).timestamp() if modified else 0.0
    metadata = {
        k[len("x-amz-meta-") :]: v
        for k, v in headers.items()
        if k.lower().startswith("x-amz-meta-")
    }
    return Answer(body, length, mtime, metadata)


def _client_error(status: int, body: bytes, operation: str) -> ClientError:
    """The ClientError botocore would raise for this answer: the code and message of its
    XML error, else the status (a HEAD has no body)."""
    code, message = str(status), ""
    if body:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            message = body[:200].decode("utf-8", "replace")
        else:
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
    if status == 404 and operation == "HeadObject":
        code = "404"
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def _text(element: ET.Element, name: str) -> str:
    return element.findtext(_NS + name) or ""


#: a listing is parsed this many bytes at a time, each object's elements dropped once read
_PARSE_CHUNK = 64 << 10


def parse_listing(body: bytes) -> Page:
    """A ListObjectsV2 answer (``encoding-type=url``) as boto3 gives it. Parsed as it is fed
    (:class:`~xml.etree.ElementTree.XMLPullParser`), each ``Contents`` element emptied once
    read: a page of 1000 keys as a whole element tree is about a megabyte, and 32 threads
    list at once."""
    unquote = urllib.parse.unquote_plus
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, Any]] = []
    page: Page = {}
    contents_tag, prefixes_tag = _NS + "Contents", _NS + "CommonPrefixes"
    top = {_NS + "IsTruncated", _NS + "NextContinuationToken"}
    for at in range(0, max(len(body), 1), _PARSE_CHUNK):
        parser.feed(body[at : at + _PARSE_CHUNK])
        for event in parser.read_events():
            element = cast(tuple[str, ET.Element], event)[1]  # an "end" event's element
            tag = element.tag
            if tag == contents_tag:
                contents.append(
                    {
                        "Key": unquote(_text(element, "Key")),
                        "Size": int(_text(element, "Size") or 0),
                        "ETag": _text(element, "ETag"),
                        "LastModified": datetime.fromisoformat(_text(element, "LastModified")),
                    }
                )
                element.clear()
            elif tag == prefixes_tag:
                prefixes.append({"Prefix": unquote(_text(element, "Prefix"))})
                element.clear()
            elif tag in top:
                page[tag[len(_NS) :]] = element.text or ""
    parser.close()
    page["IsTruncated"] = page.get("IsTruncated") == "true"
    if not page.get("NextContinuationToken"):
        page.pop("NextContinuationToken", None)
    if contents:
        page["Contents"] = contents
    if prefixes:
        page["CommonPrefixes"] = prefixes
    return page


_reads: dict[tuple[int, S3Settings], SignedReads] = {}
forget_at_fork(_reads)


def signed_reads(settings: S3Settings) -> SignedReads | None:
    """This process's reads of ``settings``' bucket; None with Signature Version 2 (boto3
    reads then)."""
    if not settings.v4auth:
        return None
    return per_process(_reads, settings, SignedReads)
