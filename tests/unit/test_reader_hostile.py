"""The reader on hostile trees: the same inventory with worker processes as without, and
nothing a worker meets ends the read (it becomes a problem of its repository).

The CLI's view of each hostile case is in ``tests/integration/test_hostile_tree.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.generate import Params, generate
from bench.hostile import KINDS, make_hostile
from retentiond.core.inventory import ProblemKind
from retentiond.errors import StorageError
from retentiond.storage import reader
from retentiond.storage.reader import read_inventory
from retentiond.storage.reading import manifests

SNAPSHOT = """
import json, sys
from retentiond.storage.reader import read_inventory
from retentiond.storage import safe_fs
out = []
for workers, at_once in ((1, True), (2, True), (2, False)):
    safe_fs.use_openat2(at_once)  # openat2, or one component at a time: the same
    inv = read_inventory(sys.argv[1], workers=workers, read_created=True)
    out.append((
        [(r.name, list(r.tags), dict(r.revisions), r.last_activity) for r in inv.repositories],
        dict(inv.manifests), dict(inv.blobs), inv.problems, dict(inv.created),
    ))
print(json.dumps({"same": out[0] == out[1] == out[2], "problems": len(inv.problems)}))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "root"
    generate(root, Params(repositories=40, tags=5, index_share=0.3, seed=13), jobs=1)
    return root


def test_hostile_tree_reads_the_same_with_workers_and_either_resolution(
    tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "hostile"
    shutil.copytree(tree, root, symlinks=True)
    (tmp_path / "outside").mkdir()
    made = make_hostile(root, tmp_path / "outside")
    assert len(made) == len(KINDS)
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(result.stdout)
    assert doc["same"] and doc["problems"] >= len(made)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("error", [RecursionError, OverflowError, ValueError])
def test_a_manifest_the_parser_chokes_on_refuses_its_repository(
    tree: Path, monkeypatch: pytest.MonkeyPatch, workers: int, error: type[Exception]
) -> None:
    """Whatever a manifest makes the parser raise, in a worker or not, is a problem of the
    repositories that link it, never the end of the read (exit 3)."""
    clean = read_inventory(tree, workers=1)
    victim = clean.repositories[0]
    digest = victim.tags[0].digest
    parse = manifests.parse_manifest  # type: ignore[attr-defined]  # the name phase 3 calls

    def choking(blob_digest: str, data: bytes) -> object:
        if blob_digest == digest:
            raise error("deep")
        return parse(blob_digest, data)

    monkeypatch.setattr(manifests, "parse_manifest", choking)
    inventory = read_inventory(tree, workers=workers)
    mine = [p for p in inventory.problems if digest in p.message]
    assert mine and {p.repository for p in mine} == {victim.name}
    assert {p.kind for p in mine} <= {ProblemKind.GC_ABORT, ProblemKind.UNREADABLE}


KILLED = """
import os, signal, sys
from retentiond.errors import StorageError
from retentiond.storage import reader
parent = os.getpid()
real = reader.read_repositories
def dying(*args):
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
reader.read_repositories = dying
try:
    reader.read_inventory(sys.argv[1], workers=2)
except StorageError as exc:
    print("StorageError:", exc)
"""


def test_a_reader_process_killed_is_an_error_not_a_hang(tree: Path) -> None:
    """A worker killed (by the OOM killer, say) takes its task with it: the read fails with a
    StorageError (exit 1) instead of waiting forever."""
    result = subprocess.run(
        [sys.executable, "-c", KILLED, str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("StorageError: a reader process")
    assert "exit code -9" in result.stdout


def test_check_storage_says_what_reading_would(tree: Path, tmp_path: Path) -> None:
    reader.check_storage(tree)
    root = tmp_path / "linked"
    (root / "docker").mkdir(parents=True)
    (root / "docker/registry").symlink_to(tree / "docker/registry")
    with pytest.raises(StorageError, match="is a symbolic link"):
        reader.check_storage(root)
    with pytest.raises(StorageError, match="does not exist"):
        reader.check_storage(tmp_path / "nothing")
