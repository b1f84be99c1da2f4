"""Read a registry's filesystem storage tree into an :class:`~retentiond.core.inventory.Inventory`.

Only reads; never follows a symbolic link and never leaves ``<root>/docker/registry/v2``. What it
cannot trust becomes a :class:`~retentiond.core.inventory.Problem` with its path, and the planner
leaves the repository concerned alone.

It reads what a plan needs and nothing more: the names in the blob store's prefix directories,
every tag's ``current/link`` and every revision link (content and mtime), and every manifest blob
they name, once, even when many repositories link it. A tag's ``index/`` history is never read,
nor are ``_layers`` links unless asked for (``verify``).

A large tree is read by worker processes, in four phases:

1. the blob store's prefix directories, into a compact
   :class:`~retentiond.core.inventory.BlobTable` (a blob is a directory named by its digest);
2. the repositories' link files, repository by repository, as blob ids of that table
   (:class:`~retentiond.core.inventory.RepositoryColumns`);
3. the manifest blobs, each parsed once and packed into a
   :class:`~retentiond.core.inventory.ManifestTable` record; a manifest's size is the size of
   what was read, a config's or layer's the size its manifests' descriptors state (the size
   every client checks when it pulls the blob);
4. ``data`` stat'ed for the blobs no readable manifest gave a size (or two different ones).

Layer and config ``data`` files are not opened or stat'ed: a stat reads the blob directory's
and the file's inodes, 7M of the 12.5M a plan read at 1M tags, more than the inode cache of
24 GiB holds with the rest. When a blob directory turns out to
have no usable ``data`` (a manifest blob that will not open, a blob of phase 4 without ``data``),
the whole tree is read again with every ``data`` stat'ed, which is what the registry's GC counts
as a blob; the result is then exact for such a tree too.

Phases 2 to 4 run in one pool of workers, forked once the table exists, so that they share
it without a copy. They return compact values (arrays, packed records); the parent assembles
the inventory. A process that runs threads (the daemon) reads in-process instead: forking it
is not safe.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import re
import stat
import sys
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import compress
from operator import attrgetter, methodcaller
from pathlib import Path
from typing import TypeVar

from retentiond.core.inventory import (
    MANIFEST_MEDIA_TYPES,
    NO_ID,
    BlobTable,
    Inventory,
    Manifest,
    ManifestTable,
    PackedManifest,
    Problem,
    ProblemKind,
    Repository,
    RepositoryColumns,
    pack_manifest,
    record_references,
)
from retentiond.core.manifests import DIGEST_RE, ManifestError, parse_created, parse_manifest
from retentiond.errors import StorageError

V2 = ("docker", "registry", "v2")
HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
#: the registry refuses manifests larger than this; a bigger "manifest" is not one
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: the first read of a blob: the whole of almost every manifest
_FIRST_READ = 1 << 16
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDONLY | _NOFOLLOW
#: below these sizes the tree is read in-process (starting workers costs more than it saves)
PARALLEL_MIN_REPOSITORIES = 16
PARALLEL_MIN_MANIFESTS = 2000
#: tasks per worker: small enough to balance, large enough to amortize their cost
_TASKS_PER_WORKER = 8

#: a blob size not read yet
UNKNOWN_SIZE = -1
#: tell the kernel a page cache page is not needed again
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)

#: ``progress(stage, done, total)``: stage is "blob directories", "repositories" or "manifests"
Progress = Callable[[str, int, int], None]


def storage_v2(root: Path) -> Path:
    return root.joinpath(*V2)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


class LinkError(ValueError):
    """A link file that cannot be trusted."""


def _read_link(path: str, dir_fd: int | None = None) -> tuple[str, float]:
    """A ``link`` file's digest and mtime (seconds), read without following symlinks.

    ``path`` is relative to ``dir_fd`` when given (fewer path components for the kernel to
    resolve: a tree of millions of links is read mostly in path lookups)."""
    try:
        fd = os.open(path, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise LinkError("link file is missing") from exc
    except OSError as exc:
        raise LinkError(f"cannot open link: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LinkError("link is not a regular file")
        data = os.read(fd, 200)
        if st.st_blocks * 512 < st.st_blksize and data and _DONTNEED is not None:
            # less than a block: its data lives in its inode (ext4 inline_data), and reading
            # it made a 4 KiB page cache copy of 71 bytes: 9 GB at a million tags, which pushes
            # out the inode cache that makes the next plan fast
            os.posix_fadvise(fd, 0, 0, _DONTNEED)
    finally:
        os.close(fd)
    if not data:
        raise LinkError("link file is empty (an interrupted write; the registry answers 500)")
    text = data.decode("ascii", "replace")
    if DIGEST_RE.fullmatch(text) is None:
        raise LinkError(f"link does not hold a sha256 digest: {text[:80]!r}")
    return text, st.st_mtime


def read_link(path: str) -> tuple[str, datetime]:
    """Read a ``link`` file without following symlinks: its digest and mtime."""
    digest, mtime = _read_link(path)
    return digest, _utc(mtime)


def read_blob(
    v2: Path | str,
    digest: str,
    limit: int = MAX_MANIFEST_BYTES,
    store_fd: int | None = None,
) -> bytes:
    """Read a blob's data without following symlinks; FileNotFoundError when it is missing.

    ``store_fd``: an open ``blobs/sha256`` directory to resolve the path from (then ``v2`` is
    not used)."""
    hexpart = digest.split(":", 1)[1]
    if store_fd is None:
        path = f"{v2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data"
    else:
        path = f"{hexpart[:2]}/{hexpart}/data"
    fd = os.open(path, _OPEN_FLAGS, dir_fd=store_fd)
    try:
        # no fstat (a syscall per manifest): a read of a regular file stops short only at its
        # end; a manifest cut short by one that did would not parse, and be reported
        data = os.read(fd, _FIRST_READ)
        if len(data) == _FIRST_READ:  # a large blob: the rest, up to the limit
            chunks = [data]
            total = len(data)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise ManifestError(f"more than {limit} bytes, larger than any manifest")
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


@dataclass
class _Reading:
    v2: Path
    problems: list[Problem] = field(default_factory=list)

    def problem(
        self, path: str | Path, message: str, kind: ProblemKind, repository: str | None = None
    ) -> None:
        self.problems.append(Problem(str(path), message, kind, repository))


def _scandir(reading: _Reading, path: str, repository: str | None = None) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        reading.problem(
            path, "expected a directory, found a file", ProblemKind.UNREADABLE, repository
        )
        return []
    except OSError as exc:
        raise StorageError(
            f"cannot read {path}: {exc.strerror}; check that retentiond runs as a user that can "
            "read the registry's storage"
        ) from exc


def _open_dir(path: str) -> int | None:
    """A directory's file descriptor to resolve paths from, or None (then full paths are used
    and any error is met, and reported, where the full path is opened)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


