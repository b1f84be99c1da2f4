"""Hostile repositories mixed into a generated tree: the others planned as before, in the same time?

    python -m bench.hostile --size 500x100                 # generates bench/trees/500x100
    python -m bench.hostile /path/to/tree [--runs 3]       # a tree made by bench.generate

(from the repository root, with the development venv's python).

Makes a copy of the tree (``cp -al``: files are shared, every change below replaces a file or
moves a directory, never writes one in place) and turns one repository per kind of
:data:`KINDS` hostile: FIFOs, a device, a socket where link files and a manifest's ``data``
belong, symbolic links at every level of a repository and in the blob store, each pointing at
a copy of the real content outside the root (so that a reader that followed it would find
valid files and plan the repository as if nothing were wrong). Then ``retentiond plan --json``
runs on both trees (``--runs`` each, median), and the script prints both times and whether
every other repository's plan entries (tags deleted, manifests unlinked, with their reasons)
are identical, and whether each hostile repository is refused by a problem naming the path.

A symbolic link in place of a whole blob-store prefix directory (``blobs/sha256/ab``) is not
mixed in: it hides a 256th of the blobs, and so refuses nearly every repository of a large
tree (``tests/integration/test_hostile_tree.py`` covers it on its own).

Devices are made with ``mknod`` (root only; left out otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.generate import Params, generate

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

RETENTIOND = str(REPO / ".venv/bin/retentiond")
POLICY = """\
policies:
  - name: keep-last-20
    repositories: ["**"]
    keep: {last: 20}
    untagged: delete
    allow_mass_delete: true
