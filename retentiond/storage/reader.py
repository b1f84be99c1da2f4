"""Read a registry's filesystem storage tree into an :class:`~retentiond.core.inventory.Inventory`.

Only reads; never follows a symbolic link and never leaves ``<root>/docker/registry/v2``. What it
cannot trust becomes a :class:`~retentiond.core.inventory.Problem` with its path, and the planner
leaves the repository concerned alone.

Nothing under the root is trusted as a path or as a file type (the tree is written by the
registry, that is by anyone who can push). ``v2``, ``blobs/sha256`` and ``repositories`` are
opened once, without following links, and every other path is opened relative to their
descriptors (which forked workers inherit) with no symbolic link followed in any component
(:mod:`retentiond.storage.safe_fs`: ``openat2`` with ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH``,
else ``O_NOFOLLOW`` per component); directories are listed through their descriptor (an entry's
type is its own, never a link's target); files are opened ``O_NONBLOCK`` and ``fstat``'ed before
any read (a FIFO never blocks, a device or a socket is never read); link files are read to 200
bytes, manifests to :data:`MAX_MANIFEST_BYTES` (the registry's own limit), configs to
:data:`MAX_CONFIG_BYTES`.

What each kind of hostile entry means:

- ``registry.root`` itself may be a symbolic link (it comes from the operator). Below it, a
  link (or anything but a directory) as ``docker``, ``registry``, ``v2``, ``blobs``,
  ``blobs/sha256`` or ``repositories`` fails the whole run (StorageError, exit 1) naming the
  path: the registry writes none of them as links, so one is a deployment choice retentiond
  does not make for the operator: point ``registry.root`` at the real directory.
- A symbolic link, FIFO, socket or device anywhere inside a repository (its own directory,
  ``_manifests``, ``_manifests/tags``, a tag's directory, its ``current/`` or ``current/link``,
  ``revisions/sha256`` and its entries and links, ``_layers``, ``_layers/sha256``, an upload) or
  as a manifest's ``data`` is a problem of kind :data:`UNSAFE` (``GC_ABORT``) of that
  repository: it is refused, and no GC may run. The registry never writes one, and its GC
  follows links where it reads (it would mark from files outside the root, walk into a linked
  directory, block on a FIFO): refusing the repository is not enough to make a GC safe.
- A link or a special file in the blob store (a prefix directory, a blob directory, a blob's
  ``data`` when it is stat'ed) is an UNSAFE problem of no repository: no GC may run (the GC's
  sweep would walk into a linked prefix and delete what it finds there), and the repositories
  whose manifests it hides are refused because their blobs are missing.
- A directory or file that cannot be read (permission denied, as a user other than the
  registry's) inside a repository is an ``UNREADABLE`` problem of that repository: refused, and
  the GC, run as the registry's user, may still read it. In the blob store it fails the run
  (StorageError): without the whole blob store, what a GC reclaims cannot be known.
- Not read at all, so never trusted: a tag's ``index/``, the ``_layers`` links but for
  ``verify``, layer and config ``data`` but for their sizes in phase 4 (``lstat``) or
  ``stat_blobs``.

Whatever a worker meets in the tree or in a manifest becomes a problem of the repositories
concerned; only a whole-run StorageError or a bug ends the read.

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
import multiprocessing.process
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
from retentiond.core.names import repository_name_problem, tag_name_problem
from retentiond.errors import StorageError
from retentiond.storage.safe_fs import (
    FILE_FLAGS,
    NotRegularFile,
    SymlinkFound,
    TooLarge,
    UnsafeEntry,
    kind_of,
    lstat_below,
    open_below,
    open_dir,
    open_root,
    opened_dir,
    opener,
    read_fd,
)

V2 = ("docker", "registry", "v2")
HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
#: the registry refuses manifests larger than this; a bigger "manifest" is not one
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: an image config is read for its ``created`` time up to this size
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: a link file holds ``sha256:`` and 64 hex digits; more is read only to say it is wrong
_LINK_BYTES = 200
#: the first read of a blob: the whole of almost every manifest
_FIRST_READ = 1 << 16
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

#: what a symbolic link or a special file inside a repository or the blob store means
UNSAFE = ProblemKind.GC_ABORT
_NOT_FOLLOWED = (
    "not followed: the registry never writes one, and its GC would follow it and decide from "
    "files outside the storage root; remove it"
)


def open_file_below(path: str, dir_fd: int) -> int:
    """:func:`~retentiond.storage.safe_fs.open_below` of a file (no link followed, no block)."""
    return open_below(path, dir_fd, FILE_FLAGS)


def storage_v2(root: Path) -> Path:
    return root.joinpath(*V2)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _unsafe_message(exc: UnsafeEntry) -> str:
    """What an unsafe entry is and what to do, in a problem's message."""
    if isinstance(exc, SymlinkFound):
        return f"symbolic link, {_NOT_FOLLOWED}"
    if isinstance(exc, NotRegularFile):
        return f"{exc}; the registry's GC would block or fail on it: remove it"
    return str(exc)


