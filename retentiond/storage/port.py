"""The storage port: what reading and changing a registry's storage needs, and nothing more.

A backend serves the tree below the registry's ``docker/registry/v2`` (paths are relative to it
and built by :mod:`retentiond.storage.layout`) and retentiond's quarantine beside it. The
filesystem backend (:mod:`retentiond.storage.filesystem`) is the one today; the interface is
shaped for an object store too: a listing gives each entry's kind and, where the store knows
them without another request, its size, modification time and a hint of where it is stored
(to read many objects in the order they are stored); a directory of very many entries (a blob
store prefix) can be listed as columns of names, without an object per entry; a read is of a
small object, bounded, or of its first bytes whatever its size; a reader can be scoped to a
directory (a key prefix), whose paths are then relative to it; the mutations are the ones
removal and cleanup need, each said with what it must guarantee when the process dies in the
middle of it, so that a backend without ``rename`` (copy, then delete) can keep the same
promises.

Errors are part of the interface, so the layers above decide the same way on every backend:

- :class:`FileNotFoundError`: nothing at that path (the registry may have removed it since);
- :class:`~retentiond.storage.safe_fs.UnsafeEntry` and its subclasses: something the registry
  never writes stands at or on the way to the path (a symbolic link, a FIFO, a device, a file
  where a directory should be); never followed, never read; its ``where`` is the path of the
  component at fault, relative to ``v2`` (or to the quarantine, for the quarantine's calls; or
  to a scoped reader's directory, for its calls); a
  :class:`~retentiond.storage.safe_fs.NotRegularFile` found once the object was opened says
  what it is in ``what``;
- :class:`~retentiond.storage.safe_fs.TooLarge`: the object is larger than the reader's bound;
- :class:`FileExistsError`: a move's destination exists (:meth:`StorageWriter.restore`);
- any other :class:`OSError`: the store could not be read or changed (permissions, I/O); for a
  read, its ``filename`` is set when the object could not be opened and None when it was
  opened and then could not be read.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple, Protocol

#: :attr:`Entry.detail` of a symbolic link
SYMBOLIC_LINK = "a symbolic link"


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    #: a symbolic link, FIFO, socket or device: the registry writes none of them
    OTHER = "other"


class Entry(NamedTuple):
    """One name in a listing. ``size`` and ``mtime`` (seconds since the epoch) are None where
    the backend would need another request to know them (a directory; a file on disk before it
    is stat'ed). ``detail``: what the entry is, in words ("a symbolic link", "a FIFO"), for
    messages, where the backend knows it without another request (else empty). ``order``:
    where the entry is stored, as a number (on a disk, its inode): entries read in that order
    are read front to back; None where the store gives no such hint (an object store).

    A named tuple, not a dataclass: a listing makes one per entry, millions in a plan, and a
    tuple is made in half the time of a frozen dataclass."""

    name: str
    kind: Kind
    size: int | None = None
    mtime: float | None = None
    detail: str = ""
    order: int | None = None

    @property
    def is_link(self) -> bool:
        """Whether it is a symbolic link (an object store has none)."""
        return self.detail == SYMBOLIC_LINK


class Names(NamedTuple):
    """A directory's names as columns, for a directory of very many entries (a prefix of the
    blob store holds thousands): no object per entry.

    ``names``: sorted (as Python sorts strings: for UTF-8 names, the order of their bytes,
    which is an object store's listing order). ``order``: the :attr:`Entry.order` of each name,
    or None where the store gives none. ``only_dirs``: whether every entry is a directory (a
    key prefix); when not, :meth:`StorageReader.list` says what each one is."""

    names: list[str]
    order: array[int] | None
    only_dirs: bool


class Read(NamedTuple):
    """A small object's bytes and its modification time (a tag link's is its push time)."""

    data: bytes
    mtime: float


class StorageReader(Protocol):
    """Reading the tree below ``v2``, or below the directory a reader is scoped to
    (:meth:`below`): its paths are relative to that directory, ``""`` the directory itself.

    Implementations are safe to use from forked workers, which are handed readers opened
    before the fork (pickled: a filesystem reader sends its descriptor's number, which the
    worker inherited)."""

    def list(self, path: str) -> list[Entry]:
        """The entries of the directory (or key prefix) ``path``, in no particular order."""
        ...

    def names(self, path: str) -> Names:
        """The names in the directory ``path``, sorted, as columns (see :class:`Names`)."""
        ...

    def read(self, path: str, limit: int) -> Read:
        """The bytes of the object ``path``, at most ``limit`` of them (``TooLarge`` above)."""
        ...

    def head(self, path: str, size: int) -> Read:
        """The first ``size`` bytes of the object ``path`` (all of it when it is shorter),
        whatever its size: to quote an object that should be small and is not."""
        ...

    def stat(self, path: str) -> Entry:
        """The entry at ``path`` (``""``: the directory read from) with its size and
        modification time."""
        ...

    def stat_each(self, paths: Sequence[str]) -> Sequence[Entry | None]:
        """The entry at each of ``paths`` (None where there is none), for many objects of one
        directory's subdirectories at once (the ``data`` of a blob store prefix's blobs): an
        object store answers from one listing of the directory. Not followed if it is a link,
        but, unlike :meth:`stat`, a directory on the way that a listing found and that was
        swapped for a link since may be crossed: it may give the size of a file elsewhere,
        never its content. ``OSError`` other than a missing object: its ``filename`` is the
        path."""
        ...

    def below(self, path: str) -> StorageReader:
        """A reader of the directory ``path``, paths relative to it, errors' ``where`` too;
        the caller closes it. A filesystem holds the directory open (reads below it start
        from there: a link swapped in above it afterwards is never crossed); an object store
        prefixes its keys."""
        ...

    def close(self) -> None:
        """Release what the reader holds (not the readers :meth:`below` gave)."""
        ...


class StorageWriter(Protocol):
    """Changing the tree below ``v2`` (paths relative to it, as :class:`StorageReader`'s) and
    retentiond's quarantine, which is beside ``v2`` in the same store and holds what runs
    removed until it is purged. Quarantine paths are relative to the quarantine: ``""`` (the
    quarantine itself), ``<run_id>`` (one run's) and ``<run_id>/<held>`` (one removal held),
    from :mod:`retentiond.storage.layout`.

    Nothing here follows a symbolic link or changes anything outside the tree and the
    quarantine. Every move is of a whole directory (a tag, a revision, a repository): what
    callers rely on after a crash is said for each call; a backend without an atomic rename
    (an object store) keeps it by copying before it deletes and by making the copy visible
    last (for instance a marker object written once every object is copied)."""

    def location(self, path: str) -> str:
        """Where ``path`` (below ``v2``) is, for messages (a filesystem path, a URL)."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether the directory ``path`` is there: False when it or a component on the way
        is missing; ``UnsafeEntry`` when a link or a file stands at or on the way to it."""
        ...

    def can_change(self, path: str) -> bool:
        """Whether this process may add and remove entries in the directory ``path``."""
        ...

    def make_dirs(self, path: str) -> None:
        """Make the directory ``path`` and whichever of its parents are missing, one at a
        time. ``FileNotFoundError`` (its ``filename`` the component) when one vanishes as it
        is made; ``UnsafeEntry`` when one is a link or a file. Interrupted: some of them are
        made, all empty (an object store, which has no directories, makes none)."""
        ...

    def remove_dir(self, path: str) -> None:
        """Remove the directory ``path`` when it is empty; ``OSError`` when it is not (or is
        gone). Atomic."""
        ...

    def remove_tree(self, path: str, ignore_errors: bool = False) -> None:
        """Remove the directory ``path`` and everything below it, never through a link; with
        ``ignore_errors``, as much of it as can be. Interrupted: part of it is removed."""
        ...

    # -- the quarantine ---------------------------------------------------------------------

    def quarantine_dir(self, path: str, create: bool) -> bool:
        """Whether the quarantine's directory ``path`` (``""`` or ``<run_id>``) is there, made
        first when ``create``. ``UnsafeEntry`` when a link or a file stands there: it is not
        retentiond's and is never followed nor deleted through."""
        ...

    def check_quarantine_writable(self) -> None:
        """Write and remove a small object in the quarantine; ``OSError`` when it cannot."""
        ...

    def same_store(self) -> bool:
        """Whether the quarantine and ``v2`` are in one store, so that a move between them is
        a rename (a filesystem: one device) and never a copy across stores."""
        ...

    def moves_by_copy(self) -> bool:
        """Whether a move copies, then deletes (an object store), instead of one atomic
        rename: then a move interrupted after its copy was whole may have left part of its
        source, which :meth:`hold` called again finishes (``FileExistsError`` when what is
        there was pushed since), and a restore interrupted half-way is finished by
        :meth:`restore` called again."""
        ...

    def held_stat(self, held: str) -> Entry:
        """The entry at the quarantine's ``held`` (not followed if it is a link). A backend
        without rename reports a held directory only once it is whole (see :meth:`hold`)."""
        ...

    def hold(self, path: str, held: str) -> None:
        """Move the directory ``path`` (below ``v2``) to the quarantine's ``held``, whose
        parent (the run's directory) exists. After return, ``path`` is gone and ``held`` whole.
        Interrupted: either ``path`` is whole and ``held`` absent (a retry moves it), or
        ``held`` is whole (:meth:`held_stat` finds it; a retry skips it) and ``path`` absent
        or partly removed (the registry must not see half of it as whole: an object store
        deletes a tag's ``current/link`` and a revision's ``link`` first)."""
        ...

    def restore(self, held: str, path: str) -> None:
        """Move the quarantine's ``held`` back to ``path`` (below ``v2``; its parent exists).
        ``FileExistsError`` when ``path`` exists (pushed again since): nothing is moved. After
        return, ``path`` is whole and ``held`` gone. Interrupted: ``held`` is whole until
        ``path`` is (an object store copies every object, the link files last, then deletes)."""
        ...

    def remove_held(self, held: str) -> None:
        """Delete the quarantine's ``held`` (a run's directory) and everything in it, never
        through a link; ``FileNotFoundError`` when it is gone. Interrupted: part of it is
        deleted, which a retry finishes."""
        ...


class Storage(StorageReader, StorageWriter, Protocol):
    """A backend's whole storage (the tree and the quarantine), opened by
    :func:`retentiond.storage.removal.open_storage` and closed with ``with``."""

    def __enter__(self) -> Storage: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
