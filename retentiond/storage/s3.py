"""The S3 backend of the storage port: a registry's storage tree in a bucket of an S3-compatible
object store (AWS S3, Ceph RGW, MinIO, R2...), as the registry's ``s3`` driver writes it.

:class:`S3Storage` serves the keys ``<rootdirectory>/docker/registry/v2/...`` (the port's
paths, relative to ``v2``) and retentiond's quarantine, ``<rootdirectory>/retentiond-quarantine/
...``, in the same bucket; :meth:`~S3Reader.below` gives an :class:`S3Reader` scoped to a key
prefix. :func:`open_s3_storage` opens one after checking that the bucket answers. The reads
are signed and sent by :mod:`.s3_signed`, the writes by the boto3 client (:mod:`.s3_client`);
both are made per process, on first use: readers pickled into forked workers are their
settings and prefix, nothing more.

Reading. A directory is a key prefix: it exists when an object's key starts with it. A listing
is ListObjectsV2 with ``/`` as delimiter, 1000 keys a page: its common prefixes are
directories, its objects files with their size and mtime (``LastModified``); no store order
(:attr:`~retentiond.storage.port.Entry.order` None). What a disk cannot hold never passes for
what it is not: a zero-byte "directory marker" (the directory's own key, ending in ``/``) is
not an entry, and a name that is both an object and a prefix (keys ``a`` and ``a/b``) is
:attr:`~retentiond.storage.port.Kind.OTHER` (the readers refuse it as they refuse a FIFO). A
directory has no mtime (a :meth:`~S3Reader.stat` of one gives None). :meth:`~S3Reader.
stat_each` answers from listings: the paths are grouped by the directory whose listing covers
them (the first component of a path of three or more, else the reader's own), and a group of
:data:`~retentiond.storage.s3_reader.LIST_FROM` paths or more is answered by one listing of
that directory without delimiter (from its first wanted key, stopping after its last); a
smaller group by a HEAD a path, side by side. :meth:`~S3Reader.below` lists the first page of
the directory it checks, and the new reader's first listing of itself starts from that page: a
scoped reader costs no request its listing does not make anyway.

Changing. There is no rename: a move copies, then deletes, and keeps the port's promises after
a crash at any point (``kill -9``) as follows.

- :meth:`~S3Storage.hold`: every object of the directory is copied into the quarantine (side by
  side), then the marker ``<held>/.retentiond-whole`` is written, last: a held directory
  exists (:meth:`~S3Storage.held_stat`) only once it is whole. Then the originals are deleted:
  a tag's ``current/link`` first, then revision links, then the rest. A hold interrupted
  before its marker left copies that nothing sees (deleted by the next hold of that name); one
  interrupted after it left the directory partly deleted, without its links: calling ``hold``
  again deletes what is left of it (only objects that are the held copies' twins: anything
  pushed since is a ``FileExistsError``).
- :meth:`~S3Storage.restore`: ``FileExistsError`` when the directory has objects that are not
  a restore of this held directory interrupted; when it holds tag links, a record
  ``<rootdirectory>/retentiond-restored/<path>/<held>@<id>`` is written first (see below);
  every object is copied back, the links last (``current/link`` the very last), then the held
  copy deleted, its marker first.
- :meth:`~S3Storage.remove_held`, :meth:`~S3Storage.remove_tree`: DeleteObjects, 1000 keys a
  request, each key's error checked (a key that could not be deleted is an ``OSError``);
  markers first.
- The quarantine's directories (``""``, a run's) have a zero-byte marker object, their own key
  ending in ``/``, written by :meth:`~S3Storage.quarantine_dir` with ``create``; a directory is
  there when any object is below it (its marker, or what it holds).
- :meth:`~S3Storage.make_dirs` makes nothing (a key needs no parent); :meth:`~S3Storage.
  remove_dir` of a prefix with objects is ``OSError`` (not empty), of one without any a
  ``FileNotFoundError`` (it is gone: an object store deletes a directory with its last object),
  and deletes a directory marker when that is all there is.

An object above 1 GiB (an ``_uploads`` data file can be above CopyObject's 5 GiB) is copied in
parts by boto3's managed copy.

A copy is a new object, with a new ``LastModified``, where a filesystem's rename keeps the
old mtime; a tag's push time is its ``current/link``'s. So :meth:`~S3Storage.hold` copies each
tag link with its push time in its metadata (``x-amz-meta-retentiond-pushed-at``: the
LastModified from the listing, or the time such a link already kept, read with one HEAD),
:meth:`~S3Storage.restore` keeps the metadata, and the readers' GetObject answer, which carries
it at no cost, gives that time (never later than the object's own LastModified). A tag put back
by ``undo`` or by the rollback of an interrupted run keeps its push time; without that, the
rollback of a run that deleted old tags made them the newest, and the next run kept them and
deleted the real newest one (found by the kill -9 test). A push of the tag writes a new object
without it. (The metadata is as trusted as the tree: whoever writes the bucket can set it.)
A listing shows no metadata, and the readers take most tag links from one (:meth:`~S3Reader.
_listed_tag`): so a restore of tag links writes a record first, its own LastModified earlier
than any link it puts back, and a tag link no older than a record for its directory or one
above it is read with a GET. Every attempt writes its own record (a unique name), and records
are never deleted: a newer record in place of an older one would let a link put back before it
pass for a push.
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Sequence

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from retentiond.errors import StorageError
from retentiond.logs import get_logger
from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind
from retentiond.storage.s3_client import error_code, make_client
from retentiond.storage.s3_objects import Obj, by_tier, same_copy
from retentiond.storage.s3_reader import DIR_DETAIL, S3Reader, missing, mtime_of
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.s3_signed import SignedReads
from retentiond.storage.safe_fs import BadComponent, UnsafeEntry, components

__all__ = ["WHOLE", "S3Reader", "S3Storage", "open_s3_storage"]

#: in a held directory: the object written once every object is copied
WHOLE = ".retentiond-whole"
_log = get_logger(component="s3")


def _tag_links(objs: list[Obj], base: str) -> tuple[list[Obj], list[Obj]]:
    """The tag ``current/link`` objects among ``objs`` (below ``base``), and the others."""
    tiers = by_tier(objs, base)
    return tiers[0], [o for tier in tiers[1:] for o in tier]


def _split_held(held: str) -> list[str]:
    parts = components(held) if held else []
    if len(parts) > 2:
        raise ValueError(f"{held!r} is not a path of the quarantine")
    return parts


class S3Storage(S3Reader):
    """The port (:class:`~retentiond.storage.port.StorageReader` and
    :class:`~retentiond.storage.port.StorageWriter`) over ``<rootdirectory>/docker/registry/
    v2/`` in ``settings.bucket``, and the quarantine beside it. See the module's docstring
    for how each move keeps its promises after a crash."""

    def __init__(self, settings: S3Settings) -> None:
        super().__init__(settings, settings.key(layout.V2) + "/")
        self.quarantine = settings.key(layout.QUARANTINE) + "/"
        self.restored = settings.key(layout.RESTORED_LINKS) + "/"

    def __getstate__(self) -> tuple[S3Settings, str]:
        return self.settings, self.prefix

    def __setstate__(self, state: tuple[S3Settings, str]) -> None:
        self.__init__(state[0])  # type: ignore[misc]

    def __enter__(self) -> S3Storage:
        return self

    def location(self, path: str) -> str:
        """``s3://bucket/<rootdirectory>/docker/registry/v2/<path>``."""
        return self.url(self.prefix + path if path else self.prefix.rstrip("/"))

    def _held_dir(self, held: str) -> str:
        _split_held(held)
        return f"{self.quarantine}{held}/" if held else self.quarantine

    def _held_url(self, held: str) -> str:
        return self.url(self._held_dir(held))

    # -- the tree ------------------------------------------------------------------------------

    def is_dir(self, path: str) -> bool:
        return self.bucket.has_objects(self._dir(path))

    def can_change(self, path: str) -> bool:
        """True: whether the credentials may write is known only by writing (the quarantine's
        probe, :meth:`check_quarantine_writable`)."""
        self._dir(path)
        return True

    def make_dirs(self, path: str) -> None:
        """Nothing to make: a key needs no parent."""
        self._dir(path)

    def remove_dir(self, path: str) -> None:
        prefix = self._dir(path)
        page = next(self.bucket.pages(prefix, delimiter=False, max_keys=2))
        keys = [obj["Key"] for obj in page.get("Contents") or ()]
        if not keys:
            raise missing(path, self.url(prefix))
        if keys != [prefix]:
            raise OSError(errno.ENOTEMPTY, f"{self.url(prefix)} is not empty", path)
        self.bucket.delete_one(prefix, path)  # an empty directory's marker

    def remove_tree(self, path: str, ignore_errors: bool = False) -> None:
        try:
            prefix = self._dir(path)
            objs = self.bucket.objects(prefix)
            if not objs:
                raise missing(path, self.url(prefix))
            self._delete_tiers(objs, prefix, path)
        except (OSError, UnsafeEntry):
            if not ignore_errors:
                raise

    def _delete_tiers(self, objs: Sequence[Obj], prefix: str, path: str) -> None:
        """Delete ``objs`` (below ``prefix``, the directory ``path`` below ``v2``): the
        registry's links first (tags, revisions), then the rest."""
        for tier in by_tier(objs, path):
            self.bucket.delete([prefix + obj.rel for obj in tier], path)

    # -- the quarantine ------------------------------------------------------------------------

    def quarantine_dir(self, path: str, create: bool) -> bool:
        """A quarantine directory is there when an object is below it; made (``create``) as a
        zero-byte marker, its own key ending in ``/``."""
        if "/" in path:
            raise ValueError(f"{path!r} is not a directory of the quarantine")
        prefix = self._held_dir(path)
        if create:
            self.bucket.put(prefix, b"", layout.in_quarantine(path))
            return True
        return self.bucket.has_objects(prefix)

    def check_quarantine_writable(self) -> None:
        key = self.quarantine + layout.WRITE_PROBE
        self.bucket.put(key, b"", layout.WRITE_PROBE)
        self.bucket.delete_one(key, layout.WRITE_PROBE)

    def same_store(self) -> bool:
        """True: the quarantine is in the tree's bucket (a move is a copy inside it)."""
        return True

    def moves_by_copy(self) -> bool:
        """True: there is no rename (see :meth:`hold` and :meth:`restore` for a retry)."""
        return True

    def held_stat(self, held: str) -> Entry:
        """A removal held (``<run>/<held>``) is there once whole (its marker's time); a run's
        directory when any object is below it."""
        parts = _split_held(held)
        prefix = self._held_dir(held)
        name = parts[-1] if parts else ""
        if len(parts) < 2:
            if not self.bucket.has_objects(prefix):
                raise missing(held, self.url(prefix))
            return Entry(name, Kind.DIR, None, None, DIR_DETAIL)
        answer = self.bucket.head(prefix + WHOLE, held)
        return Entry(name, Kind.DIR, None, mtime_of(answer), DIR_DETAIL)

    def hold(self, path: str, held: str) -> None:
        if len(_split_held(held)) != 2:
            raise ValueError(f"{held!r} is not a held directory of the quarantine")
        src, dst = self._dir(path), self._held_dir(held)
        if not path:
            raise BadComponent("the whole tree cannot be held", path)
        source = self.bucket.objects(src)
        if any(obj.rel == WHOLE for obj in source):
            raise UnsafeEntry(
                f"{self.url(src + WHOLE)} has the name of retentiond's marker of a whole "
                "directory held; the registry writes none",
                f"{path}/{WHOLE}",
            )
        existing = {obj.rel: obj for obj in self.bucket.objects(dst)}
        if WHOLE in existing:
            self._finish_hold(path, held, src, source, existing)
            return
        if not source:
            raise missing(path, self.url(src))
        if existing:  # copies of a hold interrupted before its marker: nothing sees them
            self.bucket.delete([dst + rel for rel in existing], held)
        tag_links, others = _tag_links(source, path)
        self.bucket.copy_all([(src + o.rel, dst + o.rel, o.size) for o in others], path)
        for o in tag_links:  # its push time kept: a copy put back is not a new push
            pushed_at = self.bucket.pushed_at(src + o.rel, o.mtime, path)
            self.bucket.copy_stamped(src + o.rel, dst + o.rel, pushed_at, path)
        note = f"{self.location(path)}\n{len(source)} objects\n".encode()
        self.bucket.put(dst + WHOLE, note, held)
        self._delete_tiers(source, src, path)
        _log.debug("s3_held", path=path, held=held, objects=len(source))

    def _finish_hold(
        self, path: str, held: str, src: str, source: list[Obj], existing: dict[str, Obj]
    ) -> None:
        """``held`` is whole already: delete what is left of ``path`` when it is all copies
        of held objects (a hold interrupted while deleting); else FileExistsError."""
        if any(obj.rel not in existing or not same_copy(existing[obj.rel], obj) for obj in source):
            raise FileExistsError(
                errno.EEXIST,
                f"{self._held_url(held)} is held already and {self.url(src)} holds other "
                "objects (pushed since)",
                held,
            )
        self._delete_tiers(source, src, path)

    def restore(self, held: str, path: str) -> None:
        if len(_split_held(held)) != 2:
            raise ValueError(f"{held!r} is not a held directory of the quarantine")
        src, dst = self._held_dir(held), self._dir(path)
        if not path:
            raise BadComponent("the whole tree cannot be restored", path)
        kept = {obj.rel: obj for obj in self.bucket.objects(src)}
        if WHOLE not in kept:
            raise missing(held, self.url(src + WHOLE))
        del kept[WHOLE]
        live = self.bucket.objects(dst)
        if any(obj.rel not in kept or not same_copy(kept[obj.rel], obj) for obj in live):
            raise FileExistsError(
                errno.EEXIST, f"{self.url(dst)} exists (pushed again since)", path
            )
        # else: nothing there, or what a restore interrupted copied back: copied again
        tiers = by_tier(kept.values(), path)
        if tiers[0]:  # tag links: their push time is in their metadata, not in a listing
            record = f"{held.replace('/', '-')}@{uuid.uuid4().hex[:16]}"
            self.bucket.put(f"{self.restored}{path}/{record}", b"", path)
        for tier in reversed(tiers):
            self.bucket.copy_all([(src + o.rel, dst + o.rel, o.size) for o in tier], path)
        self.bucket.delete_one(src + WHOLE, held)
        self.bucket.delete([src + rel for rel in kept], held)
        _log.debug("s3_restored", path=path, held=held, objects=len(kept))

    def remove_held(self, held: str) -> None:
        """Every object below ``held``: the held directories' markers first, the quarantine
        directories' own markers last."""
        prefix = self._held_dir(held)
        objs = self.bucket.objects(prefix)
        if not objs:
            raise missing(held, self.url(prefix))
        markers = [prefix + o.rel for o in objs if o.rel.rpartition("/")[2] == WHOLE]
        dirs = [prefix + o.rel for o in objs if not o.rel or o.rel.endswith("/")]
        skip = {*markers, *dirs}
        rest = [key for o in objs if (key := prefix + o.rel) not in skip]
        for keys in (markers, rest, sorted(dirs, reverse=True)):
            self.bucket.delete(keys, held)


