"""Many objects at once, for the S3 backend's moves (:mod:`retentiond.storage.s3`): every object
below a key prefix, copies side by side, deletes in batches of 1000, and the order in which a
directory's objects are deleted and put back so that the registry never sees half of one as
whole.

A move without rename is a copy, then a delete: the registry sees a tag through its
``current/link`` and a manifest in a repository through its revision ``link``, so those go
first when a directory is deleted (tags, then revisions, then the rest: ``_layers`` links last,
a manifest never visible without the layers it names) and last when one is put back.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from retentiond.storage import layout
from retentiond.storage.s3_client import THREADS, executor, port_error
from retentiond.storage.s3_settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

T = TypeVar("T")

#: a listing page, a delete batch: S3's maximum
PAGE = 1000
#: from this size an object is copied in parts (boto3's managed copy): CopyObject takes at most
#: 5 GiB, and parts copied side by side are faster for a large one
MULTIPART_FROM = 1 << 30
_MULTIPART = TransferConfig(
    multipart_threshold=MULTIPART_FROM, multipart_chunksize=256 << 20, max_concurrency=THREADS
)
#: the deletion tiers of a path below ``v2`` (0 first): a tag's link, a revision's link, the rest
_TAG_LINK = re.compile(rf"(?:^|/){re.escape(layout.TAGS)}/[^/]+/{re.escape(layout.CURRENT_LINK)}$")
_REVISION_LINK = re.compile(rf"(?:^|/){re.escape(layout.REVISIONS)}/[^/]+/{layout.LINK}$")
TIERS = 3


class Obj(NamedTuple):
    """An object below a prefix: its key relative to the prefix, size and ETag."""

    rel: str
    size: int
    etag: str


def tier(path: str) -> int:
    """0 for a tag's ``current/link``, 1 for a revision's ``link``, 2 for anything else
    (``path`` below ``v2``)."""
    if path.rpartition("/")[2] == layout.LINK:
        if _TAG_LINK.search(path):
            return 0
        if _REVISION_LINK.search(path):
            return 1
    return 2


def by_tier(objs: Iterable[Obj], base: str) -> list[list[Obj]]:
    """``objs`` (below ``base``, a path below ``v2``) in their deletion tiers."""
    tiers: list[list[Obj]] = [[] for _ in range(TIERS)]
    for obj in objs:
        tiers[tier(f"{base}/{obj.rel}" if obj.rel else base)].append(obj)
    return tiers


def same_copy(a: Obj, b: Obj) -> bool:
    """Whether ``b`` is a copy of ``a`` (a copy in parts gets another ETag: then the size)."""
    if a.size != b.size:
        return False
    return a.etag == b.etag or "-" in a.etag or "-" in b.etag


class Bucket:
    """The bulk operations on one bucket; ``url(key)`` names a key in messages."""

    def __init__(self, client: S3Client, settings: S3Settings) -> None:
        self.client, self.name, self.settings = client, settings.bucket, settings

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def fail(self, exc: Exception, key: str, path: str | None) -> OSError:
        return port_error(exc, self.url(key), path)

    def pages(
        self,
        prefix: str,
        *,
        delimiter: bool,
        start_after: str = "",
        max_keys: int = PAGE,
        token: str = "",
    ) -> Iterator[dict[str, Any]]:
        """The pages of ListObjectsV2 below ``prefix`` (with ``/`` as delimiter or not)."""
        kwargs: dict[str, object] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kwargs["Delimiter"] = "/"
        if start_after:
            kwargs["StartAfter"] = start_after
        if token:
            kwargs["ContinuationToken"] = token
        while True:
            try:
                page: dict[str, Any] = self.client.list_objects_v2(**kwargs)  # type: ignore[arg-type, assignment]
            except (ClientError, BotoCoreError) as exc:
                raise self.fail(exc, prefix, None) from exc
            yield page
            following = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not following:
                return
            kwargs["ContinuationToken"] = following

    def objects(self, prefix: str) -> list[Obj]:
        """Every object below ``prefix`` (a key prefix ending with ``/``), all levels."""
        n = len(prefix)
        found: list[Obj] = []
        for page in self.pages(prefix, delimiter=False):
            for obj in page.get("Contents") or ():
                found.append(Obj(obj["Key"][n:], int(obj["Size"]), str(obj.get("ETag", ""))))
        return found

    def has_objects(self, prefix: str) -> bool:
        """Whether any object's key starts with ``prefix``."""
        page = next(self.pages(prefix, delimiter=False, max_keys=1))
        return bool(page.get("Contents"))

    def put(self, key: str, body: bytes, path: str) -> None:
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body)
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, key, path) from exc

    def delete_one(self, key: str, path: str) -> None:
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, key, path) from exc

    def copy(self, src: str, dst: str, size: int, path: str) -> None:
        """Copy the object ``src`` to ``dst`` in this bucket (in parts when large)."""
        source = {"Bucket": self.name, "Key": src}
        try:
            if size >= MULTIPART_FROM:
                self.client.copy(source, self.name, dst, Config=_MULTIPART)  # type: ignore[arg-type]
            else:
                self.client.copy_object(Bucket=self.name, Key=dst, CopySource=source)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, src, path) from exc

    def copy_all(self, pairs: Sequence[tuple[str, str, int]], path: str) -> None:
        """Copy each ``(src, dst, size)``, side by side; the first failure is raised once
        every copy has ended."""
        _side_by_side(lambda p: self.copy(p[0], p[1], p[2], path), pairs)

    def delete(self, keys: Sequence[str], path: str) -> None:
        """Delete ``keys`` (DeleteObjects, 1000 a request, batches side by side). A key that
        could not be deleted is an OSError naming it; a key already gone is not."""
        batches = [keys[i : i + PAGE] for i in range(0, len(keys), PAGE)]
        _side_by_side(lambda batch: self._delete_batch(batch, path), batches)

    def _delete_batch(self, keys: Sequence[str], path: str) -> None:
        objects: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in keys]
        try:
            answer = self.client.delete_objects(
                Bucket=self.name, Delete={"Objects": objects, "Quiet": True}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, keys[0], path) from exc
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            key = str(first.get("Key", ""))
            raise OSError(
                errno.EIO,
                f"could not delete {self.url(key)} ({first.get('Code', '')}: "
                f"{first.get('Message', '')})"
                + (f" and {len(errors) - 1} more" if len(errors) > 1 else ""),
                path,
            )


def _side_by_side(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """``fn`` over ``items`` in this process's threads (in this thread for one); every call
    ends before the first failure is raised."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    futures = [executor().submit(fn, item) for item in items]
    failure: BaseException | None = None
    for future in futures:
        exc = future.exception()
        if exc is not None and failure is None:
            failure = exc
    if failure is not None:
        raise failure
