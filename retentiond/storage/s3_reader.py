"""Reading the S3 backend (:mod:`retentiond.storage.s3`): :class:`S3Reader`, the port's
:class:`~retentiond.storage.port.StorageReader` below one key prefix, and the listings it is
made of. See :mod:`retentiond.storage.s3` for what a directory, a listing and ``stat_each``
are on an object store; :class:`~retentiond.storage.s3.S3Storage` is the reader of ``v2`` and
the writer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterator, MutableSequence, Sequence
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind, Names, Read
from retentiond.storage.s3_client import error_code, executor
from retentiond.storage.s3_objects import Bucket, pushed_at_of
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.s3_signed import Answer
from retentiond.storage.safe_fs import TooLarge, UnsafeEntry, components

#: stat_each lists a directory (instead of a HEAD a path) from this many paths below it
LIST_FROM = 8
#: a tags directory's ``current/link`` files are answered from one listing of it (see
#: :meth:`S3Reader._listed_tag`) from this many tags in it; a GET each below
TAGS_LIST_FROM = 2
_TAGS_DIR = f"/{layout.TAGS}/"
_INDEX = f"{layout.TAG_INDEX}/"
_DIGEST_LINK_SIZE = len(layout.DIGEST_PREFIX) + 64

FILE_DETAIL = "an object"
DIR_DETAIL = "a key prefix (a directory)"
BOTH_DETAIL = (
    "an object and a key prefix at once (a file and a directory of one name, which no disk "
    "holds and the registry never writes)"
)
_DIR, _FILE, _OTHER = Kind.DIR, Kind.FILE, Kind.OTHER
_new = tuple.__new__


Page = dict[str, Any]


def missing(path: str, url: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"nothing at {url}", path)


def entries_of(pages: Iterator[Page], prefix: str, path: str, url: str) -> list[Entry]:
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
        raise missing(path, url)
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


def names_of(pages: Iterator[Page], prefix: str, path: str, url: str) -> Names:
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
        raise missing(path, url)
    if not files:
        return Names([d for d in dirs if d], None, True)  # listed in order already
    return Names(sorted({*filter(None, dirs), *files}), None, False)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def mtime_of(answer: Answer) -> float:
    """An object's time from a GetObject or HeadObject answer: its LastModified, or, for a
    tag link that a run held and put back (copies, with new times), the push time it kept
    in its metadata (:func:`~.s3_objects.pushed_at_of`)."""
    kept = pushed_at_of(answer.metadata, answer.mtime)
    return answer.mtime if kept is None else float(int(kept))  # whole seconds, as the GET's


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
        #: the digest links below this prefix, from one listing (see :meth:`_listed_link`)
        self._links: dict[str, tuple[int, str, float]] | None = None
        #: a tags directory's tags whose link a listing proves: tag -> (hex, LastModified)
        self._tags: dict[str, tuple[str, float]] | None = None
        #: whether this directory holds few entries (its names listed): no tag listing then
        self._few = False

    def __getstate__(self) -> tuple[S3Settings, str]:
        return self.settings, self.prefix

    def __setstate__(self, state: tuple[S3Settings, str]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def close(self) -> None:
        self._first = None  # the client is the process's, shared: nothing else to release
        self._links = self._tags = None

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
            self._bucket = Bucket(self.settings)
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
        return entries_of(self._pages(path, prefix), prefix, path, self.url(prefix))

    def names(self, path: str) -> Names:
        prefix = self._dir(path)
        names = names_of(self._pages(path, prefix), prefix, path, self.url(prefix))
        if not path:
            self._few = len(names.names) < TAGS_LIST_FROM
        return names

    def read(self, path: str, limit: int) -> Read:
        """GetObject; ``TooLarge`` from its length, before any byte of the body is read."""
        answer = self.bucket.get(self._key(path), path, limit)
        if answer.length > limit:
            raise TooLarge(f"{path!r} holds {answer.length} bytes, more than {limit}", path)
        if len(answer.data) > limit:  # it is not the length it said
            raise TooLarge(f"{path!r} holds more than {limit} bytes", path)
        return _new(Read, (answer.data, mtime_of(answer)))

    def head(self, path: str, size: int) -> Read:
        """A ranged GET of the first ``size`` bytes (an empty object: a HEAD for its time);
        for a digest link (``<hex>/link``) whose listed ETag proves what it holds, nothing
        (see :meth:`_listed_link`)."""
        key = self._key(path)
        listed = self._listed_link(path, size)
        if listed is not None:
            return listed
        if size > 0:
            try:
                answer = self.bucket.get(key, path, size, first=size)
            except OSError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, ClientError) and error_code(cause)[1] == 416):
                    raise
            else:
                return _new(Read, (answer.data[:size], mtime_of(answer)))
        return Read(b"", self._head_object(path, key).mtime or 0.0)

    def _listed_link(self, path: str, size: int) -> Read | None:
        """A digest link (``<64 hex>/link``: a revision's, a ``_layers`` link, a tag's
        ``index/`` link) read from a listing instead of a GET: the registry writes
        ``sha256:<hex>`` there, the directory's own digest, and the listing gives each
        object's size and ETag, which is the MD5 of its bytes for an object written in one
        PUT. When they are those of ``sha256:<hex>``, that is what it holds; anything else
        (another content, a store whose ETags are not MD5s: encryption with KMS, an object
        written in parts) is read with a GET, as always. One listing of this reader's whole
        prefix (1000 keys a request) answers every link below it, where a GET each would
        cost a request each."""
        hexpart, _, rest = path.partition("/")
        if rest == layout.CURRENT_LINK and self.prefix.endswith(_TAGS_DIR):
            return self._listed_tag(hexpart, size)
        if rest != layout.LINK or len(hexpart) != 64 or _HEX64.fullmatch(hexpart) is None:
            return None
        if self._links is None:
            self._links = self._list_links()
        found = self._links.get(hexpart)
        if found is None:
            return None
        length, etag, mtime = found
        content = f"{layout.DIGEST_PREFIX}{hexpart}".encode()
        if (
            length != len(content)
            or etag != hashlib.md5(content, usedforsecurity=False).hexdigest()
        ):
            return None
        return _new(Read, (content[:size], mtime))

    def _list_links(self) -> dict[str, tuple[int, str, float]]:
        """``<hex>`` -> (size, ETag, LastModified) of each ``<hex>/link`` object below this
        reader's prefix, from one listing without delimiter."""
        found: dict[str, tuple[int, str, float]] = {}
        n = len(self.prefix)
        for page in self.bucket.pages(self.prefix, delimiter=False):
            for obj in page.get("Contents") or ():
                hexpart, _, rest = obj["Key"][n:].partition("/")
                if rest == layout.LINK:
                    etag = str(obj.get("ETag", "")).strip('"')
                    found[hexpart] = (int(obj["Size"]), etag, obj["LastModified"].timestamp())
        return found

    def _listed_tag(self, tag: str, size: int) -> Read | None:
        """A tag's ``current/link`` (this reader: a repository's ``_manifests/tags``) read
        from one listing of the directory, without a GET: the registry links a tag's digest
        in its ``index/sha256/<hex>/link`` before it writes ``current/link``, and the
        current link's listed size and ETag (the MD5 of its bytes) are those of
        ``sha256:<hex>`` for exactly one of them. Its push time is the link's LastModified,
        unless a run put the tag back (a copy, with a new time, that keeps the push time in
        its metadata, which no listing shows): a tag link no older than a record of
        :data:`~retentiond.storage.layout.RESTORED_LINKS` above it is read with a GET, as
        is any link the listing does not prove (another content, an ETag that is not an
        MD5, a directory of fewer than :data:`TAGS_LIST_FROM` tags)."""
        if self._few:
            return None
        if self._tags is None:
            self._tags = self._list_tags()
        found = self._tags.get(tag)
        if found is None:
            return None
        hexpart, mtime = found
        return _new(Read, (f"{layout.DIGEST_PREFIX}{hexpart}".encode()[:size], mtime))

    def _list_tags(self) -> dict[str, tuple[str, float]]:
        n = len(self.prefix)
        currents: dict[str, tuple[str, float]] = {}  # tag -> (ETag, LastModified)
        found: dict[str, tuple[str, float]] = {}
        for page in self.bucket.pages(self.prefix, delimiter=False):
            for obj in page.get("Contents") or ():
                tag, _, rest = obj["Key"][n:].partition("/")
                if rest == layout.CURRENT_LINK:
                    if int(obj["Size"]) == _DIGEST_LINK_SIZE:
                        etag = str(obj.get("ETag", "")).strip('"')
                        # whole seconds, as a GET gives it (Last-Modified): one resolution
                        currents[tag] = (etag, float(int(obj["LastModified"].timestamp())))
                elif rest.startswith(_INDEX) and tag in currents and tag not in found:
                    hexpart, _, tail = rest[len(_INDEX) :].partition("/")
                    if tail != layout.LINK or _HEX64.fullmatch(hexpart) is None:
                        continue
                    etag, mtime = currents[tag]
                    if etag == _md5(f"{layout.DIGEST_PREFIX}{hexpart}".encode()):
                        found[tag] = (hexpart, mtime)
        if found:
            self._drop_restored(found)
        return found

    def _drop_restored(self, found: dict[str, tuple[str, float]]) -> None:
        """Leave out of ``found`` every tag a run may have put back: whose link is no older
        than a record of :data:`~retentiond.storage.layout.RESTORED_LINKS` for its
        directory or one above it (one listing of the records of this repository)."""
        v2 = self.settings.key(layout.V2) + "/"
        if not self.prefix.startswith(v2):  # not a repository's tags: no record can be found
            found.clear()
            return
        tags_dir = self.prefix[len(v2) : -1]  # repositories/<name>/_manifests/tags
        repo_dir = tags_dir[: -len(layout.TAGS) - 1]
        base = self.settings.key(layout.RESTORED_LINKS) + "/"
        records: dict[str, float] = {}  # a directory below v2 -> its oldest record's time
        for page in self.bucket.pages(f"{base}{repo_dir}/", delimiter=False):
            for obj in page.get("Contents") or ():
                directory = obj["Key"][len(base) :].rpartition("/")[0]
                when = obj["LastModified"].timestamp()
                records[directory] = min(when, records.get(directory, when))
        if not records:
            return
        for tag in list(found):
            tag_dir = f"{tags_dir}/{tag}"
            since = [
                when
                for directory, when in records.items()
                if tag_dir == directory or tag_dir.startswith(directory + "/")
            ]
            # the record is written before the restore: a link put back is no older
            if since and found[tag][1] >= min(since) - 1.0:
                del found[tag]

    def head_each(self, paths: Sequence[str], size: int) -> Sequence[Read | OSError | UnsafeEntry]:
        """:meth:`head` of each of ``paths``, side by side in this process's threads (not in
        the port: a store answers many small GETs at once where a disk reads one file after
        another), each path's exception (as :meth:`head` raises it) in its place."""
        return tuple(executor().map(lambda path: self._head_or_error(path, size), paths))

    def _head_or_error(self, path: str, size: int) -> Read | OSError | UnsafeEntry:
        try:
            return self.head(path, size)
        except (OSError, UnsafeEntry) as exc:
            return exc

    def _head_object(self, path: str, key: str) -> Entry:
        answer = self.bucket.head(key, path)
        name = path.rpartition("/")[2]
        return Entry(name, _FILE, answer.length, mtime_of(answer), FILE_DETAIL)

    def stat(self, path: str) -> Entry:
        """HeadObject; when there is none, a prefix with objects is a directory (no mtime)."""
        if not path:
            if not self.bucket.has_objects(self.prefix):
                raise missing(path, self.url(self.prefix))
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
            raise missing(path, self.url(prefix))
        return S3Reader(self.settings, prefix, first)


def _mark_dir(found: MutableSequence[Entry | None], at: int, path: str) -> None:
    """``path``, found as a prefix: a directory, or both an object and one."""
    entry = found[at]
    name = path
    if entry is None:
        found[at] = Entry(name, _DIR, None, None, DIR_DETAIL)
    elif entry.kind is _FILE:
        found[at] = Entry(name, _OTHER, entry.size, entry.mtime, BOTH_DETAIL)
