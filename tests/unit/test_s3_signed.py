"""The S3 reads signed by retentiond (:mod:`retentiond.storage.s3_signed`): the URL each
setting addresses, the listing's parsing, and the retries.

Every request is also made against the real gateway (Ceph RGW checks each signature) by the
integration tests of the S3 backend. The retries are tested here against a small HTTP server
of the test's own: the gateway cannot be made to throttle or fail on demand.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from retentiond.storage import s3_signed
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.s3_signed import SignedReads, endpoint_of, parse_listing

LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>b</Name><Prefix>p%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
<NextContinuationToken>tok/en+=</NextContinuationToken>
<Contents><Key>p/a+b%2Bc%20d</Key><LastModified>2026-12-02T13:14:46.123Z</LastModified>
<ETag>&quot;0123&quot;</ETag><Size>71</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>p/caf%C3%A9/</Prefix></CommonPrefixes>
</ListBucketResult>"""


def test_endpoint_is_addressed_as_the_boto3_client_addresses_it() -> None:
    assert endpoint_of(S3Settings("bkt", regionendpoint="http://rgw:7480")) == (
        "http://rgw:7480",
        "/bkt",
    )
    assert endpoint_of(S3Settings("bkt", regionendpoint="minio.internal:9000", secure=False)) == (
        "http://minio.internal:9000",
        "/bkt",
    )
    assert endpoint_of(S3Settings("bkt", region="eu-west-1")) == (
        "https://bkt.s3.eu-west-1.amazonaws.com",
        "",
    )
    assert endpoint_of(S3Settings("bkt", region="eu-west-1", forcepathstyle=True)) == (
        "https://s3.eu-west-1.amazonaws.com",
        "/bkt",
    )
    assert endpoint_of(S3Settings("my.bucket", region="us-east-1")) == (
        "https://s3.us-east-1.amazonaws.com",
        "/my.bucket",
    )
    assert endpoint_of(S3Settings("bkt", region="cn-north-1"))[0].endswith(".amazonaws.com.cn")


def test_listing_is_parsed_as_boto3_gives_it() -> None:
    page = parse_listing(LISTING)
    assert page["IsTruncated"] is True
    assert page["NextContinuationToken"] == "tok/en+="
    [obj] = page["Contents"]
    assert obj["Key"] == "p/a b+c d"  # url-encoded: "+" is a space, %2B a plus
    assert obj["Size"] == 71 and obj["ETag"] == '"0123"'
    assert obj["LastModified"].timestamp() == pytest.approx(1796217286.123)
    assert page["CommonPrefixes"] == [{"Prefix": "p/caf\u00e9/"}]


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 SlowDown ``failures`` times, then a listing; records the requests."""

    failures: ClassVar[int] = 0
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        assert self.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/")
        if type(self).failures > 0:
            type(self).failures -= 1
            body = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
            self.send_response(503)
        elif self.path.startswith("/b/missing"):
            body = b"<Error><Code>NoSuchKey</Code><Message>no</Message></Error>"
            self.send_response(404)
        else:
            body = LISTING
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _reads(endpoint: str, attempts: int = 10) -> SignedReads:
    settings = S3Settings("b", regionendpoint=endpoint, accesskey="AK", secretkey="SK")
    return SignedReads(settings, attempts=attempts)


def test_throttling_is_retried_with_backoff(flaky: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[int] = []
    monkeypatch.setattr(s3_signed, "_backoff", sleeps.append)
    _Flaky.failures = 3
    page = _reads(flaky).list_page("p/", delimiter=True, start_after="", max_keys=1000, token="t/k")
    assert page["Contents"][0]["Key"] == "p/a b+c d"
    assert len(_Flaky.seen) == 4 and len(sleeps) == 3
    assert "continuation-token=t%2Fk" in _Flaky.seen[0] and "delimiter=%2F" in _Flaky.seen[0]


def test_a_failure_that_outlasts_the_attempts_is_the_store_s_error(
    flaky: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_signed, "_backoff", lambda _: None)
    _Flaky.failures = 5
    with pytest.raises(ClientError) as slow:
        _reads(flaky, attempts=3).list_page(
            "p/", delimiter=False, start_after="", max_keys=1, token=""
        )
    assert slow.value.response["Error"]["Code"] == "SlowDown"
    assert len(_Flaky.seen) == 3
    _Flaky.failures = 0
    with pytest.raises(ClientError) as missing:
        _reads(flaky).get("missing/key", 100)
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert len(_Flaky.seen) == 4  # a 404 is not retried


def test_an_endpoint_that_does_not_answer_is_a_connection_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(s3_signed, "_backoff", lambda _: None)
    with pytest.raises(EndpointConnectionError):
        _reads("http://127.0.0.1:9", attempts=2).get("k", 10)


def test_a_listing_larger_than_a_parse_chunk_loses_no_key() -> None:
    """1000 keys (about 300 KB, several of the parser's chunks), with the elements some stores
    add (``Owner``, ``StorageClass``): every key, size and ETag, in order."""
    items = b"".join(
        b"<Contents><Key>docker/registry/v2/blobs/sha256/%02x/%064x/data</Key>"
        b"<LastModified>2026-12-02T13:14:46.000Z</LastModified><ETag>&quot;%032x&quot;</ETag>"
        b"<Size>%d</Size><Owner><ID>u</ID><DisplayName>u</DisplayName></Owner>"
        b"<StorageClass>STANDARD</StorageClass></Contents>" % (i % 256, i, i, i)
        for i in range(1000)
    )
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
        b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
        + items
        + b"</ListBucketResult>"
    )
    assert len(body) > 4 * s3_signed._PARSE_CHUNK
    page = parse_listing(body)
    assert page["IsTruncated"] is False and "NextContinuationToken" not in page
    assert [o["Size"] for o in page["Contents"]] == list(range(1000))
    assert page["Contents"][999]["Key"].endswith(f"{999:064x}/data")
    assert page["Contents"][5]["ETag"] == f'"{5:032x}"'
