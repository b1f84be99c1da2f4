"""The floor: the least a planner must read, in the plainest Python. One thread, no parsing.

Reads exactly the files a plan needs and nothing else: the ``data`` of every blob is stat'ed
(its size), every tag's ``current/link`` and every revision link is opened, fstat'ed (its
mtime is the push time) and read, and every manifest blob those links name is read once.
``index/`` (tag history) and ``_layers`` are not read. Prints what it read as JSON.

    python bench/floor.py ROOT
"""

from __future__ import annotations

import json
import os
import sys


def read_link(path: str) -> tuple[str, float]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 200).decode(), os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def walk(root: str) -> dict[str, int]:
    v2 = f"{root}/docker/registry/v2"
    blobs = 0
    for prefix in os.scandir(f"{v2}/blobs/sha256"):
        for entry in os.scandir(prefix.path):
            try:
                os.lstat(f"{entry.path}/data")
                blobs += 1
            except FileNotFoundError:
                pass
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
