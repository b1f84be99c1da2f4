"""Read and edit a registry storage tree (``<root>/docker/registry/v2``) directly."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

V2 = Path("docker") / "registry" / "v2"

LIST_TYPES = {
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
}


def v2(root: Path) -> Path:
    return Path(root) / V2


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def blob_dir(root: Path, digest: str) -> Path:
    h = _hex(digest)
    return v2(root) / "blobs" / "sha256" / h[:2] / h


def blob_data(root: Path, digest: str) -> Path:
    return blob_dir(root, digest) / "data"


def blob_exists(root: Path, digest: str) -> bool:
    return blob_data(root, digest).is_file()


def repo_dir(root: Path, repo: str) -> Path:
    return v2(root) / "repositories" / repo


def tag_dir(root: Path, repo: str, tag: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "tags" / tag


def tag_link(root: Path, repo: str, tag: str) -> Path:
    """``.../_manifests/tags/<tag>/current/link``: its content is the tag's digest, its mtime
    the tag's last push."""
    return tag_dir(root, repo, tag) / "current" / "link"


def revision_dir(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "revisions" / "sha256" / _hex(digest)


def layer_link_dir(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_layers" / "sha256" / _hex(digest)


def read_link(path: Path) -> str:
    return Path(path).read_text()


def tag_digest(root: Path, repo: str, tag: str) -> str:
    """The digest ``tag`` points to now (content of its ``current/link``)."""
    return read_link(tag_link(root, repo, tag))


def list_tags(root: Path, repo: str) -> list[str]:
    tags = repo_dir(root, repo) / "_manifests" / "tags"
    return sorted(p.name for p in tags.iterdir()) if tags.is_dir() else []


def list_revisions(root: Path, repo: str) -> set[str]:
    revs = repo_dir(root, repo) / "_manifests" / "revisions" / "sha256"
    return {f"sha256:{p.name}" for p in revs.iterdir()} if revs.is_dir() else set()


def list_blobs(root: Path) -> set[str]:
    """Every digest with a ``data`` file under ``blobs/``."""
    base = v2(root) / "blobs" / "sha256"
    if not base.is_dir():
        return set()
    return {f"sha256:{d.name}" for d in base.glob("*/*") if (d / "data").is_file()}


def read_manifest(root: Path, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(blob_data(root, digest).read_bytes())
    return data


def manifest_blobs(root: Path, digest: str) -> set[str]:
    """The manifest blob itself and everything it references, recursively through manifest
    lists / OCI indexes: config, layers, children (and the children's blobs)."""
    out = {digest}
    doc = read_manifest(root, digest)
    if doc.get("mediaType") in LIST_TYPES or ("manifests" in doc and "layers" not in doc):
        for child in doc.get("manifests", []):
            out |= manifest_blobs(root, child["digest"])
        return out
    if "config" in doc:
        out.add(doc["config"]["digest"])
    for layer in doc.get("layers", []):
        out.add(layer["digest"])
    for layer in doc.get("fsLayers", []):  # schema1
        out.add(layer["blobSum"])
    return out


def remove_tag(root: Path, repo: str, tag: str) -> None:
    """Remove only the tag's directory (what retentiond does for a deleted tag)."""
    shutil.rmtree(tag_dir(root, repo, tag))


def unlink_manifest(root: Path, repo: str, digest: str) -> None:
    """Remove the manifest's revision link directory, so GC no longer marks it."""
    shutil.rmtree(revision_dir(root, repo, digest))


def set_pushed_at(root: Path, repo: str, tag: str, when: datetime) -> None:
    """Make the tag look pushed at ``when`` (mtime of its ``current/link``). A naive
    ``when`` is taken as local time, as ``datetime.timestamp`` does."""
    ts = when.timestamp()
    os.utime(tag_link(root, repo, tag), (ts, ts))


def pushed_at(root: Path, repo: str, tag: str) -> float:
    return tag_link(root, repo, tag).stat().st_mtime


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a registry root (or any tree) preserving mtimes and symlinks; ``dst`` must not
    exist. Returns ``dst``."""
    # copytree copies each directory's stat after its contents, so directory mtimes (a tag
    # directory's creation time) survive as well as file mtimes.
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return Path(dst)


def data_bytes(root: Path) -> int:
    """The bytes of every blob ``data`` file: what ``du`` of the blob store counts."""
    total = 0
    for dirpath, _, files in os.walk(v2(root) / "blobs"):
        if "data" in files:
            total += os.lstat(os.path.join(dirpath, "data")).st_size
    return total