# -- phase 1: the blob store ----------------------------------------------------------------------


@dataclass
class _BlobPart:
    """Blobs found under some prefix directories, in shard order (see BlobTable)."""

    first_prefix: str
    prefix_count: int
    keys: bytes  # raw 32-byte digests
    counts: dict[int, int]  # shard -> how many of ``keys``
    sizes: bytes  # array("q")
    inodes: bytes  # array("Q"): the blob directory's inode, to read manifests in disk order
    #: blobs in a prefix directory that is not their own (the registry never does that)
    misplaced: list[tuple[bytes, int]]
    problems: list[Problem]


def _blob_prefixes(reading: _Reading) -> list[str]:
    """The directories under ``blobs/sha256`` (symbolic links are problems, not followed)."""
    prefixes = []
    for prefix in _scandir(reading, f"{reading.v2}/blobs/sha256"):
        if prefix.is_dir(follow_symlinks=False):
            prefixes.append(prefix.name)
        elif prefix.is_symlink():
            reading.problem(prefix.path, "symbolic link in the blob store", ProblemKind.UNREADABLE)
    return sorted(prefixes)


def _walk_blobs(v2: str, stat_data: bool, prefixes: list[str]) -> _BlobPart:
    """Every blob directory under ``prefixes``. With ``stat_data``, only those with a ``data``
    file, as the registry's GC enumerates them, with its size; without, every directory named
    by a digest, its size unknown (its name is read from the prefix directory: no inode)."""
    reading = _Reading(Path(v2))
    keys: list[bytes] = []
    sizes = array("q")
    inodes = array("Q")
    counts: dict[int, int] = {}
    misplaced: list[tuple[bytes, int]] = []
    fromhex, lstat, is_regular = bytes.fromhex, os.lstat, stat.S_ISREG
    for prefix in prefixes:
        own = int(prefix, 16) if _HEX2.fullmatch(prefix) else -1  # the first byte it holds
        buckets: dict[int, tuple[list[bytes], array[int], array[int]]] = {}
        entries = _scandir(reading, f"{v2}/blobs/sha256/{prefix}")
        plain = None if stat_data or own < 0 else _plain_prefix(prefix, entries)
        if plain is not None:
            raw_keys, seconds, prefix_inodes = plain
            keys.append(raw_keys)
            sizes.extend(array("q", [UNKNOWN_SIZE]) * len(prefix_inodes))
            inodes.extend(prefix_inodes)
            for second, count in sorted(seconds.items()):
                counts[(own << 8) | second] = count
            continue
        if stat_data:  # in inode order: on a cold cache, the inode table is read front to back
            entries.sort(key=_INODE)
        prefix_fd = _open_dir(f"{v2}/blobs/sha256/{prefix}") if entries and stat_data else None
        try:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    if entry.is_symlink():
                        reading.problem(
                            entry.path, "symbolic link in the blob store", ProblemKind.UNREADABLE
                        )
                    continue
                name = entry.name
                try:
                    raw = fromhex(name)
                except ValueError:
                    raw = b""
                valid = len(raw) == 32 and len(name) == 64 and (name.islower() or name.isdigit())
                size = UNKNOWN_SIZE
                if stat_data or not valid:
                    try:
                        if prefix_fd is None:
                            st = lstat(f"{entry.path}/data")
                        else:
                            st = lstat(f"{name}/data", dir_fd=prefix_fd)
                    except FileNotFoundError:
                        continue  # an empty blob directory: the GC ignores it too
                    if valid and not is_regular(st.st_mode):
                        reading.problem(
                            f"{entry.path}/data",
                            "blob data is not a regular file",
                            ProblemKind.UNREADABLE,
                        )
                        continue
                    size = st.st_size
                if not valid:
                    reading.problem(
                        entry.path,
                        "blob directory name is not a sha256 digest; "
                        "the registry's GC aborts on it",
                        ProblemKind.GC_ABORT,
                    )
                    continue
                if raw[0] != own:
                    misplaced.append((raw, size))
                    continue
                bucket = buckets.get(raw[1])
                if bucket is None:
                    bucket = buckets[raw[1]] = ([], array("q"), array("Q"))
                bucket[0].append(raw)
                bucket[1].append(size)
                bucket[2].append(entry.inode())
        finally:
            _close(prefix_fd)
        for second in sorted(buckets):
            bucket_keys, bucket_sizes, bucket_inodes = buckets[second]
            keys += bucket_keys
            sizes += bucket_sizes
            inodes += bucket_inodes
            counts[(own << 8) | second] = len(bucket_keys)
    return _BlobPart(
        prefixes[0] if prefixes else "",
        len(prefixes),
        b"".join(keys),
        counts,
        sizes.tobytes(),
        inodes.tobytes(),
        misplaced,
        reading.problems,
    )


