"""The floor: the least a planner must read, in the plainest Python. One thread, no parsing.

Reads exactly the files a plan needs and nothing else: the names in every prefix directory of
the blob store (a blob is a directory named by its digest; the plan takes layer sizes from the
manifests), every tag's ``current/link`` and every revision link is opened, fstat'ed (its mtime
is the push time) and read, and every manifest blob those links name is read once. Like the
plan, it drops the page cache copy of a link whose content lives in its inode (ext4
inline_data), so that both leave the cache alike. ``index/`` (tag history) and ``_layers`` are
not read. Prints what it read as JSON.

    python bench/floor.py ROOT
"""

from __future__ import annotations

import json
import os
import sys


def read_link(path: str) -> tuple[str, float]:
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        text = os.read(fd, 200).decode()
        if st.st_blocks * 512 < st.st_blksize:  # inline data: the page is a copy
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return text, st.st_mtime
    finally:
        os.close(fd)


def walk(root: str) -> dict[str, int]:
    v2 = f"{root}/docker/registry/v2"
    blobs = 0
    for prefix in os.scandir(f"{v2}/blobs/sha256"):
        blobs += len(os.listdir(prefix.path))
    repositories = tags = revisions = 0
    manifests: set[str] = set()
    stack = [f"{v2}/repositories"]
    while stack:
        path = stack.pop()
        is_repository = False
        for entry in os.scandir(path):
            if entry.name == "_manifests":
                is_repository = True
            elif not entry.name.startswith("_") and entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
        if not is_repository:
            continue
        repositories += 1
        for tag in os.scandir(f"{path}/_manifests/tags"):
            manifests.add(read_link(f"{tag.path}/current/link")[0])
            tags += 1
        for revision in os.scandir(f"{path}/_manifests/revisions/sha256"):
            manifests.add(read_link(f"{revision.path}/link")[0])
            revisions += 1
    read = 0
    for digest in manifests:
        hexpart = digest[7:]
        with open(f"{v2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data", "rb") as f:
            read += len(f.read())
    return {
        "repositories": repositories,
        "tags": tags,
        "revisions": revisions,
        "manifests": len(manifests),
        "manifest_bytes": read,
        "blobs": blobs,
    }


if __name__ == "__main__":
    print(json.dumps(walk(sys.argv[1])))
