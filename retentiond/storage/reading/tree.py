"""The top of the tree: ``<root>/docker/registry/v2``, its ``blobs/sha256`` and ``repositories``,
opened once as scoped readers of the storage port (:meth:`~retentiond.storage.port.
StorageReader.below`); every later path is read through them (forked workers inherit them).

Trusts ``registry.root`` (the operator's: it may be a symbolic link) and nothing below it: a
link (or anything but a directory) as ``docker``, ``registry``, ``v2``, ``blobs``,
``blobs/sha256`` or ``repositories`` fails the whole run (StorageError, exit 1) naming the path.
The registry writes none of them as links, so one is a deployment choice retentiond does not
make for the operator: point ``registry.root`` at the real directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retentiond.errors import StorageError
from retentiond.storage import layout
from retentiond.storage.filesystem import FilesystemStorage
from retentiond.storage.location import Location
from retentiond.storage.port import Storage, StorageReader
from retentiond.storage.reading.problems import cannot_read
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage.safe_fs import SymlinkFound, UnsafeEntry, open_root


@dataclass(frozen=True)
class Tree:
    """Where the reader reads: ``v2`` (for messages; never opened by name) and readers of
    ``blobs/sha256`` and of ``repositories`` (None: the directory does not exist). Forked
    workers inherit them: every path below is read through them."""

    v2: str
    store: StorageReader | None
    repos: StorageReader | None
    #: whether reads wait on the network (an object store): more readers than CPUs (see
    #: :func:`retentiond.storage.reader.threaded`)
    network: bool = False

    def close(self) -> None:
        for reader in (self.repos, self.store):
            if reader is not None:
                reader.close()


def open_tree(root: Location) -> Tree:
    """Open ``<root>/docker/registry/v2``, its ``blobs/sha256`` and ``repositories``.

    ``root`` (``registry.root``, the operator's) may be a symbolic link; nothing below it
    may: ``docker``, ``registry``, ``v2``, ``blobs``, ``blobs/sha256`` or ``repositories`` as a
    link (or as anything but a directory) is a StorageError for the whole run. A bucket: the
    S3 backend's readers of those prefixes, the bucket checked reachable first; no object below
    ``v2`` is the same error as a missing ``v2`` on a disk."""
    if isinstance(root, S3Settings):
        return _open_bucket(root)
    v2 = root.joinpath(*layout.V2_PARTS)
    try:
        root_fd = open_root(str(root))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise StorageError(
            f"{v2} does not exist: registry.root must be the registry's storage rootdirectory "
            "(the directory that contains docker/registry/v2)"
        ) from exc
    except OSError as exc:
        raise StorageError(cannot_read(root, exc)) from exc
    try:
        storage = FilesystemStorage(root, root_fd)
    except (OSError, UnsafeEntry) as exc:
        raise _top_error(root, layout.V2, exc, required=True) from exc
    with storage:
        store, repos = _open_tops(v2, storage)
    return Tree(str(v2), store, repos)


def _open_bucket(settings: S3Settings) -> Tree:
    """:func:`open_tree` of a bucket."""
    from retentiond.storage.s3 import open_s3_storage  # boto3 only when S3 is used

    v2 = settings.url(layout.V2)
    with open_s3_storage(settings) as storage:
        store, repos = _open_tops(v2, storage)
    if store is None and repos is None:
        raise StorageError(
            f"no object below {v2}: the registry's storage.s3 bucket and rootdirectory must be "
            "the registry's (check registry.storage or registry.config_file), and the registry "
            "must have been pushed to"
        )
    return Tree(v2, store, repos, network=True)


def _open_tops(
    v2: Path | str, storage: Storage
) -> tuple[StorageReader | None, StorageReader | None]:
    """Readers of ``blobs/sha256`` and of ``repositories`` (None: not there); the first is
    closed when the second cannot be opened."""
    store = _open_top(v2, storage, layout.BLOB_STORE)
    try:
        return store, _open_top(v2, storage, layout.REPOSITORIES)
    except BaseException:
        if store is not None:
            store.close()
        raise


def _open_top(v2: Path | str, storage: Storage, path: str) -> StorageReader | None:
    """A directory at the top of the tree (None when it does not exist)."""
    try:
        return storage.below(path)
    except FileNotFoundError:
        return None
    except (OSError, UnsafeEntry) as exc:
        raise _top_error(v2, path, exc, required=False) from exc


def _at(base: Path | str, path: str) -> str:
    return f"{base}/{path}" if path else str(base)


def _top_error(
    base: Path | str, path: str, exc: OSError | UnsafeEntry, *, required: bool
) -> Exception:
    """The StorageError for a directory at the top of the tree that cannot be opened."""
    if isinstance(exc, FileNotFoundError) and required:
        return StorageError(
            f"{_at(base, path)} does not exist: registry.root must be the registry's storage "
            "rootdirectory (the directory that contains docker/registry/v2)"
        )
    if isinstance(exc, SymlinkFound):
        return StorageError(
            f"{_at(base, exc.where)} is a symbolic link: retentiond follows no link below "
            "registry.root; set registry.root to the real storage rootdirectory, in which "
            "docker/registry/v2 and its blobs/sha256 and repositories are directories"
        )
    if isinstance(exc, UnsafeEntry):
        return StorageError(f"{_at(base, exc.where or path)}: {exc}; expected a directory")
    return StorageError(cannot_read(_at(base, path), exc))