def _plain_prefix(
    prefix: str, entries: list[os.DirEntry[str]]
) -> tuple[bytes, Counter[int], array[int]] | None:
    """The digests of a prefix directory as the registry writes one (nothing but directories
    named by lowercase sha256 hex digests that start with the prefix), sorted, with how many
    there are of each second byte and their inodes; a few C calls for the whole directory.
    None when anything in it is unusual: then each entry is looked at in turn."""
    if not all(map(_IS_DIR, entries)):
        return None
    entries = sorted(entries, key=_NAME)  # lowercase hex: the order of the bytes
    names = [entry.name for entry in entries]
    if not names:
        return b"", Counter(), array("Q")
    joined = "".join(names)
    if set(map(len, names)) != {64} or names[0][:2] != prefix or names[-1][:2] != prefix:
        return None  # sorted: when the first and the last start with the prefix, all do
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if raw.hex() != joined:  # upper case, or whitespace (which fromhex skips)
        return None
    return raw, Counter(raw[1::32]), array("Q", map(_INODE, entries))


_IS_DIR = methodcaller("is_dir", follow_symlinks=False)
_NAME = attrgetter("name")
_INODE = methodcaller("inode")


def _blob_inodes(parts: list[_BlobPart], blobs: BlobTable) -> array[int] | None:
    """The inode of each blob's directory, by blob id (None when the table was rebuilt)."""
    inodes = array("Q")
    for part in sorted(parts, key=lambda p: p.first_prefix):
        inodes.frombytes(part.inodes)
    return inodes if len(inodes) == blobs.id_count else None


def _blob_table(parts: list[_BlobPart]) -> BlobTable:
    parts = sorted(parts, key=lambda p: p.first_prefix)  # prefixes are shards' first bytes
    if any(part.misplaced for part in parts):  # never written by a registry: the slow way
        items: list[tuple[str, int]] = []
        for part in parts:
            sizes = array("q")
            sizes.frombytes(part.sizes)
            raws = [part.keys[i : i + 32] for i in range(0, len(part.keys), 32)]
            items += [("sha256:" + raw.hex(), size) for raw, size in zip(raws, sizes, strict=True)]
            items += [("sha256:" + raw.hex(), size) for raw, size in part.misplaced]
        return BlobTable.from_items(items)
    counts = array("Q", [0]) * (1 << 16)
    sizes = array("q")
    for part in parts:
        for shard, count in part.counts.items():
            counts[shard] = count
        sizes.frombytes(part.sizes)
    return BlobTable(b"".join(part.keys for part in parts), counts, sizes)


# -- phase 1: repositories ------------------------------------------------------------------------


@dataclass
class _RepoDir:
    name: str
    path: str
    has_layers: bool
    has_manifests: bool
    has_uploads: bool
    has_nested: bool


def _find_repositories(reading: _Reading) -> list[_RepoDir]:
    """The registry's catalog walk: every directory not starting with ``_``, recursively."""
    found: list[_RepoDir] = []
    base = f"{reading.v2}/repositories"
    stack = [("", base)]
    while stack:
        name, path = stack.pop()
        entries = _scandir(reading, path, name or None)
        nested: list[tuple[str, str]] = []
        flags = {"_layers": False, "_manifests": False, "_uploads": False}
        for entry in entries:
            if entry.is_symlink():
                reading.problem(
                    entry.path,
                    "symbolic link in the repositories tree; not followed",
                    ProblemKind.UNREADABLE,
                    name or None,
                )
                continue
            if entry.name in flags:
                flags[entry.name] = True
            elif not entry.name.startswith("_") and entry.is_dir(follow_symlinks=False):
                nested.append((f"{name}/{entry.name}" if name else entry.name, entry.path))
        if name and (flags["_layers"] or flags["_manifests"]):
            found.append(
                _RepoDir(
                    name,
                    path,
                    flags["_layers"],
                    flags["_manifests"],
                    flags["_uploads"],
                    bool(nested),
                )
            )
        stack.extend(nested)
    found.sort(key=lambda r: r.name)
    return found


