"""Phase 2, inside one repository: its link files (tags, revisions, and ``_layers`` for
``verify``), each read with its digest and mtime.

Reads each subdirectory's ``link`` file of ``_manifests/tags`` (``current/link``),
``_manifests/revisions/sha256`` and ``_layers/sha256``: its first few hundred bytes whatever
its size (a wrong one is quoted in its problem), through the reader of the directory above it
(:meth:`~retentiond.storage.port.StorageReader.head`), no link followed. Trusts no entry: a
symbolic link among them or on the way to a link file, or a link file that is not a regular
file, is an UNSAFE problem of the repository; an entry that is not a directory, a link that is
missing, empty or not a digest, a tag name the registry would refuse, a revision link naming
another digest than its directory: problems of the repository, and the entry is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from retentiond.core.inventory import ProblemKind
from retentiond.core.manifests import DIGEST_RE
from retentiond.core.names import tag_name_problem
from retentiond.storage import layout
from retentiond.storage.port import Entry, Kind, StorageReader
from retentiond.storage.reading.catalog import RepoDir
from retentiond.storage.reading.problems import NOT_FOLLOWED, UNSAFE, ProblemLog, unsafe_message
from retentiond.storage.safe_fs import NotRegularFile, UnsafeEntry

T = TypeVar("T")
L = TypeVar("L")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: a link file holds ``sha256:`` and 64 hex digits; more is read only to say it is wrong
_LINK_BYTES = 200
#: a tag read: its name, the digest its ``current/link`` holds and the link's mtime
Tag = tuple[str, str, float]


class LinkError(ValueError):
    """A link file that cannot be trusted. ``kind``: how much that matters (UNSAFE for a link
    or a special file in its path); ``where``: the component at fault, relative to the
    directory the link was read from (empty: the link file itself)."""

    def __init__(
        self, message: str, kind: ProblemKind = ProblemKind.UNREADABLE, where: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where


def read_link(directory: StorageReader, path: str) -> tuple[str, float]:
    """A ``link`` file's digest and mtime (seconds), ``path`` relative to ``directory``'s
    reader: no symbolic link followed in any component, never blocking (a FIFO, a device or a
    socket is refused by its type before any read), at most a few hundred bytes read."""
    try:
        data, mtime = directory.head(path, _LINK_BYTES)
    except FileNotFoundError as exc:
        raise LinkError("link file is missing") from exc
    except NotRegularFile as exc:
        if not exc.what:  # refused as it was opened (a socket, a device)
            raise LinkError(unsafe_message(exc), UNSAFE, exc.where) from exc
        raise LinkError(
            f"link is {exc.what}, not a regular file; the registry's GC would block or fail "
            "on it: remove it",
            UNSAFE,
        ) from exc
    except UnsafeEntry as exc:
        raise LinkError(unsafe_message(exc), UNSAFE, exc.where) from exc
    except OSError as exc:
        opening = "open" if exc.filename is not None else "read"
        raise LinkError(f"cannot {opening} link: {exc.strerror}") from exc
    if not data:
        raise LinkError("link file is empty (an interrupted write; the registry answers 500)")
    text = data.decode("ascii", "replace")
    if DIGEST_RE.fullmatch(text) is None:
        raise LinkError(f"link does not hold a sha256 digest: {text[:80]!r}")
    return text, mtime


class RepoReading(ProblemLog):
    """Reading one repository: ``dir`` is its directory's reader, ``base`` its path."""

    def __init__(self, repo: RepoDir, directory: StorageReader) -> None:
        super().__init__()
        self.repo, self.dir, self.base = repo, directory, repo.path

    def unsafe(self, path: str, exc: UnsafeEntry) -> None:
        """``exc`` met reading ``path`` (its ``where`` is relative to the repository too)."""
        where = exc.where or path
        self.problem(f"{self.base}/{where}", unsafe_message(exc), UNSAFE, self.repo.name)

    def unreadable(self, path: str, exc: OSError) -> None:
        self.problem(
            f"{self.base}/{path}",
            f"cannot read: {exc.strerror}; nothing in this repository is decided",
            ProblemKind.UNREADABLE,
            self.repo.name,
        )

    def attempt(self, path: str, action: Callable[[str], T]) -> T | None:
        """``action(path)`` (a call of the repository's reader); None when ``path`` does not
        exist or cannot be read or trusted (then a problem says so)."""
        try:
            return action(path)
        except FileNotFoundError:
            return None
        except UnsafeEntry as exc:
            self.unsafe(path, exc)
        except OSError as exc:
            self.unreadable(path, exc)
        return None

    def entries(self, path: str) -> tuple[StorageReader, list[Entry]] | None:
        """A reader of the repository's directory ``path`` (the caller closes it) and its
        entries; None when it does not exist or cannot be read or trusted (then a problem says
        so)."""
        directory = self.attempt(path, self.dir.below)
        if directory is None:
            return None
        entries = self._list(path, directory, directory.list)
        return None if entries is None else (directory, entries)

    def subdirectories(self, path: str, what: str) -> tuple[StorageReader, list[str]] | None:
        """A reader of the repository's directory ``path`` (the caller closes it) and the
        names of the directories in it, from its names alone when it holds nothing else (no
        object per entry: the tags of a repository may be a hundred thousand); anything else
        in it is a problem (``what``: what its entries are). None as for :meth:`entries`."""
        directory = self.attempt(path, self.dir.below)
        if directory is None:
            return None
        names = self._list(path, directory, directory.names)
        if names is None:
            return None
        if names.only_dirs:
            return directory, names.names
        entries = self._list(path, directory, directory.list)
        if entries is None:
            return None
        base = f"{self.base}/{path}"
        for entry in entries:
            if entry.is_link:
                self.problem(
                    f"{base}/{entry.name}",
                    f"{what} entry is a symbolic link, {NOT_FOLLOWED}",
                    UNSAFE,
                    self.repo.name,
                )
            elif entry.kind is not Kind.DIR:
                self.problem(
                    f"{base}/{entry.name}",
                    f"{what} entry is not a directory",
                    ProblemKind.UNREADABLE,
                    self.repo.name,
                )
        return directory, [entry.name for entry in entries if entry.kind is Kind.DIR]

    def _list(self, path: str, directory: StorageReader, listing: Callable[[str], L]) -> L | None:
        """``listing("")`` of ``directory`` (the repository's ``path``); None when it fails
        (``directory`` is closed, and a problem says why)."""
        try:
            return listing("")
        except OSError as exc:
            directory.close()
            self.unreadable(path, exc)
            return None