def _describe(settings: S3Settings) -> str:
    return settings.endpoint_url or f"AWS S3 in {settings.region}"


def open_s3_storage(settings: S3Settings) -> S3Storage:
    """The storage in ``settings.bucket``, once a listing of it (one key at most, below
    ``v2``) answered: a StorageError says what is wrong and what to do when the endpoint
    cannot be reached, the bucket does not exist, the credentials are refused or there are
    none. Changes nothing."""
    where = settings.url(layout.V2)
    endpoint = _describe(settings)
    prefix = settings.key(layout.V2) + "/"
    try:
        if settings.v4auth:  # as the reads will be made (a plan makes no boto3 client)
            probe = SignedReads(settings, attempts=2, connect_timeout=5.0)
            try:
                probe.list_page(prefix, delimiter=False, start_after="", max_keys=1, token="")
            finally:
                probe.pool.clear()
        else:
            client = make_client(settings, attempts=2, connect_timeout=5.0)
            try:
                client.list_objects_v2(Bucket=settings.bucket, Prefix=prefix, MaxKeys=1)
            finally:
                client.close()
    except ClientError as exc:
        raise StorageError(_refused(settings, exc, where, endpoint)) from exc
    except BotoCoreError as exc:
        raise StorageError(_unreachable(settings, exc, endpoint)) from exc
    return S3Storage(settings)