def _dir_mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


@dataclass
class _RepoLinks:
    """What a worker read of one repository (the parent makes a Repository of it)."""

    index: int
    #: RepositoryColumns' fields but the blob table (never sent back: the parent has it)
    columns: tuple[str, array[int], array[float], array[int], array[float], tuple[str, ...]]
    last_activity: float | None
    layers: list[str] | None
    problems: list[Problem]
    #: tags and revisions whose manifest has no blob (reported after all the others)
    missing_problems: list[Problem]


def _links_under(
    reading: _Reading, directory: str, link: str, what: str, repository: str
) -> Iterator[tuple[os.DirEntry[str], tuple[str, float] | LinkError]]:
    """Each subdirectory of ``directory`` with its ``link`` file read (digest and mtime), or
    why it could not be; the links are opened relative to the open directory (fewer path
    lookups than full paths). An entry that is not a directory is a problem, not yielded."""
    entries = _scandir(reading, directory, repository)
    dir_fd = _open_dir(directory) if entries else None
    try:
        for entry in entries:
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                reading.problem(
                    entry.path,
                    f"{what} entry is not a directory",
                    ProblemKind.UNREADABLE,
                    repository,
                )
                continue
            read: tuple[str, float] | LinkError
            try:
                if dir_fd is None:
                    read = _read_link(f"{entry.path}/{link}")
                else:
                    read = _read_link(f"{entry.name}/{link}", dir_fd)
            except LinkError as exc:
                read = exc
            yield entry, read
    finally:
        _close(dir_fd)


def _read_repository(
    v2: str, index: int, repo: _RepoDir, read_layers: bool, blobs: BlobTable
) -> _RepoLinks:
    reading = _Reading(Path(v2))
    name = repo.name
    tags: list[tuple[str, str, float]] = []
    tags_dir = f"{repo.path}/_manifests/tags"
    for entry, read in _links_under(reading, tags_dir, "current/link", "tag", name):
        if isinstance(read, LinkError):
            reading.problem(
                f"{entry.path}/current/link",
                f"tag {entry.name!r}: {read}",
                ProblemKind.UNREADABLE,
                name,
            )
            continue
        tags.append((entry.name, *read))

    revisions: dict[str, float] = {}
    revisions_dir = f"{repo.path}/_manifests/revisions/sha256"
    for entry, read in _links_under(reading, revisions_dir, "link", "revision", name):
        if isinstance(read, LinkError):
            if str(read) == "link file is missing":
                continue  # an empty revision directory, as GC leaves behind
            kind = ProblemKind.GC_ABORT if repo.has_layers else ProblemKind.UNREADABLE
            reading.problem(f"{entry.path}/link", f"revision link: {read}", kind, name)
            continue
        digest, when = read
        if digest != "sha256:" + entry.name:
            reading.problem(
                f"{entry.path}/link",
                f"revision link holds {digest}, not the digest its directory names",
                ProblemKind.UNREADABLE,
                name,
            )
            continue
        revisions[digest] = when

    layers: list[str] | None = None
    if read_layers:
        linked = set()
        for entry in _scandir(reading, f"{repo.path}/_layers/sha256", name):
            if entry.is_dir(follow_symlinks=False) and HEX64.fullmatch(entry.name):
                try:
                    digest, _ = _read_link(f"{entry.path}/link")
                except LinkError:
                    continue
                linked.add(digest)
        layers = sorted(linked)

    signs = [
        max(revisions.values(), default=None),
        max((t[2] for t in tags), default=None),
        _dir_mtime(f"{repo.path}/_layers/sha256"),
        _dir_mtime(f"{repo.path}/_uploads"),
        *(_dir_mtime(e.path) for e in _scandir(reading, f"{repo.path}/_uploads", name)),
    ]
    present = [t for t in signs if t is not None]
    if revisions and not repo.has_layers:
        reading.problem(
            repo.path,
            "repository has manifests but no _layers directory: registry 2.8's GC skips it and "
            "would delete the blobs of its images",
            ProblemKind.GC_HAZARD,
            name,
        )
    tags.sort(key=lambda t: t[0])
    revision_ids = blobs.ids_of(revisions)
    known = dict(zip(revisions, revision_ids, strict=True))  # tags name revisions, mostly
    tag_ids = [known[t[1]] if t[1] in known else blobs.id_of(t[1]) for t in tags]
    missing = [d for d, i in zip(revisions, revision_ids, strict=True) if i < 0]
    missing += [t[1] for t, i in zip(tags, tag_ids, strict=True) if i < 0]
    columns = (
        "\0".join(t[0] for t in tags),
        array("I", (NO_ID if i < 0 else i for i in tag_ids)),
        array("d", (t[2] for t in tags)),
        array("I", (NO_ID if i < 0 else i for i in revision_ids)),
        array("d", revisions.values()),
        tuple(missing),
    )
    missing_problems = _Reading(Path(v2))
    if missing:
        base = f"{v2}/repositories/{name}/_manifests"
        for (tag, digest, _), tag_id in zip(tags, tag_ids, strict=True):
            if tag_id < 0:
                missing_problems.problem(
                    f"{base}/tags/{tag}/current/link",
                    f"tag {tag!r} points to {digest}, whose blob is missing",
                    ProblemKind.UNREADABLE,
                    name,
                )
        for digest, revision_id in zip(revisions, revision_ids, strict=True):
            if revision_id < 0:
                missing_problems.problem(
                    f"{base}/revisions/" + digest.replace(":", "/"),
                    f"revision {digest} has no blob",
                    ProblemKind.UNREADABLE,
                    name,
                )
    return _RepoLinks(
        index=index,
        columns=columns,
        last_activity=max(present) if present else None,
        layers=layers,
        problems=reading.problems,
        missing_problems=missing_problems.problems,
    )


