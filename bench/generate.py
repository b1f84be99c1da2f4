"""Generate a valid registry 2.8 storage tree of any size, for benchmarks and tests.

The tree is what a registry would hold after the pushes it describes: the real registry serves
every tag of it, and its ``garbage-collect --dry-run`` finds nothing eligible (every blob is
reached from a revision link). Content is real: every blob's ``data`` hashes to its digest.

    python -m bench.generate /tmp/tree --repositories 500 --tags 100

What a tree holds (every share is drawn per tag or repository from ``--seed``):

- repositories named up to ``--depth`` segments deep (``org-3/team-1/app-00042``), and a
  ``--nested-share`` of them nested inside another repository's directory (``.../app-00042/sub``);
- ``--tags`` tags per repository; a ``--alias-share`` of them are aliases (``latest``,
  ``stable-N``) on the digest of an earlier tag; the others each point to a new image, a
  ``--index-share`` of them a multi-arch index (OCI index / Docker manifest list) over
  ``--platforms`` child images, whose revision links are in the repository too;
- images of ``--layers`` own layers (payloads of ``--min-size``..``--max-size`` random bytes,
  each wrapped in an uncompressed tar unless ``--raw-layers``) on one of ``--bases`` base images
  of ``--base-layers`` layers, shared across repositories; OCI media types, or Docker schema2 in
  a ``--docker-share`` of the repositories;
- tag history: a ``--history-share`` of the tags were pushed before with other content; that
  earlier image is still linked as an (untagged) revision and listed in the tag's ``index/``;
- push times spread over ``--months`` before ``--end``: the mtimes of ``current/link``, of the
  ``index/`` and revision links and of blob ``data`` are the push (upload) times.

Digests depend only on the parameters (``--end`` included: it sets the configs' ``created``).
Repositories are written by ``--jobs`` processes. Every file goes through a :class:`Sink`
(path, bytes, push time): :class:`FileSink` here; ``bench.generate_s3`` PUTs the same files
into a bucket. A summary (counts of repositories, tags,
manifests, blobs, files and directories) is printed as JSON and kept in
``<root>/retentiond-bench.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Protocol

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x")
SUMMARY_FILE = "retentiond-bench.json"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


@dataclass(frozen=True)
class Params:
    repositories: int = 500
    tags: int = 100
    depth: int = 3
    nested_share: float = 0.05
    layers: int = 1
    base_layers: int = 2
    bases: int = 10
    min_size: int = 64
    max_size: int = 2048
    raw_layers: bool = False
    alias_share: float = 0.1
    index_share: float = 0.1
    platforms: int = 2
    history_share: float = 0.15
    docker_share: float = 0.5
    months: float = 6.0
    end: str = "2026-01-01T00:00:00Z"
    seed: int = 1

    @property
    def end_time(self) -> float:
        return datetime.fromisoformat(self.end.replace("Z", "+00:00")).timestamp()


@dataclass
class Stats:
    repositories: int = 0
    tags: int = 0
    alias_tags: int = 0
    indexes: int = 0
    revisions: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    files: int = 0
    file_bytes: int = 0
    directories: int = 0

    def add(self, other: Stats) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(name: str, payload: bytes, mtime: int) -> bytes:
    """An uncompressed ustar archive holding one file: a layer any client can unpack."""
    header = bytearray(512)
    header[0 : len(name)] = name.encode()
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % len(payload)
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8
    header[156] = ord("0")
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + payload + b"\0" * ((-len(payload)) % 512) + b"\0" * 1024


def iso(when: float) -> str:
    return datetime.fromtimestamp(int(when), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Sink(Protocol):
    """Where a generated tree goes: the writer hands it every file (path, bytes, push time) and
    directory; :class:`FileSink` makes them on a filesystem, ``bench.generate_s3`` PUTs the
    files as objects (and has no directories, nor mtimes)."""

    def mkdir(self, path: str) -> None: ...

    def file(self, path: str, data: bytes, mtime: float | None) -> None: ...

    def touch(self, path: str, mtime: float) -> None:
        """Set a directory's mtime (after what is written into it)."""

    def flush(self) -> None:
        """Return once everything handed over is stored (raise if something was not)."""

    def close(self) -> None:
        """Free what the sink holds (threads, connections); nothing is handed over after."""