def _links_under(
    reading: RepoReading, directory: str, link: str, what: str
) -> Iterator[tuple[str, tuple[str, float] | LinkError]]:
    """Each subdirectory of the repository's ``directory`` with its ``link`` file read
    (digest and mtime), or why it could not be; every file read through the directory's
    reader, no link followed. An entry that is not a directory is a problem, not yielded."""
    listed = reading.subdirectories(directory, what)
    if listed is None:
        return
    links, names = listed
    try:
        for name in names:
            read: tuple[str, float] | LinkError
            try:
                read = read_link(links, f"{name}/{link}")
            except LinkError as exc:
                read = exc
            yield name, read
    finally:
        links.close()


def _link_problem(
    reading: RepoReading,
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


def read_tags(reading: RepoReading) -> list[Tag]:
    """(tag, digest, mtime) of every tag whose ``current/link`` can be trusted."""
    tags: list[Tag] = []
    directory, link = layout.TAGS, layout.CURRENT_LINK
    for tag, read in _links_under(reading, directory, link, "tag"):
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
            label = f"tag {tag!r}"
            _link_problem(reading, directory, tag, link, read, label, ProblemKind.UNREADABLE)
            continue
        tags.append((tag, *read))
    return tags


def read_revisions(reading: RepoReading) -> dict[str, float]:
    """The mtime of every revision link that can be trusted, by digest."""
    revisions: dict[str, float] = {}
    directory, link = layout.REVISIONS, layout.LINK
    bad = ProblemKind.GC_ABORT if reading.repo.has_layers else ProblemKind.UNREADABLE
    digest_of = layout.digest_of
    for hexpart, read in _links_under(reading, directory, link, "revision"):
        if isinstance(read, LinkError):
            if str(read) == "link file is missing":
                continue  # an empty revision directory, as GC leaves behind
            _link_problem(reading, directory, hexpart, link, read, "revision link", bad)
            continue
        digest, when = read
        if digest != digest_of(hexpart):
            reading.problem(
                f"{reading.base}/{directory}/{hexpart}/{link}",
                f"revision link holds {digest}, not the digest its directory names",
                ProblemKind.UNREADABLE,
                reading.repo.name,
            )
            continue
        revisions[digest] = when
    return revisions


def read_layer_links(reading: RepoReading) -> list[str]:
    """The digests the repository's ``_layers`` links name (links that cannot be read are
    left out: ``verify`` then reports the blob as not linked), sorted."""
    linked = set()
    directory, link = layout.LAYER_LINKS, layout.LINK
    for hexpart, read in _links_under(reading, directory, link, "layer"):
        if isinstance(read, LinkError):
            if read.kind is UNSAFE:
                _link_problem(reading, directory, hexpart, link, read, "layer link", UNSAFE)
            continue
        if _HEX64.fullmatch(hexpart):
            linked.add(read[0])
    return sorted(linked)