def _read_repositories(
    v2: str, read_layers: bool, blobs: BlobTable | None, chunk: list[tuple[int, _RepoDir]]
) -> list[_RepoLinks]:
    table = _shared_blobs(blobs)
    return [_read_repository(v2, index, repo, read_layers, table) for index, repo in chunk]


def _repository(repo: _RepoDir, links: _RepoLinks, blobs: BlobTable) -> Repository:
    return Repository(
        name=repo.name,
        listed_by_gc=repo.has_layers,
        last_activity=_utc(links.last_activity) if links.last_activity is not None else None,
        layers=frozenset(links.layers) if links.layers is not None else None,
        has_nested=repo.has_nested,
        columns=RepositoryColumns(blobs, *links.columns),
    )


# -- phase 3: manifests ---------------------------------------------------------------------------

#: the blob table, for the workers of phases 2 and 3 (set before they are forked)
_FORKED_BLOBS: BlobTable | None = None


def _shared_blobs(blobs: BlobTable | None) -> BlobTable:
    table = blobs if blobs is not None else _FORKED_BLOBS
    assert table is not None, "the blob table is set before the workers are forked"
    return table


#: a manifest that is more than its record (see PackedManifest.plain), as a worker returns it:
#: the fields of its PackedManifest, its digest and the error that made it unreadable (or None)
_Parsed = tuple[bytes, str, tuple[str, ...], str | None, tuple[str, ...], str | None]


@dataclass
class _ParsedChunk:
    """What a worker of phase 3 returns."""

    records: list[bytes]  # the usual manifest: its record is all there is to it
    manifests: list[_Parsed]
    created: dict[str, datetime]
    #: blob ids and sizes: of the manifests read (``read``), as descriptors state (``stated``;
    #: every size a descriptor states, once a chunk, whatever the parent knows already, so
    #: that a disagreement is seen however the manifests fall into chunks)
    read_ids: array[int] = field(default_factory=lambda: array("I"))
    read_sizes: array[int] = field(default_factory=lambda: array("q"))
    stated_ids: array[int] = field(default_factory=lambda: array("I"))
    stated_sizes: array[int] = field(default_factory=lambda: array("q"))
    #: a manifest blob whose size was not read could not be opened: its ``data`` may be missing
    inexact: bool = False

    def state(self, blob_ids: Iterable[int], sizes: Iterable[int], taken: dict[int, int]) -> None:
        """Add the sizes not in ``taken`` (what this chunk stated already: base layers and
        configs recur in many manifests)."""
        for blob_id, size in zip(blob_ids, sizes, strict=True):
            if blob_id == NO_ID or size < 0:
                continue
            if taken.get(blob_id) != size:
                taken[blob_id] = size
                self.stated_ids.append(blob_id)
                self.stated_sizes.append(size)


def _parse_manifests(
    v2: str, read_created: bool, sized: bool, blobs: BlobTable | None, blob_ids: list[int]
) -> _ParsedChunk:
    """Read and pack the manifest of each blob; and the ``created`` times of their configs.

    ``sized``: the table knows every blob's size; else the sizes found are returned."""
    table = _shared_blobs(blobs)
    media_types = list(MANIFEST_MEDIA_TYPES)  # parse_manifest gives no other type
    chunk = _ParsedChunk([], [], {})
    configs: set[str] = set()
    taken: dict[int, int] = {}
    store_fd = _open_dir(f"{v2}/blobs/sha256")
    try:
        for blob_id in blob_ids:
            digest = table.digest_of(blob_id)
            manifest: Manifest | None = None
            error: str | None = None
            try:
                data = read_blob(v2, digest, store_fd=store_fd)
                if not sized:
                    chunk.read_ids.append(blob_id)
                    chunk.read_sizes.append(len(data))
                manifest = parse_manifest(digest, data)
            except FileNotFoundError:
                error = "manifest blob vanished while reading"
                chunk.inexact = chunk.inexact or not sized
            except ManifestError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"cannot read: {exc.strerror}"
                chunk.inexact = chunk.inexact or not sized
            packed = pack_manifest(manifest, blob_id, table, media_types)
            if not sized and manifest is not None and manifest.blob_sizes:
                ids = record_references(packed.record)[len(manifest.children) :]
                chunk.state(ids, manifest.blob_sizes, taken)
            if packed.plain and error is None:
                chunk.records.append(packed.record)
            else:
                chunk.manifests.append(
                    (packed.record, digest, packed.children, packed.subject, packed.absent, error)
                )
            if read_created and manifest is not None and manifest.config:
                configs.add(manifest.config)
    finally:
        _close(store_fd)
    for config in sorted(configs):
        try:
            when = parse_created(read_blob(v2, config, limit=16 * 1024 * 1024))
        except (OSError, ManifestError):
            continue
        if when is not None:
            chunk.created[config] = when
    return chunk