class FileSink:
    """Files and directories on a filesystem, with their push times as mtimes."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def file(self, path: str, data: bytes, mtime: float | None) -> None:
        fd = os.open(path, _CREATE, 0o644)
        try:
            os.write(fd, data)
            if mtime is not None:
                ns = int(mtime * 1e9)
                os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def touch(self, path: str, mtime: float) -> None:
        os.utime(path, (mtime, mtime))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class SinkFactory(Protocol):
    """Makes a :class:`Sink` in each process that writes (picklable: sent to the workers)."""

    def __call__(self) -> Sink: ...


def file_sink() -> Sink:
    return FileSink()


class Writer:
    """Hands files and directories under ``v2`` (a directory, or a key prefix) to a sink,
    counting them."""

    def __init__(self, v2: Path | str, sink: Sink | None = None) -> None:
        self.v2 = str(v2)
        self.sink = sink if sink is not None else FileSink()
        self.stats = Stats()
        self._dirs: set[str] = set()

    def forget_directories(self) -> None:
        self._dirs.clear()

    def mkdir(self, path: str) -> None:
        if path in self._dirs:
            return
        self.sink.mkdir(path)
        self._dirs.add(path)
        self.stats.directories += 1

    def mkdirs(self, base: str, *parts: str) -> str:
        """Create ``base/part0/part1/...`` where ``base`` exists; returns the full path."""
        path = base
        for part in parts:
            path = f"{path}/{part}"
            self.mkdir(path)
        return path

    def file(self, path: str, data: bytes, mtime: float | None) -> None:
        self.sink.file(path, data, mtime)
        self.stats.files += 1
        self.stats.file_bytes += len(data)

    def blob(self, data: bytes, mtime: float) -> str:
        digest = sha256(data)
        hexpart = digest[7:]
        path = f"{self.v2}/blobs/sha256/{hexpart[:2]}/{hexpart}"
        self.mkdir(path)
        self.file(f"{path}/data", data, mtime)
        self.stats.blobs += 1
        self.stats.blob_bytes += len(data)
        return digest

    def link(self, directory: str, digest: str, mtime: float | None) -> None:
        """``directory/sha256/<hex>/link`` holding ``sha256:<hex>`` (no newline)."""
        path = self.mkdirs(directory, "sha256", digest[7:])
        self.file(f"{path}/link", digest.encode(), mtime)


@dataclass
class Image:
    digest: str
    size: int
    media_type: str


Blob = tuple[str, int]  # digest, size


class RepoBuilder:
    """One repository's pushes, written as the registry would have stored them."""

    def __init__(
        self, params: Params, writer: Writer, index: int, name: str, bases: list[list[Blob]]
    ) -> None:
        self.p = params
        self.w = writer
        self.rng = random.Random(f"{params.seed}:repo:{index}")
        self.name = name
        self.index = index
        self.docker = self.rng.random() < params.docker_share
        self.base = bases[self.rng.randrange(len(bases))] if bases else []
        self.path = f"{writer.v2}/repositories/{name}"
        self.layers: dict[str, float] = {}  # blob linked under _layers -> first push
        self.revisions: dict[str, float] = {}  # manifest -> first push
        self.serial = 0

    def _blob(self, data: bytes, when: float) -> Blob:
        digest = self.w.blob(data, when)
        return digest, len(data)

    def _layer(self, when: float) -> Blob:
        self.serial += 1
        payload = self.rng.randbytes(self.rng.randint(self.p.min_size, self.p.max_size))
        if not self.p.raw_layers:
            payload = tar_layer(f"r{self.index}-{self.serial}.bin", payload, int(when))
        return self._blob(payload, when)

    def _manifest(self, doc: dict[str, Any], when: float) -> Image:
        if self.docker:  # docker pretty-prints its manifests with 3 spaces
            data = json.dumps(doc, indent=3).encode()
        else:
            data = json.dumps(doc, separators=(",", ":")).encode()
        digest, size = self._blob(data, when)
        self.revisions.setdefault(digest, when)
        return Image(digest, size, doc["mediaType"])

    def image(self, when: float, platform: str = "linux/amd64") -> Image:
        layers = [*self.base, *(self._layer(when) for _ in range(self.p.layers))]
        config: dict[str, Any] = {
            **_platform(platform),
            "created": iso(when),
            "config": {"Labels": {"org.retentiond.bench": f"{self.name}#{self.serial}"}},
            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
        }
        config_blob = self._blob(json.dumps(config, separators=(",", ":")).encode(), when)
        for digest, _ in (config_blob, *layers):
            self.layers.setdefault(digest, when)
        layer_type = DOCKER_LAYER if self.docker else OCI_LAYER
        return self._manifest(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST if self.docker else OCI_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG if self.docker else OCI_CONFIG,
                    "size": config_blob[1],
                    "digest": config_blob[0],
                },
                "layers": [{"mediaType": layer_type, "size": s, "digest": d} for d, s in layers],
            },
            when,
        )

    def index_image(self, when: float) -> Image:
        platforms = PLATFORMS[: self.p.platforms]
        children = [(self.image(when, p), p) for p in platforms]
        return self._manifest(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_LIST if self.docker else OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": c.media_type,
                        "size": c.size,
                        "digest": c.digest,
                        "platform": _platform(p),
                    }
                    for c, p in children
                ],
            },
            when,
        )

    def new_image(self, when: float) -> Image:
        if self.rng.random() < self.p.index_share:
            self.w.stats.indexes += 1
            return self.index_image(when)
        return self.image(when)

    def tag_names(self) -> Iterator[str]:
        style = self.rng.choice(("ci", "release", "branch"))
        n = 0
        while True:
            n += 1
            if style == "ci":
                yield f"build-{n}"
            elif style == "release":
                yield f"{n // 100}.{n // 10 % 10}.{n % 10}"
            else:
                yield f"main-{hashlib.sha1(f'{self.name}{n}'.encode()).hexdigest()[:8]}"

    def build(self) -> None:
        """The repository directory exists already; write its pushes into it."""
        p, rng, w = self.p, self.rng, self.w
        manifests = w.mkdirs(self.path, "_manifests")
        tags_dir = w.mkdirs(manifests, "tags")
        end, span = p.end_time, p.months * 30 * 86400
        times = sorted(end - rng.random() * span for _ in range(p.tags))
        names = self.tag_names()
        pushed: list[Image] = []
        aliases = 0
        for when in times:
            history: list[tuple[str, float]] = []  # the tag's pushes, oldest first
            if pushed and rng.random() < p.alias_share:
                image = pushed[-1 - rng.randrange(min(len(pushed), 5))]
                name = "latest" if aliases == 0 else f"stable-{aliases}"
                aliases += 1
                w.stats.alias_tags += 1
            else:
                name = next(names)
                if rng.random() < p.history_share:
                    before = when - rng.random() * span / max(p.tags, 1)
                    history.append((self.new_image(before).digest, before))
                image = self.new_image(when)
                pushed.append(image)
            history.append((image.digest, when))
            tag = w.mkdirs(tags_dir, name)
            w.file(f"{w.mkdirs(tag, 'current')}/link", image.digest.encode(), when)
            index = w.mkdirs(tag, "index")
            for digest, at in history:
                w.link(index, digest, at)
            w.sink.touch(tag, history[0][1])
            w.stats.tags += 1
        revisions = w.mkdirs(manifests, "revisions")
        for digest, when in self.revisions.items():
            w.link(revisions, digest, when)
        w.stats.revisions += len(self.revisions)
        layers = w.mkdirs(self.path, "_layers")
        for digest, when in self.layers.items():
            w.link(layers, digest, when)
        newest = max(times, default=end)
        w.sink.touch(f"{layers}/sha256", newest)
        w.stats.repositories += 1