"""
#: a digest no blob of any tree has: a link outside the root holds it, and no plan may name it
MARKER = "sha256:" + "e" * 64


def v2(root: Path) -> Path:
    return root / "docker/registry/v2"


def repository_dirs(root: Path) -> Iterator[tuple[str, Path]]:
    """(name, directory) of every repository, not descending into ``_`` directories."""
    base = v2(root) / "repositories"
    stack = [base]
    while stack:
        directory = stack.pop()
        names = sorted(os.listdir(directory))
        if "_manifests" in names and directory != base:
            yield str(directory.relative_to(base)), directory
        stack += [
            directory / n
            for n in names
            if not n.startswith("_")
            and (directory / n).is_dir()
            and not (directory / n).is_symlink()
        ]


def _first(directory: Path) -> Path:
    return sorted(directory.iterdir())[0]


def _first_tag(repo: Path) -> Path:
    return _first(repo / "_manifests/tags")


def _blob_dir(root: Path, digest: str) -> Path:
    return v2(root) / "blobs/sha256" / digest[7:9] / digest[7:]


def _replace(path: Path, make: Callable[[Path], None]) -> str:
    path.unlink()
    make(path)
    return str(path)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is


def _socket(path: Path) -> None:
    """A socket file at ``path``, bound from its directory (a socket's path is short)."""
    code = "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, path.name], cwd=path.parent, check=True)


def _move_out(path: Path, outside: Path) -> str:
    """Move ``path`` outside the root and leave a symbolic link to it in its place."""
    target = outside / f"{len(list(outside.iterdir()))}-{path.name}"
    shutil.move(str(path), target)
    os.symlink(target, path)
    return str(path)


# each: (root, repository directory, a directory outside the root) -> the path the problem names
Hostile = Callable[[Path, Path, Path], str]


def fifo_tag_link(root: Path, repo: Path, outside: Path) -> str:
    return _replace(_first_tag(repo) / "current/link", _fifo)


def fifo_revision_link(root: Path, repo: Path, outside: Path) -> str:
    return _replace(_first(repo / "_manifests/revisions/sha256") / "link", _fifo)


def fifo_manifest_data(root: Path, repo: Path, outside: Path) -> str:
    digest = (_first_tag(repo) / "current/link").read_text()
    return _replace(_blob_dir(root, digest) / "data", _fifo)


def device_tag_link(root: Path, repo: Path, outside: Path) -> str:
    return _replace(_first_tag(repo) / "current/link", _device)


def socket_tag_link(root: Path, repo: Path, outside: Path) -> str:
    return _replace(_first_tag(repo) / "current/link", _socket)


def symlinked_link_file(root: Path, repo: Path, outside: Path) -> str:
    return _replace(_first_tag(repo) / "current/link", lambda p: os.symlink("/dev/zero", p))


def symlinked_tags_dir(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(repo / "_manifests/tags", outside)


def symlinked_revisions_dir(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(repo / "_manifests/revisions/sha256", outside)


def symlinked_manifests_dir(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(repo / "_manifests", outside)


def symlinked_tag_dir(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(_first_tag(repo), outside)


def symlinked_tag_current(root: Path, repo: Path, outside: Path) -> str:
    """``current/`` moved out and its link there rewritten to a digest no blob has: a reader
    that followed it would report that digest."""
    path = _move_out(_first_tag(repo) / "current", outside)
    link = Path(os.readlink(path)) / "link"
    link.unlink()
    link.write_text(MARKER)
    return path


def symlinked_layers_dir(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(repo / "_layers/sha256", outside)


def symlinked_repository(root: Path, repo: Path, outside: Path) -> str:
    return _move_out(repo, outside)


def symlinked_blob_dir(root: Path, repo: Path, outside: Path) -> str:
    """The blob directory of the repository's first tag's manifest, moved out (a copy of the
    real one: a reader that followed it would parse it)."""
    digest = (_first_tag(repo) / "current/link").read_text()
    return _move_out(_blob_dir(root, digest), outside)


def symlinked_upload(root: Path, repo: Path, outside: Path) -> str:
    uploads = repo / "_uploads"
    uploads.mkdir(exist_ok=True)
    os.symlink("/etc", uploads / "d0a1e6c2-upload")
    return str(uploads / "d0a1e6c2-upload")


KINDS: dict[str, Hostile] = {
    f.__name__.replace("_", "-"): f
    for f in (
        fifo_tag_link,
        fifo_revision_link,
        fifo_manifest_data,
        device_tag_link,
        socket_tag_link,
        symlinked_link_file,
        symlinked_tags_dir,
        symlinked_revisions_dir,
        symlinked_manifests_dir,
        symlinked_tag_dir,
        symlinked_tag_current,
        symlinked_layers_dir,
        symlinked_repository,
        symlinked_blob_dir,
        symlinked_upload,
    )
}


def make_hostile(root: Path, outside: Path, kinds: list[str] | None = None) -> dict[str, Any]:
    """Turn one repository per kind hostile (repositories spread evenly over the sorted names;
    never a repository nested in another's directory, nor one with a nested repository).
    Returns ``{repository: {"kind": ..., "path": the path a problem must name}}``."""
    names = kinds if kinds is not None else list(KINDS)
    if os.geteuid() != 0:
        names = [n for n in names if n != "device-tag-link"]
    candidates = [
        (name, path)
        for name, path in repository_dirs(root)
        if not any(c.is_dir() and not c.name.startswith("_") for c in path.iterdir())
        and not (path.parent / "_manifests").exists()
    ]
    if len(candidates) < len(names):
        raise ValueError(f"{len(candidates)} plain repositories, fewer than {len(names)} kinds")
    step = len(candidates) // len(names)
    made: dict[str, Any] = {}
    for n, kind in enumerate(names):
        name, path = candidates[n * step]
        made[name] = {"kind": kind, "path": KINDS[kind](root, path, outside)}
    return made


# -- the benchmark --------------------------------------------------------------------------------


def write_config(directory: Path, root: Path) -> Path:
    (directory / "policy.yaml").write_text(POLICY)
    config = directory / "retentiond.yaml"
    config.write_text(
        f"registry:\n  root: {root}\npolicies: [policy.yaml]\nstate_dir: {directory}/state\n"
    )
    return config


def plan(config: Path, timeout: float = 3600) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run(
        [RETENTIOND, "--config", str(config), "plan", "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"plan exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout)


def entries(doc: dict[str, Any], leave_out: set[str]) -> dict[str, list[Any]]:
    """The plan's tag and manifest entries, without the repositories in ``leave_out``."""
    return {
        key: sorted(
            json.dumps(e, sort_keys=True) for e in doc[key] if e["repository"] not in leave_out
        )
        for key in ("tags", "manifests")
    }


def refusal_check(doc: dict[str, Any], made: dict[str, Any]) -> list[str]:
    """What is wrong with how the hostile repositories were reported (empty: all is well)."""
    wrong = []
    refused = {r["repository"] for r in doc["refused"]}
    for repository, what in sorted(made.items()):
        named = [p for p in doc["problems"] if p["path"] == what["path"]]
        if repository not in refused and what["kind"] != "symlinked-repository":
            wrong.append(f"{repository} ({what['kind']}) is not refused")
        if not named:
            wrong.append(f"{repository} ({what['kind']}): no problem names {what['path']}")
        owners = {repository, None} if what["kind"] == "symlinked-blob-dir" else {repository}
        if any(p["repository"] not in owners for p in named):
            wrong.append(f"{repository} ({what['kind']}): the problem names another repository")
    text = json.dumps(doc)
    if MARKER in text:
        wrong.append(f"the plan names {MARKER}, read from a link outside the root")
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", type=Path, help="a tree made by bench.generate")
    parser.add_argument("--size", help="RxT: generate R repositories x T tags (seed 1)")
    parser.add_argument("--trees-dir", type=Path, default=BENCH / "trees")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.tree is None:
        if not args.size:
            parser.error("give a TREE or --size")
        repositories, tags = (int(x) for x in args.size.split("x"))
        args.tree = args.trees_dir / args.size
        if not (args.tree / "docker").exists():
            print(f"generating {args.tree}", file=sys.stderr)
            generate(args.tree, Params(repositories=repositories, tags=tags, seed=1), jobs=2)
    tree: Path = args.tree.resolve()
    work = Path(tempfile.mkdtemp(prefix="hostile-", dir=tree.parent))
    try:
        hostile, outside = work / "tree", work / "outside"
        outside.mkdir()
        started = time.monotonic()
        subprocess.run(["cp", "-al", str(tree), str(hostile)], check=True)
        made = make_hostile(hostile, outside)
        print(
            f"copied and made {len(made)} repositories hostile "
            f"in {time.monotonic() - started:.1f} s"
        )
        (work / "clean").mkdir()
        (work / "hostile").mkdir()
        clean_config = write_config(work / "clean", tree)
        hostile_config = write_config(work / "hostile", hostile)
        plan(clean_config)  # warm-up of each, untimed
        plan(hostile_config)
        clean_times, hostile_times = [], []
        clean_doc: dict[str, Any] = {}
        hostile_doc: dict[str, Any] = {}
        for _ in range(args.runs):
            seconds, clean_doc = plan(clean_config)
            clean_times.append(seconds)
            seconds, hostile_doc = plan(hostile_config)
            hostile_times.append(seconds)
        same = entries(clean_doc, set(made)) == entries(hostile_doc, set(made))
        wrong = refusal_check(hostile_doc, made)
        clean, bad = statistics.median(clean_times), statistics.median(hostile_times)
        print(
            f"tree: {tree} ({clean_doc['summary']['tags']} tags, "
            f"{clean_doc['summary']['repositories']} repositories)"
        )
        kinds = ", ".join(sorted(m["kind"] for m in made.values()))
        print(f"hostile repositories: {len(made)} ({kinds})")
        print(f"plan, clean tree:   median {clean:.2f} s of {[round(t, 2) for t in clean_times]}")
        print(f"plan, hostile tree: median {bad:.2f} s of {[round(t, 2) for t in hostile_times]}")
        print(f"hostile / clean: {bad / clean:.3f}x")
        print(f"other repositories' plan entries identical: {'yes' if same else 'NO'}")
        print(
            f"hostile repositories refused with a problem naming the path: "
            f"{'yes' if not wrong else 'NO: ' + '; '.join(wrong)}"
        )
        print(f"gc_blocked on the hostile tree: {hostile_doc['summary']['gc_blocked']}")
        return 0 if same and not wrong else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