# -- running the phases ---------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _chunks(items: list[T], count: int) -> list[list[T]]:
    size = max(1, -(-len(items) // count))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run(fn: Callable[[T], R], tasks: list[T], workers: int) -> Iterator[R]:
    """``fn`` over ``tasks``, in forked worker processes when ``workers > 1``; any order."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(fn, tasks)


class _Forked:
    """The workers of phases 2 to 4: forked once, when first needed, after the blob table
    exists (they share it through the fork); a pool costs tens of milliseconds to start.

    ``blobs`` is what a task passes on: None in a worker (it finds the table in
    ``_FORKED_BLOBS``), the table itself when the phase runs in-process."""

    def __init__(self, blobs: BlobTable, count: int) -> None:
        self.table, self.count = blobs, count
        self._pool: multiprocessing.pool.Pool | None = None

    def forks(self, count: int, tasks: int) -> bool:
        return min(count, self.count) > 1 and tasks > 1

    def blobs(self, count: int, tasks: int) -> BlobTable | None:
        return None if self.forks(count, tasks) else self.table

    def run(self, fn: Callable[[T], R], tasks: list[T], count: int) -> Iterator[R]:
        """``fn`` over ``tasks``, in any order; in the workers when ``forks(count, ...)``."""
        if not self.forks(count, len(tasks)):
            yield from map(fn, tasks)
            return
        if self._pool is None:
            global _FORKED_BLOBS
            _FORKED_BLOBS = self.table
            try:
                self._pool = multiprocessing.get_context("fork").Pool(self.count)
            finally:
                _FORKED_BLOBS = None  # the workers have their copy
        yield from self._pool.imap_unordered(fn, tasks)

    def __enter__(self) -> _Forked:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def _workers(requested: int | None, size: int, threshold: int) -> int:
    """How many processes to read ``size`` things with (1: in-process)."""
    count = _wanted(requested, size, threshold)
    return count if count > 1 and _can_fork() else 1


def _wanted(requested: int | None, size: int, threshold: int) -> int:
    """:func:`_workers`, were this process free to fork (a pool's own threads make it look
    as if it were not, once the pool runs)."""
    if requested is not None:
        return requested
    if size < threshold:
        return 1
    return min(16, 2 * (os.cpu_count() or 1))  # more than the CPUs: a cold cache waits on disk


def read_blob_sizes(root: Path) -> dict[str, int]:
    """Every blob with data and its size (what the GC's sweep enumerates)."""
    reading = _Reading(storage_v2(Path(root)))
    part = _walk_blobs(str(reading.v2), True, _blob_prefixes(reading))
    return dict(_blob_table([part]).items())


def read_inventory(
    root: Path,
    *,
    read_created: bool = False,
    read_layers: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    stat_blobs: bool = False,
) -> Inventory:
    """Read the tree under ``root`` (the registry's ``rootdirectory``).

    ``workers``: processes to read with; by default two per CPU (at most 16) for a large
    tree, none for a small one. ``progress`` is called as repositories and manifests are read.
    ``stat_blobs``: stat every blob's ``data`` (its size as on disk, and only directories with
    data are blobs: the GC's count even when a blob directory lost its data); by default the
    sizes of layers and configs are the ones their manifests state (see the module's doc).
    """
    root = Path(root)
    v2 = storage_v2(root)
    if not v2.is_dir():
        raise StorageError(
            f"{v2} does not exist: registry.root must be the registry's storage rootdirectory "
            "(the directory that contains docker/registry/v2)"
        )
    args = (root, v2, read_created, read_layers, workers, progress or _no_progress)
    inventory = None if stat_blobs else _read_tree(*args, sized=False)
    if inventory is None:  # a blob directory without usable data: read as the GC counts
        inventory = _read_tree(*args, sized=True)
        assert inventory is not None, "a sized read always completes"
    return inventory


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _read_tree(
    root: Path,
    v2: Path,
    read_created: bool,
    read_layers: bool,
    workers: int | None,
    report: Progress,
    *,
    sized: bool,
) -> Inventory | None:
    """The four phases; ``sized``: stat every blob's data in phase 1 (None: without, a blob
    directory turned out to have no usable data)."""
    reading = _Reading(v2)
    prefixes = _blob_prefixes(reading)
    repo_dirs = _find_repositories(reading)

    # 1: the blob store
    count = _workers(workers, len(repo_dirs), PARALLEL_MIN_REPOSITORIES)
    blob_parts: list[_BlobPart] = []
    report("blob directories", 0, len(prefixes))
    walk = partial(_walk_blobs, str(v2), sized)
    for part in _run(walk, _chunks(prefixes, 8 * count), count):
        blob_parts.append(part)
        report("blob directories", sum(p.prefix_count for p in blob_parts), len(prefixes))
    blobs = _blob_table(blob_parts)
    inodes = _blob_inodes(blob_parts, blobs)
    problems = sorted((p for part in blob_parts for p in part.problems), key=lambda p: p.path)
    problems += reading.problems
    del blob_parts

    # 2: link files, as blob ids
    # the pool is as large as a phase of any size may want; each phase asks for its own count
    with _Forked(blobs, _workers(workers, 1 << 62, 0)) as forked:
        count = _wanted(workers, len(repo_dirs), PARALLEL_MIN_REPOSITORIES)
        chunks = _chunks(list(enumerate(repo_dirs)), _TASKS_PER_WORKER * count)
        report("repositories", 0, len(repo_dirs))
        read = partial(_read_repositories, str(v2), read_layers, forked.blobs(count, len(chunks)))
        links: list[_RepoLinks | None] = [None] * len(repo_dirs)
        done = 0
        for result in forked.run(read, chunks, count):
            for one in result:
                links[one.index] = one
            done += len(result)
            report("repositories", done, len(repo_dirs))
        repositories: list[Repository] = []
        missing_problems: list[Problem] = []
        for repo_dir, repo_links in zip(repo_dirs, links, strict=True):
            assert repo_links is not None
            problems += repo_links.problems
            missing_problems += repo_links.missing_problems
            repositories.append(_repository(repo_dir, repo_links, blobs))
        problems += missing_problems
        del links

        # 3: manifests
        sizes = _SizeFinder(blobs.sizes, sized)
        manifests, created, failed, parent_of = _read_manifests(
            forked, str(v2), repositories, inodes, read_created, workers, report, sizes
        )
        # 4: the sizes no manifest gave
        if not sized and (
            sizes.inexact or not _stat_unsized(forked, str(v2), sizes, inodes, workers)
        ):
            return None
    problems += _unreadable_manifests(v2, repositories, blobs, failed, parent_of)
    return Inventory(
        root=str(root),
        repositories=tuple(repositories),
        manifests=manifests,
        blobs=blobs,
        problems=tuple(problems),
        created=created,
    )


def _read_manifests(
    forked: _Forked,
    v2: str,
    repositories: list[Repository],
    inodes: array[int] | None,
    read_created: bool,
    workers: int | None,
    report: Progress,
    sizes: _SizeFinder,
) -> tuple[ManifestTable, dict[str, datetime], dict[int, str], dict[int, int]]:
    """Parse every manifest a tag or revision names, and their children, each blob once.

    Returns the table, config ``created`` times, the blobs that did not parse (with why) and,
    for index children no link names, the index that named them."""
    blobs = forked.table
    manifests = ManifestTable(blobs)
    created: dict[str, datetime] = {}
    failed: dict[int, str] = {}
    parent_of: dict[int, int] = {}
    wanted: set[int] = set()
    for repo in repositories:
        for ids in _link_ids(repo, blobs):
            wanted.update(ids)
    wanted.discard(NO_ID)
    todo = sorted(wanted)
    del wanted  # tens of MB at a million tags, not to be held while the manifests are read
    while todo:
        if inodes is not None:  # in the order of the blobs on disk, as far as we know it
            todo.sort(key=inodes.__getitem__)
        count = _wanted(workers, len(todo), PARALLEL_MIN_MANIFESTS)
        chunks = _chunks(todo, _TASKS_PER_WORKER * count)
        table = forked.blobs(count, len(chunks))
        parse = partial(_parse_manifests, v2, read_created, sizes.complete, table)
        parsed = 0
        parents: list[int] = []  # lists and indexes (a bare record has no children)
        for chunk in forked.run(parse, chunks, count):
            created.update(chunk.created)
            sizes.add(chunk)
            manifests.add_records(chunk.records)
            for record, digest, children, subject, absent, error in chunk.manifests:
                manifests.add(digest, PackedManifest(record, children, subject, absent))
                if error is not None:
                    failed[_record_id(record)] = error
                if children:
                    parents.append(_record_id(record))
            parsed += len(chunk.records) + len(chunk.manifests)
            report("manifests", parsed, len(todo))
        more: dict[int, None] = {}
        for parent in sorted(parents):
            for child in manifests.children_ids(parent):
                if child != NO_ID and not manifests.has_record(child) and child not in more:
                    parent_of.setdefault(child, parent)
                    more[child] = None
        todo = list(more)
    return manifests, created, failed, parent_of


class _SizeFinder:
    """Fills in the sizes phase 1 did not read: a manifest's from what was read of it, any
    other blob's from what the descriptors that name it state (when they agree)."""

    def __init__(self, sizes: array[int], complete: bool) -> None:
        self.sizes = sizes
        self.complete = complete  # phase 1 stat'ed every blob: nothing to find
        self.stated = bytearray(0 if complete else len(sizes))  # 1: size from a descriptor
        self.disputed: set[int] = set()  # descriptors disagree: stat it
        self.inexact = False

    def add(self, chunk: _ParsedChunk) -> None:
        sizes, stated = self.sizes, self.stated
        for blob_id, size in zip(chunk.read_ids, chunk.read_sizes, strict=True):
            sizes[blob_id] = size
            stated[blob_id] = 0
        for blob_id, size in zip(chunk.stated_ids, chunk.stated_sizes, strict=True):
            if sizes[blob_id] == UNKNOWN_SIZE:
                sizes[blob_id] = size
                stated[blob_id] = 1
            elif stated[blob_id] and sizes[blob_id] != size:
                self.disputed.add(blob_id)
        self.inexact = self.inexact or chunk.inexact

    def unsized(self) -> list[int]:
        """Blobs whose size is unknown or disputed."""
        disputed = {i for i in self.disputed if self.stated[i]}
        unknown = compress(range(len(self.sizes)), map(UNKNOWN_SIZE.__eq__, self.sizes))
        return sorted(disputed.union(unknown))


def _stat_unsized(
    forked: _Forked,
    v2: str,
    sizes: _SizeFinder,
    inodes: array[int] | None,
    workers: int | None,
) -> bool:
    """Stat the data of the blobs no manifest gave a size; False when one has no regular
    ``data`` (then the GC does not count it as a blob, and phase 1 must read as it does)."""
    todo = sizes.unsized()
    if inodes is not None:
        todo.sort(key=inodes.__getitem__)
    tasks = [(blob_id, forked.table.digest_of(blob_id)) for blob_id in todo]
    count = _wanted(workers, len(todo), PARALLEL_MIN_MANIFESTS)
    for part in forked.run(
        partial(_data_sizes, v2), _chunks(tasks, _TASKS_PER_WORKER * count), count
    ):
        for blob_id, size in part:
            if size == UNKNOWN_SIZE:
                return False
            sizes.sizes[blob_id] = size
    return True


def _data_sizes(v2: str, blobs: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """The size of each blob's regular ``data`` file, UNKNOWN_SIZE when it has none."""
    found = []
    for blob_id, digest in blobs:
        hexpart = digest.split(":", 1)[1]
        try:
            st = os.lstat(f"{v2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data")
        except OSError:
            found.append((blob_id, UNKNOWN_SIZE))
            continue
        found.append((blob_id, st.st_size if stat.S_ISREG(st.st_mode) else UNKNOWN_SIZE))
    return found


def _record_id(record: bytes) -> int:
    return int.from_bytes(record[:4], "little" if sys.byteorder == "little" else "big")


def _link_ids(repo: Repository, blobs: BlobTable) -> tuple[Iterable[int], Iterable[int]]:
    """The blob ids of a repository's revisions and of its tags' manifests."""
    columns = repo.columns
    if columns is not None:
        return columns.revision_ids, columns.tag_ids
    tag_ids = [NO_ID if i < 0 else i for i in blobs.ids_of(t.digest for t in repo.tags)]
    return repo.revision_ids(blobs), tag_ids


def _unreadable_manifests(
    v2: Path,
    repositories: Iterable[Repository],
    blobs: BlobTable,
    failed: dict[int, str],
    parent_of: dict[int, int],
) -> list[Problem]:
    """A problem per repository that links (or tags) a manifest that does not parse."""
    if not failed:
        return []
    reading = _Reading(v2)
    owners: dict[int, list[tuple[str, bool]]] = {}
    for repo in repositories:
        revision_ids, tag_ids = _link_ids(repo, blobs)
        for blob_id in revision_ids:
            if blob_id in failed:
                owners.setdefault(blob_id, []).append((repo.name, repo.listed_by_gc))
        for blob_id in tag_ids:
            if blob_id in failed:
                owners.setdefault(blob_id, []).append((repo.name, False))

    def owners_of(blob_id: int) -> list[tuple[str, bool]]:
        seen = set()
        while blob_id not in owners and blob_id in parent_of and blob_id not in seen:
            seen.add(blob_id)
            blob_id = parent_of[blob_id]
        return owners.get(blob_id, [])

    for blob_id, message in sorted(failed.items()):
        digest = blobs.digest_of(blob_id)
        hexpart = digest.split(":", 1)[1]
        path = v2 / "blobs/sha256" / hexpart[:2] / hexpart / "data"
        for repo_name, gc_reads_it in owners_of(blob_id):
            kind = ProblemKind.GC_ABORT if gc_reads_it else ProblemKind.UNREADABLE
            suffix = "; the registry's GC aborts on it" if gc_reads_it else ""
            reading.problem(
                path, f"manifest {digest} is unreadable: {message}{suffix}", kind, repo_name
            )
    return reading.problems
