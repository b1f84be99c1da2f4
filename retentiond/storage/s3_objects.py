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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from retentiond.storage import layout
from retentiond.storage.s3_client import THREADS, client, executor, port_error
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.s3_signed import Answer, signed_reads

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
    """An object below a prefix: its key relative to the prefix, size, ETag and
    LastModified (seconds since the epoch)."""

    rel: str
    size: int
    etag: str
    mtime: float = 0.0


#: the user metadata (``x-amz-meta-...``) in which a held tag link keeps its push time
PUSHED_AT = "retentiond-pushed-at"


def pushed_at_of(metadata: Mapping[str, str], last_modified: float) -> float | None:
    """The push time a held (then put back) tag link keeps in its metadata, when it is a
    time no later than the object's own LastModified (a copy is never older than what it
    copies); else None."""
    text = metadata.get(PUSHED_AT)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= last_modified else None


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
    """The operations on one bucket, through this process's connections (made on first use):
    reads through :mod:`.s3_signed` (boto3 with Signature Version 2), writes through the
    boto3 client; ``url(key)`` names a key in messages."""

    def __init__(self, settings: S3Settings) -> None:
        self.name, self.settings = settings.bucket, settings
        self._reads = signed_reads(settings)

    @property
    def client(self) -> S3Client:
        """This process's boto3 client (made on first use: a plan never makes one)."""
        return client(self.settings)

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
                page = self._page(kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self.fail(exc, prefix, None) from exc
            yield page
            following = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not following:
                return
            kwargs["ContinuationToken"] = following

    def _page(self, kwargs: dict[str, object]) -> dict[str, Any]:
        if self._reads is None:
            page: dict[str, Any] = self.client.list_objects_v2(**kwargs)  # type: ignore[arg-type, assignment]
            return page
        return self._reads.list_page(
            str(kwargs["Prefix"]),
            delimiter="Delimiter" in kwargs,
            start_after=str(kwargs.get("StartAfter", "")),
            max_keys=int(kwargs["MaxKeys"]),  # type: ignore[call-overload]
            token=str(kwargs.get("ContinuationToken", "")),
        )

    def get(self, key: str, path: str, limit: int, first: int | None = None) -> Answer:
        """GetObject of ``key`` (``path``: the reader's, for messages): at most ``limit + 1``
        bytes of it, none when its length is above ``limit``; ``first``: a ranged GET of
        its first ``first`` bytes."""
        try:
            if self._reads is not None:
                return self._reads.get(key, limit, first)
            extra = {"Range": f"bytes=0-{first - 1}"} if first is not None else {}
            answer = self.client.get_object(Bucket=self.name, Key=key, **extra)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, key, path) from exc
        body = answer["Body"]
        try:
            total = int(answer.get("ContentLength", 0))
            ranged = str(answer.get("ContentRange", ""))
            if "/" in ranged and ranged.rpartition("/")[2].isdigit():
                total = int(ranged.rpartition("/")[2])
            data = b"" if total > limit and first is None else body.read(limit + 1)
        except (BotoCoreError, OSError, HTTPError) as exc:
            raise OSError(errno.EIO, f"cannot read {self.url(key)}: {exc}", None) from exc
        finally:
            body.close()
        modified = answer["LastModified"].timestamp()
        return Answer(data, total, modified, answer.get("Metadata") or {})

    def head(self, key: str, path: str) -> Answer:
        """HeadObject of ``key``: its length, time and metadata (no body)."""
        try:
            if self._reads is not None:
                return self._reads.head(key)
            answer = self.client.head_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, key, path) from exc
        length, modified = int(answer.get("ContentLength", 0)), answer["LastModified"].timestamp()
        return Answer(b"", length, modified, answer.get("Metadata") or {})

    def objects(self, prefix: str) -> list[Obj]:
        """Every object below ``prefix`` (a key prefix ending with ``/``), all levels."""
        n = len(prefix)
        found: list[Obj] = []
        for page in self.pages(prefix, delimiter=False):
            for obj in page.get("Contents") or ():
                found.append(
                    Obj(
                        obj["Key"][n:],
                        int(obj["Size"]),
                        str(obj.get("ETag", "")),
                        obj["LastModified"].timestamp(),
                    )
                )
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

    def pushed_at(self, key: str, listed: float, path: str) -> float:
        """The time the registry wrote the object ``key`` (a tag's ``current/link``): the
        :data:`PUSHED_AT` a hold kept in its metadata (a link put back by ``undo`` or by a
        rollback), else its LastModified (``listed``)."""
        answer = self.head(key, path)
        kept = pushed_at_of(answer.metadata, answer.mtime)
        return kept if kept is not None else listed

    def copy_stamped(self, src: str, dst: str, pushed_at: float, path: str) -> None:
        """Copy the small object ``src`` to ``dst`` with ``pushed_at`` in its metadata (a
        copy's own LastModified is the time of the copy)."""
        source = {"Bucket": self.name, "Key": src}
        try:
            self.client.copy_object(
                Bucket=self.name,
                Key=dst,
                CopySource=source,  # type: ignore[arg-type]
                MetadataDirective="REPLACE",
                Metadata={PUSHED_AT: f"{pushed_at:.6f}"},
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.fail(exc, src, path) from exc

    def copy(self, src: str, dst: str, size: int, path: str) -> None:
        """Copy the object ``src`` to ``dst`` in this bucket (in parts when large), its
        metadata with it."""
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