class LinkError(ValueError):
    """A link file that cannot be trusted. ``kind``: how much that matters (UNSAFE for a link
    or a special file in its path); ``where``: the component at fault, relative to the
    directory the link was opened from (empty: the link file itself)."""

    def __init__(
        self, message: str, kind: ProblemKind = ProblemKind.UNREADABLE, where: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where


def _read_link(
    path: str, dir_fd: int, open_file: Callable[[str, int], int] = open_file_below
) -> tuple[str, float]:
    """A ``link`` file's digest and mtime (seconds), ``path`` relative to ``dir_fd``, no
    symbolic link followed in any component, never blocking (a FIFO, a device or a socket is
    refused by its type before any read), at most a few hundred bytes read.

    ``open_file``: :func:`~retentiond.storage.safe_fs.opener`'s, in a loop."""
    try:
        fd = open_file(path, dir_fd)
    except FileNotFoundError as exc:
        raise LinkError("link file is missing") from exc
    except UnsafeEntry as exc:
        raise LinkError(_unsafe_message(exc), UNSAFE, exc.where) from exc
    except OSError as exc:
        raise LinkError(f"cannot open link: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LinkError(
                f"link is {kind_of(st.st_mode)}, not a regular file; the registry's GC would "
                "block or fail on it: remove it",
                UNSAFE,
            )
        data = os.read(fd, _LINK_BYTES)
        if st.st_blocks * 512 < st.st_blksize and data and _DONTNEED is not None:
            # less than a block: its data lives in its inode (ext4 inline_data), and reading
            # it made a 4 KiB page cache copy of 71 bytes: 9 GB at a million tags, which pushes
            # out the inode cache that makes the next plan fast
            os.posix_fadvise(fd, 0, 0, _DONTNEED)
    except OSError as exc:
        raise LinkError(f"cannot read link: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if not data:
        raise LinkError("link file is empty (an interrupted write; the registry answers 500)")
    text = data.decode("ascii", "replace")
    if DIGEST_RE.fullmatch(text) is None:
        raise LinkError(f"link does not hold a sha256 digest: {text[:80]!r}")
    return text, st.st_mtime


def read_link(path: str) -> tuple[str, datetime]:
    """Read a ``link`` file (a trusted path: its last component is not followed, and it is
    read only when it is a regular file): its digest and mtime."""
    parent, _, name = path.rpartition("/")
    dir_fd = open_root(parent or ".")
    try:
        digest, mtime = _read_link(name, dir_fd)
    finally:
        os.close(dir_fd)
    return digest, _utc(mtime)


def read_blob(
    v2: Path | str,
    digest: str,
    limit: int = MAX_MANIFEST_BYTES,
    store_fd: int | None = None,
    open_file: Callable[[str, int], int] = open_file_below,
) -> bytes:
    """Read a blob's data, at most ``limit`` bytes (ManifestError beyond), no symbolic link
    followed below ``v2`` (an :class:`~retentiond.storage.safe_fs.UnsafeEntry` when one is, or
    when ``data`` is not a regular file); FileNotFoundError when it is missing.

    ``store_fd``: an open ``blobs/sha256`` directory to resolve the path from (then ``v2`` is
    not used); ``open_file``: :func:`~retentiond.storage.safe_fs.opener`'s, in a loop."""
    hexpart = digest.split(":", 1)[1]
    if store_fd is None:
        v2_fd = open_root(str(v2))
        try:
            return _read_blob(f"blobs/sha256/{hexpart[:2]}/{hexpart}/data", v2_fd, limit)
        finally:
            os.close(v2_fd)
    return _read_blob(f"{hexpart[:2]}/{hexpart}/data", store_fd, limit, open_file)


def _read_blob(
    path: str, dir_fd: int, limit: int, open_file: Callable[[str, int], int] = open_file_below
) -> bytes:
    fd = open_file(path, dir_fd)
    try:
        st = os.fstat(fd)  # a FIFO opened O_NONBLOCK reads nothing, but never as a manifest
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"data is {kind_of(st.st_mode)}, not a regular file", path)
        if st.st_size > limit:
            raise ManifestError(f"more than {limit} bytes, larger than any manifest")
        data = os.read(fd, _FIRST_READ)
        if len(data) == _FIRST_READ:  # a large blob: the rest, up to the limit
            try:
                data = read_fd(fd, path, limit, data)
            except TooLarge as exc:
                raise ManifestError(f"more than {limit} bytes, larger than any manifest") from exc
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


# -- the top of the tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tree:
    """Where the reader reads: ``v2`` (for messages; never opened by name) and open
    descriptors of it, of ``blobs/sha256`` and of ``repositories`` (-1: the directory does not
    exist). Forked workers inherit the descriptors: every path below is opened from them."""

    v2: str
    v2_fd: int
    store_fd: int
    repos_fd: int

    def close(self) -> None:
        for fd in (self.repos_fd, self.store_fd, self.v2_fd):
            if fd >= 0:
                os.close(fd)


def _open_tree(root: Path) -> _Tree:
    """Open ``<root>/docker/registry/v2``, its ``blobs/sha256`` and ``repositories``.

    ``root`` (``registry.root``, the operator's) may be a symbolic link; nothing below it
    may: ``docker``, ``registry``, ``v2``, ``blobs``, ``blobs/sha256`` or ``repositories`` as a
    link (or as anything but a directory) is a StorageError for the whole run."""
    v2 = storage_v2(root)
    try:
        root_fd = open_root(str(root))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise StorageError(
            f"{v2} does not exist: registry.root must be the registry's storage rootdirectory "
            "(the directory that contains docker/registry/v2)"
        ) from exc
    except OSError as exc:
        raise StorageError(_cannot_read(root, exc)) from exc
    fds: list[int] = []
    try:
        v2_fd = _open_top(root, root_fd, "/".join(V2), required=True)
        fds.append(v2_fd)
        store_fd = _open_top(v2, v2_fd, "blobs/sha256", required=False)
        fds.append(store_fd)
        repos_fd = _open_top(v2, v2_fd, "repositories", required=False)
    except BaseException:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        os.close(root_fd)
    return _Tree(str(v2), v2_fd, store_fd, repos_fd)


def _open_top(base: Path, base_fd: int, path: str, *, required: bool) -> int:
    """A directory at the top of the tree (-1 when it does not exist and is not required)."""
    try:
        return open_dir(path, base_fd)
    except FileNotFoundError as exc:
        if not required:
            return -1
        raise StorageError(
            f"{base / path} does not exist: registry.root must be the registry's storage "
            "rootdirectory (the directory that contains docker/registry/v2)"
        ) from exc
    except SymlinkFound as exc:
        raise StorageError(
            f"{base / exc.where} is a symbolic link: retentiond follows no link below "
            "registry.root; set registry.root to the real storage rootdirectory, in which "
            "docker/registry/v2 and its blobs/sha256 and repositories are directories"
        ) from exc
    except UnsafeEntry as exc:
        raise StorageError(f"{base / (exc.where or path)}: {exc}; expected a directory") from exc
    except OSError as exc:
        raise StorageError(_cannot_read(base / path, exc)) from exc


def _cannot_read(path: str | Path, exc: OSError) -> str:
    return (
        f"cannot read {path}: {exc.strerror}; check that retentiond runs as a user that can "
        "read the registry's storage"
    )


def _list(fd: int) -> list[os.DirEntry[str]]:
    """The entries of an open directory (their ``path`` is their name; their type, from the
    directory, is never a link's target)."""
    with os.scandir(fd) as it:
        return list(it)


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


def _blob_prefixes(reading: _Reading, tree: _Tree) -> list[str]:
    """The directories under ``blobs/sha256`` (symbolic links are problems, not followed)."""
    if tree.store_fd < 0:
        return []
    store = f"{tree.v2}/blobs/sha256"
    try:
        entries = _list(tree.store_fd)
    except OSError as exc:
        raise StorageError(_cannot_read(store, exc)) from exc
    prefixes = []
    for prefix in entries:
        if prefix.is_dir(follow_symlinks=False):
            prefixes.append(prefix.name)
        elif prefix.is_symlink():
            _blob_store_link(reading, f"{store}/{prefix.name}")
    return sorted(prefixes)


def _blob_store_link(reading: _Reading, path: str) -> None:
    """A symbolic link in the blob store: the registry's GC would walk into it, and delete
    what it finds there that nothing marks (files outside the root)."""
    reading.problem(path, f"symbolic link in the blob store, {_NOT_FOLLOWED}", UNSAFE)


def _open_prefix(reading: _Reading, tree: _Tree, prefix: str) -> int | None:
    """A prefix directory of the blob store, opened without following a link (None: it is
    gone, or was swapped for a link since it was listed)."""
    path = f"{tree.v2}/blobs/sha256/{prefix}"
    try:
        return open_dir(prefix, tree.store_fd)
    except FileNotFoundError:
        return None
    except SymlinkFound:
        _blob_store_link(reading, path)
        return None
    except UnsafeEntry as exc:
        reading.problem(path, str(exc), UNSAFE)
        return None
    except OSError as exc:
        raise StorageError(
            _cannot_read(path, exc) + " (without the whole blob store, what a GC reclaims "
            "cannot be known)"
        ) from exc


def _walk_blobs(tree: _Tree, stat_data: bool, prefixes: list[str]) -> _BlobPart:
    """Every blob directory under ``prefixes``. With ``stat_data``, only those with a ``data``
    file, as the registry's GC enumerates them, with its size; without, every directory named
    by a digest, its size unknown (its name is read from the prefix directory: no inode).

    Prefix directories are opened from the blob store's descriptor without following links; a
    blob directory is one by its type in the prefix directory (never a link's). Its ``data``
    is stat'ed relative to the prefix directory (``lstat``: a ``data`` that is a link or a
    special file is a problem); a blob directory swapped for a link between the listing and
    the stat could show the size of a file elsewhere, never its content."""
    reading = _Reading(Path(tree.v2))
    keys: list[bytes] = []
    sizes = array("q")
    inodes = array("Q")
    counts: dict[int, int] = {}
    misplaced: list[tuple[bytes, int]] = []
    fromhex, lstat, is_regular = bytes.fromhex, os.lstat, stat.S_ISREG
    for prefix in prefixes:
        own = int(prefix, 16) if _HEX2.fullmatch(prefix) else -1  # the first byte it holds
        buckets: dict[int, tuple[list[bytes], array[int], array[int]]] = {}
        prefix_path = f"{tree.v2}/blobs/sha256/{prefix}"
        prefix_fd = _open_prefix(reading, tree, prefix)
        if prefix_fd is None:
            continue
        try:
            try:
                entries = _list(prefix_fd)
            except OSError as exc:
                raise StorageError(_cannot_read(prefix_path, exc)) from exc
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
            for entry in entries:
                name = entry.name
                if not entry.is_dir(follow_symlinks=False):
                    if entry.is_symlink():
                        _blob_store_link(reading, f"{prefix_path}/{name}")
                    continue
                try:
                    raw = fromhex(name)
                except ValueError:
                    raw = b""
                valid = len(raw) == 32 and len(name) == 64 and (name.islower() or name.isdigit())
                size = UNKNOWN_SIZE
                if stat_data or not valid:
                    try:
                        st = lstat(f"{name}/data", dir_fd=prefix_fd)
                    except FileNotFoundError:
                        continue  # an empty blob directory: the GC ignores it too
                    except OSError as exc:
                        raise StorageError(_cannot_read(f"{prefix_path}/{name}/data", exc)) from exc
                    if valid and not is_regular(st.st_mode):
                        reading.problem(
                            f"{prefix_path}/{name}/data",
                            f"blob data is {kind_of(st.st_mode)}, not a regular file; "
                            + (
                                _NOT_FOLLOWED
                                if stat.S_ISLNK(st.st_mode)
                                else "the registry's GC would block or fail on it: remove it"
                            ),
                            UNSAFE,
                        )
                        continue
                    size = st.st_size
                if not valid:
                    reading.problem(
                        f"{prefix_path}/{name}",
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
            os.close(prefix_fd)
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
    path: str  # for messages; opened by ``name`` from the repositories directory
    has_layers: bool
    has_manifests: bool
    has_uploads: bool
    has_nested: bool
    #: its ``_layers``, ``_manifests`` or ``_uploads`` that are symbolic links (reported
    #: when found; not read)
    links: frozenset[str] = frozenset()


def _find_repositories(reading: _Reading, tree: _Tree) -> list[_RepoDir]:
    """The registry's catalog walk: every directory not starting with ``_``, recursively.

    Each directory is opened by its name relative to ``repositories`` with no link followed;
    a symbolic link anywhere is an UNSAFE problem (the registry's catalog walk would follow
    it), of the repository it is in (``_manifests`` and the like) or that it pretends to be."""
    if tree.repos_fd < 0:
        return []
    found: list[_RepoDir] = []
    base = f"{tree.v2}/repositories"
    stack = [""]
    while stack:
        name = stack.pop()
        path = f"{base}/{name}" if name else base
        entries = _list_repository_dir(reading, tree, name, path)
        nested: list[str] = []
        flags = {"_layers": False, "_manifests": False, "_uploads": False}
        links = set()
        for entry in entries:
            child = f"{name}/{entry.name}" if name else entry.name
            if entry.is_symlink():
                owner = name if name and entry.name.startswith("_") else child
                reading.problem(f"{base}/{child}", f"symbolic link, {_NOT_FOLLOWED}", UNSAFE, owner)
                if entry.name in flags:  # the registry, following it, sees the directory
                    flags[entry.name] = True
                    links.add(entry.name)
                continue
            if entry.name in flags:
                flags[entry.name] = True
            elif not entry.name.startswith("_") and entry.is_dir(follow_symlinks=False):
                nested.append(child)
        if name and (flags["_layers"] or flags["_manifests"]):
            found.append(
                _RepoDir(
                    name,
                    path,
                    flags["_layers"],
                    flags["_manifests"],
                    flags["_uploads"],
                    bool(nested),
                    frozenset(links),
                )
            )
            message = repository_name_problem(name)
            if message is not None:
                reading.problem(
                    path,
                    f"repository name {name!r}: {message}; the registry's GC aborts on it",
                    ProblemKind.GC_ABORT,
                    name,
                )
        stack.extend(nested)
    found.sort(key=lambda r: r.name)
    return found


def _list_repository_dir(
    reading: _Reading, tree: _Tree, name: str, path: str
) -> list[os.DirEntry[str]]:
    """The entries of ``repositories/<name>``; a problem of ``name`` when it cannot be read
    (the ``repositories`` directory itself: a StorageError)."""
    try:
        if not name:
            return _list(tree.repos_fd)
        with opened_dir(name, tree.repos_fd) as fd:
            return _list(fd)
    except FileNotFoundError:
        return []
    except UnsafeEntry as exc:  # swapped for a link since its parent was listed
        reading.problem(path, _unsafe_message(exc), UNSAFE, name)
        return []
    except OSError as exc:
        if not name:
            raise StorageError(_cannot_read(path, exc)) from exc
        reading.problem(
            path,
            f"cannot read: {exc.strerror}; nothing in it is decided",
            ProblemKind.UNREADABLE,
            name,
        )
        return []


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


class _RepoReading(_Reading):
    """Reading one repository: ``fd`` is its open directory, ``base`` its path."""

    def __init__(self, v2: str, repo: _RepoDir, fd: int) -> None:
        super().__init__(Path(v2))
        self.repo, self.fd, self.base = repo, fd, repo.path

    def unsafe(self, path: str, exc: UnsafeEntry) -> None:
        """``exc`` met opening ``path`` (its ``where`` is relative to the repository too)."""
        where = exc.where or path
        self.problem(f"{self.base}/{where}", _unsafe_message(exc), UNSAFE, self.repo.name)

    def unreadable(self, path: str, exc: OSError) -> None:
        self.problem(
            f"{self.base}/{path}",
            f"cannot read: {exc.strerror}; nothing in this repository is decided",
            ProblemKind.UNREADABLE,
            self.repo.name,
        )

    def attempt(self, path: str, action: Callable[[str, int], T]) -> T | None:
        """``action(path, fd)`` on the repository's ``path``; None when it does not exist or
        cannot be read or trusted (then a problem says so)."""
        try:
            return action(path, self.fd)
        except FileNotFoundError:
            return None
        except UnsafeEntry as exc:
            self.unsafe(path, exc)
        except OSError as exc:
            self.unreadable(path, exc)
        return None

    def entries(self, path: str) -> tuple[int, list[os.DirEntry[str]]] | None:
        """The directory ``path`` of the repository, opened (the caller closes it) and listed;
        None when it does not exist or cannot be read or trusted (then a problem says so)."""
        fd = self.attempt(path, open_dir)
        if fd is None:
            return None
        try:
            return fd, _list(fd)
        except OSError as exc:
            os.close(fd)
            self.unreadable(path, exc)
            return None


def _links_under(
    reading: _RepoReading, directory: str, link: str, what: str
) -> Iterator[tuple[str, tuple[str, float] | LinkError]]:
    """Each subdirectory of the repository's ``directory`` with its ``link`` file read
    (digest and mtime), or why it could not be; every file opened relative to the open
    directory, no link followed. An entry that is not a directory is a problem, not yielded."""
    listed = reading.entries(directory)
    if listed is None:
        return
    dir_fd, entries = listed
    base = f"{reading.base}/{directory}"
    open_file = opener()
    try:
        for entry in entries:
            if entry.is_symlink():
                reading.problem(
                    f"{base}/{entry.name}",
                    f"{what} entry is a symbolic link, {_NOT_FOLLOWED}",
                    UNSAFE,
                    reading.repo.name,
                )
                continue
            if not entry.is_dir(follow_symlinks=False):
                reading.problem(
                    f"{base}/{entry.name}",
                    f"{what} entry is not a directory",
                    ProblemKind.UNREADABLE,
                    reading.repo.name,
                )
                continue
            read: tuple[str, float] | LinkError
            try:
                read = _read_link(f"{entry.name}/{link}", dir_fd, open_file)
            except LinkError as exc:
                read = exc
            yield entry.name, read
    finally:
        os.close(dir_fd)


def _link_problem(
    reading: _RepoReading,
    directory: str,
    entry: str,
    link: str,
    error: LinkError,
    label: str,
    kind: ProblemKind,
) -> None:
    """A problem for a link file that could not be read: at the component at fault."""
    where = error.where or f"{entry}/{link}"
    reading.problem(
        f"{reading.base}/{directory}/{where}",
        f"{label}: {error}",
        UNSAFE if error.kind is UNSAFE else kind,
        reading.repo.name,
    )


def _read_repository(
    tree: _Tree, index: int, repo: _RepoDir, read_layers: bool, blobs: BlobTable
) -> _RepoLinks:
    """One repository's links; anything that cannot be read or trusted, down to the
    repository's own directory, is a problem of the repository, never an exception."""
    try:
        fd = open_dir(repo.name, tree.repos_fd)
    except (OSError, UnsafeEntry) as exc:
        return _unread_repository(tree, index, repo, read_layers, exc)
    try:
        return _read_repository_at(_RepoReading(tree.v2, repo, fd), index, read_layers, blobs)
    except (OSError, UnsafeEntry) as exc:  # what the steps above do not expect: still a problem
        return _unread_repository(tree, index, repo, read_layers, exc)
    finally:
        os.close(fd)


def _unread_repository(
    tree: _Tree, index: int, repo: _RepoDir, read_layers: bool, exc: OSError | UnsafeEntry
) -> _RepoLinks:
    """A repository that could not be read: nothing in it, and the problem that says why."""
    reading = _Reading(Path(tree.v2))
    if isinstance(exc, UnsafeEntry):
        reading.problem(repo.path, _unsafe_message(exc), UNSAFE, repo.name)
    else:
        reading.problem(
            repo.path, f"cannot read: {exc.strerror}", ProblemKind.UNREADABLE, repo.name
        )
    return _RepoLinks(
        index,
        ("", array("I"), array("d"), array("I"), array("d"), ()),
        None,
        [] if read_layers else None,
        reading.problems,
        [],
    )


def _read_repository_at(
    reading: _RepoReading, index: int, read_layers: bool, blobs: BlobTable
) -> _RepoLinks:
    repo = reading.repo
    name = repo.name
    tags: list[tuple[str, str, float]] = []
    revisions: dict[str, float] = {}
    if "_manifests" not in repo.links:
        tags = _read_tags(reading)
        revisions = _read_revisions(reading)

    layers: list[str] | None = None
    if read_layers:
        layers = [] if "_layers" in repo.links else _read_layer_links(reading)

    signs = [
        max(revisions.values(), default=None),
        max((t[2] for t in tags), default=None),
        None if "_layers" in repo.links else _layers_mtime(reading),
        *([] if "_uploads" in repo.links else _uploads_mtimes(reading)),
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
    missing_problems = _Reading(reading.v2)
    if missing:
        base = f"{repo.path}/_manifests"
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
        problems=list(dict.fromkeys(reading.problems)),  # a link met twice is one problem
        missing_problems=missing_problems.problems,
    )


def _read_tags(reading: _RepoReading) -> list[tuple[str, str, float]]:
    """(tag, digest, mtime) of every tag whose ``current/link`` can be trusted."""
    tags: list[tuple[str, str, float]] = []
    directory = "_manifests/tags"
    for tag, read in _links_under(reading, directory, "current/link", "tag"):
        message = tag_name_problem(tag)
        if message is not None:
            reading.problem(
                f"{reading.base}/{directory}/{tag}",
                f"tag name {tag!r}: {message}",
                ProblemKind.UNREADABLE,
                reading.repo.name,
            )
            continue
        if isinstance(read, LinkError):
            _link_problem(
                reading,
                directory,
                tag,
                "current/link",
                read,
                f"tag {tag!r}",
                ProblemKind.UNREADABLE,
            )
            continue
        tags.append((tag, *read))
    return tags


def _read_revisions(reading: _RepoReading) -> dict[str, float]:
    """The mtime of every revision link that can be trusted, by digest."""
    revisions: dict[str, float] = {}
    directory = "_manifests/revisions/sha256"
    bad = ProblemKind.GC_ABORT if reading.repo.has_layers else ProblemKind.UNREADABLE
    for hexpart, read in _links_under(reading, directory, "link", "revision"):
        if isinstance(read, LinkError):
            if str(read) == "link file is missing":
                continue  # an empty revision directory, as GC leaves behind
            _link_problem(reading, directory, hexpart, "link", read, "revision link", bad)
            continue
        digest, when = read
        if digest != "sha256:" + hexpart:
            reading.problem(
                f"{reading.base}/{directory}/{hexpart}/link",
                f"revision link holds {digest}, not the digest its directory names",
                ProblemKind.UNREADABLE,
                reading.repo.name,
            )
            continue
        revisions[digest] = when
    return revisions


def _read_layer_links(reading: _RepoReading) -> list[str]:
    """The digests the repository's ``_layers`` links name (links that cannot be read are
    left out: ``verify`` then reports the blob as not linked), sorted."""
    linked = set()
    directory = "_layers/sha256"
    for hexpart, read in _links_under(reading, directory, "link", "layer"):
        if isinstance(read, LinkError):
            if read.kind is UNSAFE:
                _link_problem(reading, directory, hexpart, "link", read, "layer link", UNSAFE)
            continue
        if HEX64.fullmatch(hexpart):
            linked.add(read[0])
    return sorted(linked)


def _layers_mtime(reading: _RepoReading) -> float | None:
    """The mtime of ``_layers/sha256`` (a layer pushed); a link there is a problem (the
    links inside it are read only by ``verify``: the registry's GC never reads them)."""
    path = "_layers/sha256"
    st = reading.attempt(path, lstat_below)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        reading.unsafe(path, SymlinkFound(path, path))
        return None
    return st.st_mtime


def _uploads_mtimes(reading: _RepoReading) -> list[float | None]:
    """The mtimes of ``_uploads`` and of each upload in it (a push in progress)."""
    listed = reading.entries("_uploads")
    if listed is None:
        return []
    fd, entries = listed
    try:
        times: list[float | None] = [os.fstat(fd).st_mtime]
        for entry in entries:
            if entry.is_symlink():
                reading.problem(
                    f"{reading.base}/_uploads/{entry.name}",
                    f"symbolic link, {_NOT_FOLLOWED}",
                    UNSAFE,
                    reading.repo.name,
                )
                continue
            try:
                times.append(entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
        return times
    finally:
        os.close(fd)


def _read_repositories(
    tree: _Tree, read_layers: bool, blobs: BlobTable | None, chunk: list[tuple[int, _RepoDir]]
) -> list[_RepoLinks]:
    table = _shared_blobs(blobs)
    return [_read_repository(tree, index, repo, read_layers, table) for index, repo in chunk]


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
    #: manifest blobs whose ``data`` is a link or a special file (in a link's directory)
    unsafe: list[int] = field(default_factory=list)

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


#: what a manifest blob may raise that makes it unreadable (the parser's own ManifestError is
#: a ValueError; the others are there so that no manifest can stop the read of the tree)
_MANIFEST_ERRORS = (ValueError, RecursionError, OverflowError)


def _parse_manifests(
    tree: _Tree, read_created: bool, sized: bool, blobs: BlobTable | None, blob_ids: list[int]
) -> _ParsedChunk:
    """Read and pack the manifest of each blob; and the ``created`` times of their configs.

    ``sized``: the table knows every blob's size; else the sizes found are returned. A blob
    that cannot be read, trusted or parsed is an error of its manifest (a problem of the
    repositories that link it), never an exception."""
    table = _shared_blobs(blobs)
    media_types = list(MANIFEST_MEDIA_TYPES)  # parse_manifest gives no other type
    chunk = _ParsedChunk([], [], {})
    configs: set[str] = set()
    taken: dict[int, int] = {}
    store_fd = tree.store_fd
    open_file = opener()
    for blob_id in blob_ids:
        digest = table.digest_of(blob_id)
        manifest: Manifest | None = None
        error: str | None = None
        try:
            data = read_blob(tree.v2, digest, store_fd=store_fd, open_file=open_file)
            if not sized:
                chunk.read_ids.append(blob_id)
                chunk.read_sizes.append(len(data))
            manifest = parse_manifest(digest, data)
        except FileNotFoundError:
            error = "manifest blob vanished while reading"
            chunk.inexact = chunk.inexact or not sized
        except UnsafeEntry as exc:
            # a link or a special file: refused, and its size taken as 0 (no GC may run while
            # it is there; reading the tree again as the GC counts would change nothing)
            error = _unsafe_message(exc)
            chunk.unsafe.append(blob_id)
            if not sized:
                chunk.read_ids.append(blob_id)
                chunk.read_sizes.append(0)
        except OSError as exc:
            error = f"cannot read: {exc.strerror}"
            chunk.inexact = chunk.inexact or not sized
        except _MANIFEST_ERRORS as exc:
            error = str(exc) if isinstance(exc, ManifestError) else f"cannot parse: {exc!r:.200}"
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
    for config in sorted(configs):
        try:
            when = parse_created(read_blob(tree.v2, config, MAX_CONFIG_BYTES, store_fd))
        except (OSError, UnsafeEntry, *_MANIFEST_ERRORS):
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
        yield from _results(pool, list(_processes(pool)), fn, tasks)


def _processes(pool: multiprocessing.pool.Pool) -> list[multiprocessing.process.BaseProcess]:
    return list(getattr(pool, "_pool", []))  # the pool's workers (not a public attribute)


def _results(
    pool: multiprocessing.pool.Pool,
    workers: list[multiprocessing.process.BaseProcess],
    fn: Callable[[T], R],
    tasks: list[T],
) -> Iterator[R]:
    """``pool.imap_unordered(fn, tasks)``, but a worker that dies (killed by the OOM killer,
    say) is a StorageError, not a wait forever for the task it took with it (the pool starts
    another worker and never says)."""
    results = pool.imap_unordered(fn, tasks)
    while True:
        try:
            yield results.next(timeout=1.0)
        except StopIteration:
            return
        except multiprocessing.TimeoutError:
            for worker in workers:
                if worker.exitcode is not None and worker.exitcode != 0:
                    raise StorageError(
                        f"a reader process (pid {worker.pid}) ended with exit code "
                        f"{worker.exitcode} (a negative code is the signal that killed it, "
                        "9 often the kernel's out-of-memory killer); run again, and give "
                        "retentiond more memory if it happens again"
                    ) from None


class _Forked:
    """The workers of phases 2 to 4: forked once, when first needed, after the blob table
    exists (they share it through the fork); a pool costs tens of milliseconds to start.

    ``blobs`` is what a task passes on: None in a worker (it finds the table in
    ``_FORKED_BLOBS``), the table itself when the phase runs in-process."""

    def __init__(self, blobs: BlobTable, count: int) -> None:
        self.table, self.count = blobs, count
        self._pool: multiprocessing.pool.Pool | None = None
        self._processes: list[multiprocessing.process.BaseProcess] = []

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
                self._processes = _processes(self._pool)
            finally:
                _FORKED_BLOBS = None  # the workers have their copy
        yield from _results(self._pool, self._processes, fn, tasks)

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


def check_storage(root: Path) -> None:
    """The StorageError :func:`read_inventory` would raise for the top of the tree (missing,
    a symbolic link below ``root``, unreadable), or nothing: for a readiness check."""
    _open_tree(Path(root)).close()


def read_blob_sizes(root: Path) -> dict[str, int]:
    """Every blob with data and its size (what the GC's sweep enumerates)."""
    tree = _open_tree(Path(root))
    try:
        part = _walk_blobs(tree, True, _blob_prefixes(_Reading(Path(tree.v2)), tree))
    finally:
        tree.close()
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
    tree = _open_tree(root)  # held open while workers are forked: they inherit it
    try:
        args = (root, tree, read_created, read_layers, workers, progress or _no_progress)
        inventory = None if stat_blobs else _read_tree(*args, sized=False)
        if inventory is None:  # a blob directory without usable data: read as the GC counts
            inventory = _read_tree(*args, sized=True)
            assert inventory is not None, "a sized read always completes"
    finally:
        tree.close()
    return inventory


def _problem_order(problem: Problem) -> tuple[str, str, str, str]:
    """Problems in an order that does not depend on how directories list their entries (a
    copy of the tree lists them in another order): the plan, refusal reasons included, is
    the same for the same tree wherever it is."""
    return (problem.repository or "", problem.path, problem.kind.value, problem.message)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _read_tree(
    root: Path,
    tree: _Tree,
    read_created: bool,
    read_layers: bool,
    workers: int | None,
    report: Progress,
    *,
    sized: bool,
) -> Inventory | None:
    """The four phases; ``sized``: stat every blob's data in phase 1 (None: without, a blob
    directory turned out to have no usable data)."""
    v2 = Path(tree.v2)
    reading = _Reading(v2)
    prefixes = _blob_prefixes(reading, tree)
    repo_dirs = _find_repositories(reading, tree)

    # 1: the blob store
    count = _workers(workers, len(repo_dirs), PARALLEL_MIN_REPOSITORIES)
    blob_parts: list[_BlobPart] = []
    report("blob directories", 0, len(prefixes))
    walk = partial(_walk_blobs, tree, sized)
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
        read = partial(_read_repositories, tree, read_layers, forked.blobs(count, len(chunks)))
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
        manifests, created, failed, parent_of, unsafe = _read_manifests(
            forked, tree, repositories, inodes, read_created, workers, report, sizes
        )
        # 4: the sizes no manifest gave
        if not sized and (sizes.inexact or not _stat_unsized(forked, tree, sizes, inodes, workers)):
            return None
    problems += _unreadable_manifests(v2, repositories, blobs, failed, parent_of, unsafe)
    return Inventory(
        root=str(root),
        repositories=tuple(repositories),
        manifests=manifests,
        blobs=blobs,
        problems=tuple(sorted(problems, key=_problem_order)),
        created=created,
    )


def _read_manifests(
    forked: _Forked,
    tree: _Tree,
    repositories: list[Repository],
    inodes: array[int] | None,
    read_created: bool,
    workers: int | None,
    report: Progress,
    sizes: _SizeFinder,
) -> tuple[ManifestTable, dict[str, datetime], dict[int, str], dict[int, int], set[int]]:
    """Parse every manifest a tag or revision names, and their children, each blob once.

    Returns the table, config ``created`` times, the blobs that did not parse (with why),
    for index children no link names, the index that named them, and the blobs whose ``data``
    is a link or a special file."""
    blobs = forked.table
    manifests = ManifestTable(blobs)
    created: dict[str, datetime] = {}
    failed: dict[int, str] = {}
    unsafe: set[int] = set()
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
        parse = partial(_parse_manifests, tree, read_created, sizes.complete, table)
        parsed = 0
        parents: list[int] = []  # lists and indexes (a bare record has no children)
        for chunk in forked.run(parse, chunks, count):
            created.update(chunk.created)
            unsafe.update(chunk.unsafe)
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
    return manifests, created, failed, parent_of, unsafe


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
    tree: _Tree,
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
        partial(_data_sizes, tree), _chunks(tasks, _TASKS_PER_WORKER * count), count
    ):
        for blob_id, size in part:
            if size == UNKNOWN_SIZE:
                return False
            sizes.sizes[blob_id] = size
    return True


def _data_sizes(tree: _Tree, blobs: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """The size of each blob's regular ``data`` file, UNKNOWN_SIZE when it has none (stat'ed
    relative to the blob store; its prefix and blob directories are directories by their type
    in phase 1's listing)."""
    found = []
    for blob_id, digest in blobs:
        hexpart = digest.split(":", 1)[1]
        try:
            st = os.lstat(f"{hexpart[:2]}/{hexpart}/data", dir_fd=tree.store_fd)
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
    unsafe: set[int],
) -> list[Problem]:
    """A problem per repository that links (or tags) a manifest that does not parse: GC_ABORT
    when the registry's GC reads it (a revision link names it), or when its ``data`` is a
    link or a special file (UNSAFE, whoever names it)."""
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
            if blob_id in unsafe:
                kind, suffix = UNSAFE, ""
            reading.problem(
                path, f"manifest {digest} is unreadable: {message}{suffix}", kind, repo_name
            )
    return list(dict.fromkeys(reading.problems))  # a repository may both tag and link it
