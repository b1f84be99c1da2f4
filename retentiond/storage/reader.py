"""Read a registry's filesystem storage tree into an :class:`~retentiond.core.inventory.Inventory`.

Only reads; never follows a symbolic link and never leaves ``<root>/docker/registry/v2``. What it
cannot trust becomes a :class:`~retentiond.core.inventory.Problem` with its path, and the planner
leaves the repository concerned alone.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retentiond.core.inventory import Inventory, Manifest, Problem, ProblemKind, Repository, Tag
from retentiond.core.manifests import ManifestError, is_digest, parse_created, parse_manifest
from retentiond.errors import StorageError

V2 = ("docker", "registry", "v2")
HEX64 = re.compile(r"[0-9a-f]{64}")
#: the registry refuses manifests larger than this; a bigger "manifest" is not one
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def storage_v2(root: Path) -> Path:
    return root.joinpath(*V2)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


class LinkError(ValueError):
    """A link file that cannot be trusted."""


def read_link(path: str) -> tuple[str, datetime]:
    """Read a ``link`` file without following symlinks: its digest and mtime."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError as exc:
        raise LinkError("link file is missing") from exc
    except OSError as exc:
        raise LinkError(f"cannot open link: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LinkError("link is not a regular file")
        data = os.read(fd, 200)
    finally:
        os.close(fd)
    if not data:
        raise LinkError("link file is empty (an interrupted write; the registry answers 500)")
    text = data.decode("ascii", "replace")
    if not is_digest(text):
        raise LinkError(f"link does not hold a sha256 digest: {text[:80]!r}")
    return text, _mtime(st)


def read_blob(v2: Path, digest: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """Read a blob's data without following symlinks; FileNotFoundError when it is missing."""
    hexpart = digest.split(":", 1)[1]
    path = f"{v2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data"
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise ManifestError(f"{st.st_size} bytes, larger than any manifest")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
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


def _read_blobs(reading: _Reading) -> dict[str, int]:
    """Every blob with a ``data`` file, as the registry's GC enumerates them, with its size."""
    blobs: dict[str, int] = {}
    base = f"{reading.v2}/blobs/sha256"
    for prefix in _scandir(reading, base):
        if not prefix.is_dir(follow_symlinks=False):
            if prefix.is_symlink():
                reading.problem(
                    prefix.path, "symbolic link in the blob store", ProblemKind.UNREADABLE
                )
            continue
        for entry in _scandir(reading, prefix.path):
            if entry.is_symlink():
                reading.problem(
                    entry.path, "symbolic link in the blob store", ProblemKind.UNREADABLE
                )
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            data = f"{entry.path}/data"
            try:
                st = os.lstat(data)
            except FileNotFoundError:
                continue  # an empty blob directory: the GC ignores it too
            if not HEX64.fullmatch(entry.name):
                reading.problem(
                    entry.path,
                    "blob directory name is not a sha256 digest; the registry's GC aborts on it",
                    ProblemKind.GC_ABORT,
                )
                continue
            if not stat.S_ISREG(st.st_mode):
                reading.problem(data, "blob data is not a regular file", ProblemKind.UNREADABLE)
                continue
            blobs["sha256:" + entry.name] = st.st_size
    return blobs


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


def _newest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _dir_mtime(path: str) -> datetime | None:
    try:
        return _mtime(os.lstat(path))
    except OSError:
        return None


def _read_repository(reading: _Reading, repo: _RepoDir, read_layers: bool) -> Repository:
    name, problems = repo.name, reading
    tags: list[Tag] = []
    tags_dir = f"{repo.path}/_manifests/tags"
    for entry in _scandir(reading, tags_dir, name):
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            problems.problem(
                entry.path, "tag entry is not a directory", ProblemKind.UNREADABLE, name
            )
            continue
        link = f"{entry.path}/current/link"
        try:
            digest, pushed = read_link(link)
        except LinkError as exc:
            problems.problem(link, f"tag {entry.name!r}: {exc}", ProblemKind.UNREADABLE, name)
            continue
        tags.append(Tag(entry.name, digest, pushed))

    revisions: dict[str, datetime] = {}
    rev_dir = f"{repo.path}/_manifests/revisions/sha256"
    for entry in _scandir(reading, rev_dir, name):
        link = f"{entry.path}/link"
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            problems.problem(
                entry.path, "revision entry is not a directory", ProblemKind.UNREADABLE, name
            )
            continue
        try:
            digest, when = read_link(link)
        except LinkError as exc:
            if str(exc) == "link file is missing":
                continue  # an empty revision directory, as GC leaves behind
            kind = ProblemKind.GC_ABORT if repo.has_layers else ProblemKind.UNREADABLE
            problems.problem(link, f"revision link: {exc}", kind, name)
            continue
        if digest != "sha256:" + entry.name:
            problems.problem(
                link,
                f"revision link holds {digest}, not the digest its directory names",
                ProblemKind.UNREADABLE,
                name,
            )
            continue
        revisions[digest] = when

    layers: frozenset[str] | None = None
    if read_layers:
        linked = set()
        for entry in _scandir(reading, f"{repo.path}/_layers/sha256", name):
            if entry.is_dir(follow_symlinks=False) and HEX64.fullmatch(entry.name):
                try:
                    digest, _ = read_link(f"{entry.path}/link")
                except LinkError:
                    continue
                linked.add(digest)
        layers = frozenset(linked)

    activity = _newest(
        max(revisions.values(), default=None),
        max((t.pushed_at for t in tags), default=None),
        _dir_mtime(f"{repo.path}/_layers/sha256"),
        _dir_mtime(f"{repo.path}/_uploads"),
        *(_dir_mtime(e.path) for e in _scandir(reading, f"{repo.path}/_uploads", name)),
    )
    if revisions and not repo.has_layers:
        problems.problem(
            repo.path,
            "repository has manifests but no _layers directory: registry 2.8's GC skips it and "
            "would delete the blobs of its images",
            ProblemKind.GC_HAZARD,
            name,
        )
    tags.sort(key=lambda t: t.name)
    return Repository(
        name=name,
        tags=tuple(tags),
        revisions=revisions,
        listed_by_gc=repo.has_layers,
        last_activity=activity,
        layers=layers,
        has_nested=repo.has_nested,
    )


def _parse_one(v2: Path, digest: str) -> Manifest | str | None:
    """A parsed manifest, an error message, or None when the blob is missing."""
    try:
        return parse_manifest(digest, read_blob(v2, digest))
    except FileNotFoundError:
        return None
    except ManifestError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"


def _read_manifests(
    reading: _Reading,
    repositories: Iterable[Repository],
    blobs: dict[str, int],
    workers: int,
) -> dict[str, Manifest]:
    """Parse every manifest a tag or revision names, and their children, each blob once."""
    owners: dict[str, list[tuple[str, bool]]] = {}
    for repo in repositories:
        for digest in repo.revisions:
            owners.setdefault(digest, []).append((repo.name, repo.listed_by_gc))
        for tag in repo.tags:
            owners.setdefault(tag.digest, []).append((repo.name, False))
    manifests: dict[str, Manifest] = {}
    failed: set[str] = set()
    todo = [d for d in owners if d in blobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while todo:
            results = list(pool.map(lambda d: (d, _parse_one(reading.v2, d)), todo))
            todo = []
            for digest, result in results:
                if isinstance(result, Manifest):
                    manifests[digest] = result
                    for child in result.children:
                        if child in blobs and child not in manifests and child not in failed:
                            owners.setdefault(child, owners.get(digest, []))
                            todo.append(child)
                    continue
                failed.add(digest)
                hexpart = digest.split(":", 1)[1]
                path = reading.v2 / "blobs/sha256" / hexpart[:2] / hexpart / "data"
                message = "manifest blob vanished while reading" if result is None else result
                for repo_name, gc_reads_it in owners.get(digest, []):
                    kind = ProblemKind.GC_ABORT if gc_reads_it else ProblemKind.UNREADABLE
                    suffix = "; the registry's GC aborts on it" if gc_reads_it else ""
                    reading.problem(
                        path, f"manifest {digest} is unreadable: {message}{suffix}", kind, repo_name
                    )
            todo = list(dict.fromkeys(todo))
    return manifests


def _missing_manifest_blobs(
    reading: _Reading, repositories: Iterable[Repository], blobs: dict[str, int]
) -> None:
    for repo in repositories:
        for tag in repo.tags:
            if tag.digest not in blobs:
                reading.problem(
                    f"{reading.v2}/repositories/{repo.name}/_manifests/tags/{tag.name}/current/link",
                    f"tag {tag.name!r} points to {tag.digest}, whose blob is missing",
                    ProblemKind.UNREADABLE,
                    repo.name,
                )
        for digest in repo.revisions:
            if digest not in blobs:
                reading.problem(
                    f"{reading.v2}/repositories/{repo.name}/_manifests/revisions/"
                    + digest.replace(":", "/"),
                    f"revision {digest} has no blob",
                    ProblemKind.UNREADABLE,
                    repo.name,
                )


def _read_created(
    reading: _Reading, manifests: dict[str, Manifest], workers: int
) -> dict[str, datetime]:
    configs = sorted({m.config for m in manifests.values() if m.config})

    def one(digest: str) -> tuple[str, datetime | None]:
        try:
            return digest, parse_created(read_blob(reading.v2, digest, limit=16 * 1024 * 1024))
        except (OSError, ManifestError):
            return digest, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {d: t for d, t in pool.map(one, configs) if t is not None}


def read_blob_sizes(root: Path) -> dict[str, int]:
    """Every blob with data and its size (what the GC's sweep enumerates)."""
    return _read_blobs(_Reading(storage_v2(Path(root))))


def read_inventory(
    root: Path,
    *,
    read_created: bool = False,
    read_layers: bool = False,
    workers: int | None = None,
) -> Inventory:
    """Read the tree under ``root`` (the registry's ``rootdirectory``)."""
    root = Path(root)
    v2 = storage_v2(root)
    if not v2.is_dir():
        raise StorageError(
            f"{v2} does not exist: registry.root must be the registry's storage rootdirectory "
            "(the directory that contains docker/registry/v2)"
        )
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    reading = _Reading(v2)
    blobs = _read_blobs(reading)
    repositories = [
        _read_repository(reading, repo_dir, read_layers) for repo_dir in _find_repositories(reading)
    ]
    _missing_manifest_blobs(reading, repositories, blobs)
    manifests = _read_manifests(reading, repositories, blobs, workers)
    created = _read_created(reading, manifests, workers) if read_created else {}
    return Inventory(
        root=str(root),
        repositories=tuple(repositories),
        manifests=manifests,
        blobs=blobs,
        problems=tuple(reading.problems),
        created=created,
    )
