"""The pure parts of the S3 backend: the order of deletes, what a copy is, how a listing's pages
become entries and names (the odd shapes an object store allows and a disk does not), and what
the store's errors mean in the port's terms. Pages and errors are built as botocore returns
them (a real store answers them in tests/integration/test_s3_backend.py)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from retentiond.storage.port import Kind
from retentiond.storage.s3_client import port_error
from retentiond.storage.s3_objects import Obj, by_tier, same_copy, tier
from retentiond.storage.s3_reader import BOTH_DETAIL, entries_of, names_of

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
P = "docker/registry/v2/repositories/team/app/_manifests/tags/"


def test_links_are_deleted_first_tags_before_revisions() -> None:
    repo = "repositories/team/app"
    assert tier(f"{repo}/_manifests/tags/v1/current/link") == 0
    assert tier(f"{repo}/_manifests/revisions/sha256/{'a' * 64}/link") == 1
    assert tier(f"{repo}/_manifests/tags/v1/index/sha256/{'a' * 64}/link") == 2
    assert tier(f"{repo}/_layers/sha256/{'a' * 64}/link") == 2
    assert tier(f"{repo}/_uploads/x/data") == 2
    objs = [Obj("current/link", 71, "e"), Obj("index/sha256/aa/link", 71, "f")]
    tiers = by_tier(objs, f"{repo}/_manifests/tags/v1")
    assert tiers == [[objs[0]], [], [objs[1]]]
    # a revision held alone: its own link is the revision's
    assert by_tier([Obj("link", 71, "e")], f"{repo}/_manifests/revisions/sha256/aa")[1]


def test_a_copy_is_the_same_etag_and_size_or_a_multipart_one_of_the_size() -> None:
    assert same_copy(Obj("a", 3, '"abc"'), Obj("a", 3, '"abc"'))
    assert not same_copy(Obj("a", 3, '"abc"'), Obj("a", 3, '"abd"'))
    assert same_copy(Obj("a", 3, '"abc"'), Obj("a", 3, '"xyz-2"'))
    assert not same_copy(Obj("a", 3, '"abc"'), Obj("a", 4, '"xyz-2"'))


def _page(prefixes: list[str], keys: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "CommonPrefixes": [{"Prefix": P + p} for p in prefixes],
        "Contents": [{"Key": P + k, "Size": size, "LastModified": WHEN} for k, size in keys],
    }


def test_listing_pages_become_entries_and_names() -> None:
    pages = [
        _page(["both/", "v1/"], [("", 0), ("both", 9)]),  # the directory's marker, a collision
        _page(["v2/", "/"], [("file", 5)]),  # "//": no path names it
    ]
    entries = {e.name: e for e in entries_of(iter(pages), P, "tags", "s3://b/tags")}
    assert set(entries) == {"both", "v1", "v2", "file"}
    assert entries["both"].kind is Kind.OTHER and entries["both"].detail == BOTH_DETAIL
    assert entries["v1"].kind is Kind.DIR and entries["v1"].mtime is None
    assert entries["file"] == ("file", Kind.FILE, 5, WHEN.timestamp(), "an object", None)
    names = names_of(iter(pages), P, "tags", "s3://b/tags")
    assert names.names == ["both", "file", "v1", "v2"] and not names.only_dirs
    only = names_of(iter([_page(["a/", "b/"], [("", 0)])]), P, "tags", "s3://b/tags")
    assert only.names == ["a", "b"] and only.only_dirs and only.order is None
    # only its marker: an empty directory; nothing at all: none
    assert entries_of(iter([_page([], [("", 0)])]), P, "tags", "s3://b/tags") == []
    with pytest.raises(FileNotFoundError) as missing:
        entries_of(iter([_page([], [])]), P, "tags", "s3://b/tags")
    assert missing.value.filename == "tags"


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "said the store"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def test_store_errors_in_the_port_s_terms() -> None:
    url = "s3://bucket/docker/registry/v2/x"
    missing = port_error(_client_error("NoSuchKey", 404), url, "x")
    assert isinstance(missing, FileNotFoundError) and missing.filename == "x"
    assert isinstance(port_error(_client_error("404", 404), url, "x"), FileNotFoundError)
    denied = port_error(_client_error("AccessDenied", 403), url, "x")
    assert isinstance(denied, PermissionError) and url in str(denied.strerror)
    bucket = port_error(_client_error("NoSuchBucket", 404), url, "x")
    assert type(bucket) is OSError and "bucket" in str(bucket.strerror)
    busy = port_error(_client_error("InternalError", 500), url, None)
    assert type(busy) is OSError and busy.errno == errno.EIO and busy.filename is None
    assert url in str(busy.strerror)
    down = port_error(EndpointConnectionError(endpoint_url="http://x"), url, "x")
    assert type(down) is OSError and "cannot reach" in str(down.strerror)
    assert isinstance(port_error(NoCredentialsError(), url, "x"), PermissionError)