def _platform(platform: str) -> dict[str, str]:
    os_name, arch, *variant = platform.split("/")
    out = {"architecture": arch, "os": os_name}
    if variant:
        out["variant"] = variant[0]
    return out


def repository_names(params: Params) -> list[str]:
    """Unique names, ``depth`` segments at most; a share nested in an earlier repository."""
    rng = random.Random(f"{params.seed}:names")
    orgs = max(1, round(params.repositories ** (1 / 3)))
    names: list[str] = []
    for i in range(params.repositories):
        if names and rng.random() < params.nested_share:
            parent = names[rng.randrange(len(names))]
            if parent.count("/") + 1 < max(params.depth, 2):
                names.append(f"{parent}/sub-{i:05d}")
                continue
        levels = 1 + rng.randrange(max(params.depth, 1))
        parts = [f"org-{rng.randrange(orgs)}", f"team-{rng.randrange(orgs)}"][: levels - 1]
        names.append("/".join([*parts, f"app-{i:05d}"]))
    return names


def base_images(params: Params, writer: Writer) -> list[list[Blob]]:
    """The layers of each base image, shared across repositories; written once."""
    rng = random.Random(f"{params.seed}:bases")
    when = params.end_time - params.months * 30 * 86400
    bases = []
    for b in range(params.bases):
        layers = []
        for k in range(params.base_layers):
            payload = rng.randbytes(rng.randint(params.min_size, params.max_size))
            if not params.raw_layers:
                payload = tar_layer(f"base-{b}-{k}.bin", payload, int(when))
            layers.append((writer.blob(payload, when), len(payload)))
        bases.append(layers)
    return bases