def _refused(settings: S3Settings, exc: ClientError, where: str, endpoint: str) -> str:
    code, status = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or ""
    if code == "NoSuchBucket":
        return (
            f"the bucket {settings.bucket!r} does not exist at {endpoint}; check the s3 "
            "storage's bucket (and regionendpoint): it must be the registry's bucket "
            "(retentiond creates none)"
        )
    if code == "InvalidAccessKeyId":
        return (
            f"{endpoint} does not know the access key "
            f"{settings.accesskey or '(found in the AWS chain)'}; "
            "check the s3 storage's accesskey and secretkey (or the AWS credentials boto3 found)"
        )
    if code == "SignatureDoesNotMatch":
        return (
            f"{endpoint} refused the signature of the requests: the secret key does not match "
            "the access key; check the s3 storage's secretkey (and v4auth)"
        )
    if code in ("AccessDenied", "Forbidden") or status == 403:
        return (
            f"access denied listing {where} ({code or status}: {message}); the credentials "
            "need s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket"
        )
    if code == "PermanentRedirect" or status == 301:
        return (
            f"the bucket {settings.bucket!r} is in another region than {settings.region!r}; "
            "set the s3 storage's region to the bucket's"
        )
    return f"cannot list {where} at {endpoint}: {code or status} {message}"


def _unreachable(settings: S3Settings, exc: BotoCoreError, endpoint: str) -> str:
    if isinstance(exc, NoCredentialsError):
        return (
            f"no S3 credentials for the bucket {settings.bucket!r}: set the s3 storage's "
            "accesskey and secretkey, or give retentiond AWS credentials (AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, a profile, an instance role)"
        )
    if isinstance(exc, PartialCredentialsError):
        return f"incomplete S3 credentials ({exc}); set both accesskey and secretkey"
    if isinstance(exc, SSLError):
        return (
            f"TLS to {endpoint} failed ({exc}); give the CA in AWS_CA_BUNDLE, or set skipverify "
            "(not in production)"
        )
    return (
        f"cannot reach the S3 endpoint {endpoint} ({exc}); check the s3 storage's "
        "regionendpoint (and secure: http or https) and that the store is up"
    )
