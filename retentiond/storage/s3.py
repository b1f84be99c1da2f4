"""The S3 backend of the storage port: a registry's storage tree in a bucket of an S3-compatible
object store (AWS S3, Ceph RGW, MinIO, R2...), as the registry's ``s3`` driver writes it.

:class:`S3Storage` serves the keys ``<rootdirectory>/docker/registry/v2/...`` (the port's
paths, relative to ``v2``) and retentiond's quarantine, ``<rootdirectory>/retentiond-quarantine/
...``, in the same bucket; :meth:`~S3Reader.below` gives an :class:`S3Reader` scoped to a key
prefix. :func:`open_s3_storage` opens one after checking that the bucket answers. The client
(:mod:`.s3_client`) is made per process, on first use: readers pickled into forked workers
are their settings and prefix, nothing more.

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
:data:`LIST_FROM` paths or more is answered by one listing of that directory without delimiter
(from its first wanted key, stopping after its last); a smaller group by a HEAD a path, side
by side. :meth:`~S3Reader.below` lists the first page of the directory it checks, and the new
reader's first listing of itself starts from that page: a scoped reader costs no request its
listing does not make anyway.

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
  a restore of this held directory interrupted; every object is copied back, the links last
  (``current/link`` the very last), then the held copy deleted, its marker first.
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

A copy is a new object, with a new ``LastModified``: a tag that ``undo`` puts back on S3 has the
time of the undo as its push time (its ``current/link``'s mtime), where a filesystem's rename
keeps the old one. (A cheap fix, not built: write the original ``LastModified`` of each link
into the held copy's metadata, ``x-amz-meta-retentiond-mtime``, at hold, and read it back... but
a restored object's own time is the one a listing gives, so the readers would have to read
that metadata too; or keep the tags' push times in the run's state and prefer them, for tags
put back by ``undo``, until they are pushed again.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, MutableSequence, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from urllib3.exceptions import HTTPError

from retentiond.errors import StorageError
from retentiond.logs import get_logger
from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind, Names, Read
from retentiond.storage.s3_client import client, error_code, executor, make_client
from retentiond.storage.s3_objects import Bucket, Obj, by_tier, same_copy
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.safe_fs import BadComponent, TooLarge, UnsafeEntry, components

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

#: in a held directory: the object written once every object is copied
WHOLE = ".retentiond-whole"
#: stat_each lists a directory (instead of a HEAD a path) from this many paths below it
LIST_FROM = 8

FILE_DETAIL = "an object"
DIR_DETAIL = "a key prefix (a directory)"
BOTH_DETAIL = (
    "an object and a key prefix at once (a file and a directory of one name, which no disk "
    "holds and the registry never writes)"
)
_DIR, _FILE, _OTHER = Kind.DIR, Kind.FILE, Kind.OTHER
_new = tuple.__new__
_log = get_logger(component="s3")

Page = dict[str, Any]


def _missing(path: str, url: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"nothing at {url}", path)


def _entries(pages: Iterator[Page], prefix: str, path: str, url: str) -> list[Entry]:
    """The entries of the listing ``pages`` of ``prefix``; FileNotFoundError when it has no
    object at all."""
    n = len(prefix)
    dirs: list[str] = []
    files: dict[str, Entry] = {}
    seen = False
    for page in pages:
        common = page.get("CommonPrefixes") or ()
        contents = page.get("Contents") or ()
        seen = seen or bool(common) or bool(contents)
        dirs += [p["Prefix"][n:-1] for p in common]
        for obj in contents:
            name = obj["Key"][n:]
            if name:  # else the directory's own marker
                files[name] = _new(
                    Entry,
                    (name, _FILE, obj["Size"], obj["LastModified"].timestamp(), FILE_DETAIL, None),
                )
    if not seen:
        raise _missing(path, url)
    entries = []
    for name in dirs:
        if not name:
            continue  # a key with "//": no path names it (the registry's neither)
        both = files.pop(name, None)
        if both is None:
            entries.append(_new(Entry, (name, _DIR, None, None, DIR_DETAIL, None)))
        else:
            entries.append(Entry(name, _OTHER, both.size, both.mtime, BOTH_DETAIL))
    entries += files.values()
    return entries


def _names(pages: Iterator[Page], prefix: str, path: str, url: str) -> Names:
    n = len(prefix)
    dirs: list[str] = []
    files: list[str] = []
    seen = False
    for page in pages:
        common = page.get("CommonPrefixes") or ()
        contents = page.get("Contents") or ()
        seen = seen or bool(common) or bool(contents)
        dirs += [p["Prefix"][n:-1] for p in common]
        files += [name for obj in contents if (name := obj["Key"][n:])]
    if not seen:
        raise _missing(path, url)
    if not files:
        return Names([d for d in dirs if d], None, True)  # listed in order already
    return Names(sorted({*filter(None, dirs), *files}), None, False)


def _mtime(answer: Any) -> float:
    return float(answer["LastModified"].timestamp())


class S3Reader:
    """The port's reading (:class:`~retentiond.storage.port.StorageReader`) below one key
    prefix (``prefix``, ending with ``/``); paths relative to it. Pickled (a task for a forked
    worker) it is its settings and prefix: the worker makes its own client.

    ``first``: the first page of this prefix's listing, already read (by :meth:`below`): the
    first listing of the reader itself starts from it."""

    def __init__(self, settings: S3Settings, prefix: str, first: Page | None = None) -> None:
        self.settings = settings
        self.prefix = prefix
        self._first = first
        self._pid = -1
        self._bucket: Bucket | None = None

    def __getstate__(self) -> tuple[S3Settings, str]:
        return self.settings, self.prefix

    def __setstate__(self, state: tuple[S3Settings, str]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def close(self) -> None:
        self._first = None  # the client is the process's, shared: nothing else to release

    def __enter__(self) -> S3Reader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- keys ----------------------------------------------------------------------------------

    @property
    def bucket(self) -> Bucket:
        """The bucket, through this process's client."""
        pid = os.getpid()
        if self._bucket is None or self._pid != pid:
            self._bucket = Bucket(client(self.settings), self.settings)
            self._pid = pid
        return self._bucket

    def _key(self, path: str) -> str:
        """The key of the object ``path``; BadComponent unless a plain relative path."""
        components(path)
        return self.prefix + path

    def _dir(self, path: str) -> str:
        """The key prefix of the directory ``path`` (``""``: the reader's)."""
        if not path:
            return self.prefix
        components(path)
        return f"{self.prefix}{path}/"

    def url(self, key: str) -> str:
        return f"s3://{self.settings.bucket}/{key}"

    def _pages(self, path: str, prefix: str) -> Iterator[Page]:
        """The listing of ``prefix`` with delimiter, from the page :meth:`below` read when
        there is one (for the reader's own directory, once)."""
        first = self._first if not path else None
        if first is None:
            return self.bucket.pages(prefix, delimiter=True)
        self._first = None
        return self._resume(first, prefix)

    def _resume(self, first: Page, prefix: str) -> Iterator[Page]:
        yield first
        token = first.get("NextContinuationToken")
        if first.get("IsTruncated") and token:
            yield from self.bucket.pages(prefix, delimiter=True, token=token)

    # -- reading -------------------------------------------------------------------------------

    def list(self, path: str) -> list[Entry]:
        prefix = self._dir(path)
        return _entries(self._pages(path, prefix), prefix, path, self.url(prefix))

    def names(self, path: str) -> Names:
        prefix = self._dir(path)
        return _names(self._pages(path, prefix), prefix, path, self.url(prefix))

    def _get(self, path: str, key: str, **extra: str) -> GetObjectOutputTypeDef:
        bucket = self.bucket
        try:
            return bucket.client.get_object(Bucket=bucket.name, Key=key, **extra)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail(exc, key, path) from exc

    def read(self, path: str, limit: int) -> Read:
        """GetObject; ``TooLarge`` from its length, before any byte of the body is read."""
        key = self._key(path)
        answer = self._get(path, key)
        body = answer["Body"]
        try:
            size = answer.get("ContentLength", 0)
            if size > limit:
                raise TooLarge(f"{path!r} holds {size} bytes, more than {limit}", path)
            data = body.read(limit + 1)
            if len(data) > limit:  # it is not the length it said
                raise TooLarge(f"{path!r} holds more than {limit} bytes", path)
        except (BotoCoreError, OSError, HTTPError) as exc:
            raise OSError(errno.EIO, f"cannot read {self.url(key)}: {exc}", None) from exc
        finally:
            body.close()
        return _new(Read, (data, _mtime(answer)))

    def head(self, path: str, size: int) -> Read:
        """A ranged GET of the first ``size`` bytes (an empty object: a HEAD for its time)."""
        key = self._key(path)
        if size > 0:
            try:
                answer = self._get(path, key, Range=f"bytes=0-{size - 1}")
            except OSError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, ClientError) and error_code(cause)[1] == 416):
                    raise
            else:
                body = answer["Body"]
                try:
                    data = body.read(size)
                except (BotoCoreError, OSError, HTTPError) as exc:
                    raise OSError(errno.EIO, f"cannot read {self.url(key)}: {exc}", None) from exc
                finally:
                    body.close()
                return _new(Read, (data[:size], _mtime(answer)))
        return Read(b"", self._head_object(path, key).mtime or 0.0)

    def _head_object(self, path: str, key: str) -> Entry:
        bucket = self.bucket
        try:
            answer = bucket.client.head_object(Bucket=bucket.name, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail(exc, key, path) from exc
        name = path.rpartition("/")[2]
        return Entry(name, _FILE, answer.get("ContentLength", 0), _mtime(answer), FILE_DETAIL)

    def stat(self, path: str) -> Entry:
        """HeadObject; when there is none, a prefix with objects is a directory (no mtime)."""
        if not path:
            if not self.bucket.has_objects(self.prefix):
                raise _missing(path, self.url(self.prefix))
            return Entry("", _DIR, None, None, DIR_DETAIL)
        key = self._key(path)
        try:
            return self._head_object(path, key)
        except FileNotFoundError:
            if not self.bucket.has_objects(key + "/"):
                raise
        return Entry(path.rpartition("/")[2], _DIR, None, None, DIR_DETAIL)

    def stat_each(self, paths: Sequence[str]) -> Sequence[Entry | None]:
        found: list[Entry | None] = [None] * len(paths)
        groups: dict[str, list[int]] = {}
        for at, path in enumerate(paths):
            parts = components(path)
            groups.setdefault(parts[0] if len(parts) > 2 else "", []).append(at)
        heads: list[int] = []
        for directory, positions in groups.items():
            if len(positions) < LIST_FROM:
                heads += positions
            else:
                self._stat_listed(directory, paths, positions, found)
        if heads:
            entries = executor().map(self._stat_one, [paths[i] for i in heads])
            for at, entry in zip(heads, entries, strict=True):
                found[at] = entry
        return found

    def _stat_one(self, path: str) -> Entry | None:
        try:
            entry = self.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            exc.filename = path
            raise
        return entry._replace(name=path)

    def _stat_listed(
        self,
        directory: str,
        paths: Sequence[str],
        positions: Sequence[int],
        found: MutableSequence[Entry | None],
    ) -> None:
        """The entries of ``paths[i]`` for ``i`` in ``positions`` (all below ``directory``)
        from one listing of it without delimiter, from the first of them to past the last."""
        base = self._dir(directory)
        wanted = {self.prefix + paths[at]: at for at in positions}
        dirs = {key + "/": at for key, at in wanted.items()}
        first, last = min(wanted), max(wanted)
        try:
            for page in self.bucket.pages(base, delimiter=False, start_after=first[:-1]):
                key = ""
                for obj in page.get("Contents") or ():
                    key = obj["Key"]
                    at = wanted.get(key)
                    if at is not None:
                        found[at] = _new(
                            Entry,
                            (paths[at], _FILE, obj["Size"], obj["LastModified"].timestamp(),
                             FILE_DETAIL, None),
                        )  # fmt: skip
                        continue
                    slash = key.find("/", len(base))
                    while slash >= 0:  # a wanted path that is a prefix of this key: a directory
                        at = dirs.get(key[: slash + 1])
                        if at is not None:
                            _mark_dir(found, at, paths[at])
                        slash = key.find("/", slash + 1)
                if key > last and all(key[: len(d)] > d for d in dirs):
                    break  # past every wanted key and every key below a wanted path
        except OSError as exc:
            exc.filename = paths[positions[0]]
            raise

    def below(self, path: str) -> S3Reader:
        """A reader of the prefix ``path`` (FileNotFoundError when no object is below it),
        which starts its own first listing from the page read here."""
        prefix = self._dir(path)
        first = next(self.bucket.pages(prefix, delimiter=True))
        if not first.get("Contents") and not first.get("CommonPrefixes"):
            raise _missing(path, self.url(prefix))
        return S3Reader(self.settings, prefix, first)


def _mark_dir(found: MutableSequence[Entry | None], at: int, path: str) -> None:
    """``path``, found as a prefix: a directory, or both an object and one."""
    entry = found[at]
    name = path
    if entry is None:
        found[at] = Entry(name, _DIR, None, None, DIR_DETAIL)
    elif entry.kind is _FILE:
        found[at] = Entry(name, _OTHER, entry.size, entry.mtime, BOTH_DETAIL)


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
            raise _missing(path, self.url(prefix))
        if keys != [prefix]:
            raise OSError(errno.ENOTEMPTY, f"{self.url(prefix)} is not empty", path)
        self.bucket.delete_one(prefix, path)  # an empty directory's marker

    def remove_tree(self, path: str, ignore_errors: bool = False) -> None:
        try:
            prefix = self._dir(path)
            objs = self.bucket.objects(prefix)
            if not objs:
                raise _missing(path, self.url(prefix))
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

    def held_stat(self, held: str) -> Entry:
        """A removal held (``<run>/<held>``) is there once whole (its marker's time); a run's
        directory when any object is below it."""
        parts = _split_held(held)
        prefix = self._held_dir(held)
        name = parts[-1] if parts else ""
        if len(parts) < 2:
            if not self.bucket.has_objects(prefix):
                raise _missing(held, self.url(prefix))
            return Entry(name, _DIR, None, None, DIR_DETAIL)
        bucket = self.bucket
        try:
            answer = bucket.client.head_object(Bucket=bucket.name, Key=prefix + WHOLE)
        except (ClientError, BotoCoreError) as exc:
            raise bucket.fail(exc, prefix + WHOLE, held) from exc
        return Entry(name, _DIR, None, _mtime(answer), DIR_DETAIL)

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
            raise _missing(path, self.url(src))
        if existing:  # copies of a hold interrupted before its marker: nothing sees them
            self.bucket.delete([dst + rel for rel in existing], held)
        self.bucket.copy_all([(src + o.rel, dst + o.rel, o.size) for o in source], path)
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
            raise _missing(held, self.url(src + WHOLE))
        del kept[WHOLE]
        live = self.bucket.objects(dst)
        if any(obj.rel not in kept or not same_copy(kept[obj.rel], obj) for obj in live):
            raise FileExistsError(
                errno.EEXIST, f"{self.url(dst)} exists (pushed again since)", path
            )
        # else: nothing there, or what a restore interrupted copied back: copied again
        for tier in reversed(by_tier(kept.values(), path)):
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
            raise _missing(held, self.url(prefix))
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
    probe = make_client(settings, attempts=2, connect_timeout=5.0)
    try:
        probe.list_objects_v2(
            Bucket=settings.bucket, Prefix=settings.key(layout.V2) + "/", MaxKeys=1
        )
    except ClientError as exc:
        raise StorageError(_refused(settings, exc, where, endpoint)) from exc
    except BotoCoreError as exc:
        raise StorageError(_unreachable(settings, exc, endpoint)) from exc
    finally:
        probe.close()
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