_WORKER: dict[str, Any] = {}


def _init_worker(
    params: Params, v2: str, names: list[str], bases: list[list[Blob]], sinks: SinkFactory
) -> None:
    _WORKER.update(params=params, v2=v2, names=names, bases=bases, sink=sinks())


def _build_chunk(indices: list[int]) -> Stats:
    sink: Sink = _WORKER["sink"]
    writer = Writer(_WORKER["v2"], sink)
    for i in indices:
        RepoBuilder(_WORKER["params"], writer, i, _WORKER["names"][i], _WORKER["bases"]).build()
        writer.forget_directories()
    sink.flush()  # the counts returned are of what is stored
    return writer.stats


def build(
    v2: str,
    params: Params,
    sinks: SinkFactory = file_sink,
    jobs: int = 2,
    progress: bool = False,
) -> Stats:
    """Hand the whole tree below ``v2`` (``<root>/docker/registry/v2``, a directory that
    exists or a key prefix) to sinks made by ``sinks``: one in this process (the blob store's
    prefix directories, the base images, the repositories' directories), then one in each of
    ``jobs`` worker processes (the repositories, 8 at a time). Returns the counts."""
    started = time.monotonic()
    writer = Writer(v2, sinks())
    blobs = writer.mkdirs(v2, "blobs", "sha256")
    for prefix in range(256):
        writer.mkdir(f"{blobs}/{prefix:02x}")
    repositories = writer.mkdirs(v2, "repositories")
    bases = base_images(params, writer)
    names = repository_names(params)
    # every repository directory (and its parents) first: the workers write inside them
    for name in names:
        writer.mkdirs(repositories, *name.split("/"))
    # stored, and the sink's threads (if any) ended, before the workers are forked
    writer.sink.flush()
    writer.sink.close()
    total = writer.stats
    chunks = [list(range(k, min(k + 8, len(names)))) for k in range(0, len(names), 8)]
    results: Iterator[Stats]
    initargs = (params, v2, names, bases, sinks)
    if jobs > 1:
        pool = Pool(jobs, initializer=_init_worker, initargs=initargs)
        results = pool.imap_unordered(_build_chunk, chunks)
    else:
        pool = None
        _init_worker(*initargs)
        results = map(_build_chunk, chunks)
    try:
        for stats in results:
            total.add(stats)
            if progress:
                print(
                    f"\r{total.repositories}/{len(names)} repositories, "
                    f"{time.monotonic() - started:.0f}s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        else:
            _WORKER.pop("sink").close()
    if progress:
        print(file=sys.stderr)
    return total


def summary_of(params: Params, total: Stats, seconds: float, jobs: int) -> dict[str, Any]:
    """The summary printed and kept in :data:`SUMMARY_FILE`."""
    return {
        "params": asdict(params),
        "repositories": total.repositories,
        "tags": total.tags,
        "alias_tags": total.alias_tags,
        "indexes": total.indexes,
        "manifests": total.revisions,
        "blobs": total.blobs,
        "blob_bytes": total.blob_bytes,
        "files": total.files,
        "directories": total.directories,
        "seconds": round(seconds, 1),
        "jobs": jobs,
    }


def generate(root: Path, params: Params, jobs: int = 2, progress: bool = False) -> dict[str, Any]:
    """Write the tree under ``root`` (which must not hold one yet); returns the summary."""
    started = time.monotonic()
    v2 = root / "docker" / "registry" / "v2"
    if v2.exists():
        raise SystemExit(f"{v2} exists already; generate into an empty directory")
    v2.mkdir(parents=True)
    total = build(str(v2), params, file_sink, jobs, progress)
    summary = summary_of(params, total, time.monotonic() - started, jobs)
    (root / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_tree_options(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`Params` field (``--repositories``, ``--min-size``...)."""
    for name, value in asdict(Params()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value, metavar=name.upper())


def pop_params(args: dict[str, Any]) -> Params:
    """The :class:`Params` of parsed options (taken out of ``args``)."""
    return Params(**{name: args.pop(name) for name in Params.__dataclass_fields__})


def parse_args(argv: list[str] | None = None) -> tuple[Path, Params, int, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the registry rootdirectory to create")
    add_tree_options(parser)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--progress", action="store_true", help="a progress line on stderr")
    args = vars(parser.parse_args(argv))
    params = pop_params(args)
    return args["root"], params, args["jobs"], args["progress"]


def main(argv: list[str] | None = None) -> int:
    root, params, jobs, progress = parse_args(argv)
    summary = generate(root, params, jobs, progress)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
