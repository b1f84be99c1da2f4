"""Generated registry storage trees for the property tests: a spec, its writer, its own model.

A :class:`TreeSpec` describes what was pushed: a pool of layers shared by every repository, a
list of manifest nodes (Docker v2 / OCI images, Docker manifest lists / OCI indexes whose
children are earlier nodes, so indexes of indexes too, OCI artifacts with a ``subject``), and
repositories with tags (several on one digest: aliases), untagged revisions, push times, and
some corruption (an empty or garbage link, a tag without ``current/link``, a link to a blob
that does not exist, an unparsable manifest, a missing layer, a repository without
``_layers``). :func:`write_tree` writes it the way registry 2.8 stores pushes (``link`` files
holding the digest, mtimes as push times).

The assertions of the property tests are computed from the spec with the small functions here
(:meth:`Built.closure`, :meth:`Built.references`), never with retentiond's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import strategies as st

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

#: registry-valid repository names; ``ci/app/sub`` is nested inside ``ci/app``'s directory
REPOSITORY_NAMES = ("app", "ci/app", "ci/app/sub", "ci/base", "lib/x", "team-1/svc.a", "a__b")
#: names the registry never writes, but a tree may hold (its GC cannot parse them)
ODD_REPOSITORY_NAMES = ("UPPER", "sp ace", "new\nline", "ci/x\ty", "é/ü")
TAG_NAMES = (
    "latest", "main", "stable", "v1.0.0", "v1.2.3", "v2.0.0", "v2.0.0-rc.1", "1.0",
    "pr-1", "pr-2", "pr-3", "pr-17", "build-10", "build-9", "nightly",
)  # fmt: skip
TAG_NAME = st.one_of(
    st.sampled_from(TAG_NAMES),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,12}", fullmatch=True),
    st.sampled_from(TAG_NAMES),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,12}", fullmatch=True),
    # what the registry never writes, but a file name may be: spaces, newlines, any Unicode
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"), max_size=8
    ).filter(lambda name: name not in ("", ".", "..")),
)

#: what can go wrong in one repository (see :func:`_write_corruption`), and whether the README
#: says the repository is then refused ("a repository where anything could not be read or
#: trusted ... is refused: nothing in it is deleted")
CORRUPTIONS = {
    "empty_tag_link": True,
    "garbage_tag_link": True,
    "tag_without_current": True,
    "dangling_tag": True,  # a tag whose manifest blob is missing
    "dangling_revision": True,  # a revision link whose blob is missing
    "wrong_revision_link": True,  # holds another digest than its directory names
    "unparsable_manifest": True,
    "huge_size": True,  # a descriptor size of 2**63: the GC cannot read it
    "symlinked_current": True,  # a tag's current/ is a symlink to outside the root
    "symlinked_tags": True,  # _manifests/tags is a symlink to outside the root
    "symlinked_revisions": True,  # _manifests/revisions/sha256 is a symlink to outside
    "deep_annotation": False,  # a manifest nested 2,000 deep in a field the GC ignores
    "no_layers_dir": False,  # the GC skips the repository: reported, gc_blocked
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class Image:
    kind: str  # docker | oci | oci-bare (OCI without mediaType)
    layers: tuple[int, ...]  # positions in the layer pool
    created_hours_ago: int
    subject: int | None = None  # an earlier node: this image is an artifact about it


@dataclass(frozen=True)
class Index:
    kind: str  # docker | oci
    children: tuple[int, ...]  # earlier nodes


Node = Image | Index


@dataclass(frozen=True)
class TagSpec:
    name: str
    node: int
    hours_ago: int
    previous: int | None = None  # the node this tag pointed to before (still linked)


@dataclass(frozen=True)
class RepoSpec:
    name: str
    tags: tuple[TagSpec, ...]
    untagged: tuple[int, ...]  # nodes pushed by digest (untagged revisions)
    revision_hours_ago: dict[int, int]  # node -> the push time of its revision link
    corruption: tuple[tuple[str, int], ...] = ()  # (kind, which tag or node it hits)
    referrer_tag: int | None = None  # a tag's position: add ``sha256-<its hex>.sig``


@dataclass(frozen=True)
class TreeSpec:
    layer_count: int
    missing_layers: frozenset[int]
    nodes: tuple[Node, ...]
    repositories: tuple[RepoSpec, ...]
    orphan_blob: bool = False  # a blob nothing references (already garbage)
    empty_blob_dir: bool = False  # a blob directory without ``data``


# ------------------------------------------------------------------ strategies


@st.composite
def nodes(draw: st.DrawFn, layer_count: int) -> tuple[Node, ...]:
    count = draw(st.integers(1, 8))
    out: list[Node] = []
    for position in range(count):
        images = [n for n, node in enumerate(out) if isinstance(node, Image)]
        choice = draw(st.sampled_from(("image", "image", "index", "artifact")))
        if choice == "index" and out:
            children = draw(st.lists(st.integers(0, position - 1), min_size=1, max_size=3))
            out.append(Index(draw(st.sampled_from(("docker", "oci"))), tuple(children)))
        elif choice == "artifact" and images:
            subject = draw(st.integers(0, position - 1))
            layer = draw(st.integers(0, layer_count - 1))
            out.append(Image("oci", (layer,), draw(st.integers(0, 2000)), subject))
        else:
            layers = draw(st.lists(st.integers(0, layer_count - 1), min_size=0, max_size=3))
            kind = draw(st.sampled_from(("docker", "oci", "oci-bare")))
            out.append(Image(kind, tuple(layers), draw(st.integers(0, 2000))))
    return tuple(out)


HOURS_AGO = st.one_of(st.integers(0, 3), st.integers(0, 24 * 60))


@st.composite
def repositories(draw: st.DrawFn, node_count: int) -> RepoSpec:
    odd = draw(st.integers(0, 9)) == 0
    name = draw(st.sampled_from(ODD_REPOSITORY_NAMES if odd else REPOSITORY_NAMES))
    node = st.integers(0, node_count - 1)
    names = draw(st.lists(TAG_NAME, max_size=12, unique=True))
    tags: list[TagSpec] = []
    for tag_name in names:
        target = draw(node)
        alias = bool(tags) and draw(st.booleans())  # an alias of an earlier tag's digest
        if alias:
            target = tags[draw(st.integers(0, len(tags) - 1))].node
        previous = draw(st.one_of(st.none(), node))
        tags.append(TagSpec(tag_name, target, draw(HOURS_AGO), previous))
    untagged = tuple(draw(st.lists(node, max_size=3)))
    pushed = {n for t in tags for n in (t.node, t.previous) if n is not None}
    linked = sorted(pushed | set(untagged))
    times = {n: draw(HOURS_AGO) for n in linked}
    corruption = tuple(
        draw(
            st.lists(
                st.tuples(st.sampled_from(sorted(CORRUPTIONS)), st.integers(0, 50)), max_size=2
            )
        )
        if draw(st.integers(0, 5)) == 0
        else ()
    )
    referrer = draw(st.one_of(st.none(), st.integers(0, 50))) if tags else None
    return RepoSpec(name, tuple(tags), untagged, times, corruption, referrer)


@st.composite
def trees(draw: st.DrawFn) -> TreeSpec:
    layer_count = draw(st.integers(1, 8))
    pool = draw(nodes(layer_count))
    missing = draw(st.frozensets(st.integers(0, layer_count - 1), max_size=1))
    if draw(st.integers(0, 3)):
        missing = frozenset()
    repos = draw(
        st.lists(repositories(len(pool)), min_size=1, max_size=4, unique_by=lambda r: r.name)
    )
    return TreeSpec(
        layer_count,
        missing,
        pool,
        tuple(repos),
        orphan_blob=draw(st.booleans()),
        empty_blob_dir=draw(st.integers(0, 9)) == 0,
    )


# ------------------------------------------------------------------ the content


def layer_data(position: int) -> bytes:
    return f"layer {position}\n".encode() * (position + 1)


@dataclass
class Built:
    """The blobs of a spec, and what each manifest references (the test's own model)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)  # node -> digest
    media_types: list[str] = field(default_factory=list)  # node -> media type
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # index -> children
    blob_refs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # image -> config, layers
    subject: dict[str, str] = field(default_factory=dict)  # artifact -> subject
    missing: set[str] = field(default_factory=set)  # layer blobs not written

    def references(self, digest: str) -> set[str]:
        """What registry 2.8's GC marks for one linked manifest: itself, its config and layers
        or its children (not recursed into)."""
        return {digest, *self.children.get(digest, ()), *self.blob_refs.get(digest, ())}

    def closure(self, roots: Iterable[str], linked: Iterable[str]) -> set[str]:
        """Every manifest reached from ``roots`` through index children, recursively, and the
        manifests of ``linked`` whose subject is reached (signatures stay with their image)."""
        about: dict[str, list[str]] = {}
        for digest in linked:
            if digest in self.subject:
                about.setdefault(self.subject[digest], []).append(digest)
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            digest = stack.pop()
            if digest not in seen:
                seen.add(digest)
                stack.extend(self.children.get(digest, ()))
                stack.extend(about.get(digest, ()))
        return seen


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "size": len(data), "digest": sha256(data)}


def build(spec: TreeSpec) -> Built:
    built = Built()
    layers = [layer_data(n) for n in range(spec.layer_count)]
    for position, data in enumerate(layers):
        digest = sha256(data)
        if position in spec.missing_layers:
            built.missing.add(digest)
        else:
            built.blobs[digest] = data
    for position, node in enumerate(spec.nodes):
        if isinstance(node, Image):
            media_type, doc = _image(built, node, position, layers)
        else:
            media_type = DOCKER_LIST if node.kind == "docker" else OCI_INDEX
            doc = {
                "schemaVersion": 2,
                "mediaType": media_type,
                "manifests": [
                    {
                        "mediaType": built.media_types[child],
                        "size": len(built.blobs[built.digests[child]]),
                        "digest": built.digests[child],
                        "platform": {"architecture": f"arch{n}", "os": "linux"},
                    }
                    for n, child in enumerate(node.children)
                ],
            }
        data = json.dumps(doc, indent=3).encode()
        digest = sha256(data)
        built.blobs[digest] = data
        built.digests.append(digest)
        built.media_types.append(media_type)
        if isinstance(node, Index):
            built.children[digest] = tuple(built.digests[c] for c in node.children)
        else:
            config = doc["config"]
            assert isinstance(config, dict)
            built.blob_refs[digest] = (
                str(config["digest"]),
                *(sha256(layers[n]) for n in node.layers),
            )
            if node.subject is not None:
                built.subject[digest] = built.digests[node.subject]
    return built


def _image(
    built: Built, node: Image, position: int, layers: list[bytes]
) -> tuple[str, dict[str, object]]:
    docker = node.kind == "docker"
    created = NOW - timedelta(hours=node.created_hours_ago)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": iso(created),
            "config": {"Labels": {"node": str(position)}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layers[n]) for n in node.layers]},
        }
    ).encode()
    built.blobs[sha256(config)] = config
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    doc: dict[str, object] = {"schemaVersion": 2}
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    if node.kind != "oci-bare":
        doc["mediaType"] = media_type
    doc["config"] = _descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config)
    doc["layers"] = [_descriptor(layer_type, layers[n]) for n in node.layers]
    if node.subject is not None:
        doc["artifactType"] = "application/vnd.example.signature"
        subject = built.digests[node.subject]
        doc["subject"] = {
            "mediaType": built.media_types[node.subject],
            "size": len(built.blobs[subject]),
            "digest": subject,
        }
    return media_type, doc


# ------------------------------------------------------------------ the model of one repository


@dataclass
class RepoModel:
    """What was written for one repository, as the test sees it."""

    name: str
    tags: dict[str, str]  # every tag name -> the digest it was meant to hold (even if corrupt)
    revisions: set[str]  # revision links written readable
    corrupt_revisions: set[str] = field(default_factory=set)
    has_layers: bool = True
    untrusted: bool = False  # something in it must make the plan refuse it
    revisions_hidden: bool = False  # its revision links are behind a symlink out of the root
    pushed: dict[str, datetime] = field(default_factory=dict)  # revisions' link mtimes
    newest: datetime = NOW  # the latest push: the mtime of the other links

    def revision_time(self, digest: str) -> datetime:
        return self.pushed.get(digest, self.newest)


def repo_model(spec: RepoSpec, built: Built) -> RepoModel:
    """The tags and revision links :func:`write_tree` writes for ``spec`` (before corruption
    is applied, except the revisions and tags corruption adds)."""
    tags = {t.name: built.digests[t.node] for t in spec.tags}
    if spec.referrer_tag is not None and spec.tags:
        # cosign's fallback tag: ``sha256-<hex of the image>.sig`` on the signature manifest
        subject = built.digests[spec.tags[spec.referrer_tag % len(spec.tags)].node]
        about = [d for d, s in built.subject.items() if s == subject]
        tags[f"sha256-{subject[7:]}.sig"] = min(about) if about else subject
    roots = [built.digests[n] for n in spec.revision_hours_ago]
    revisions = _children_closure(built, [*roots, *tags.values()])
    pushed = {built.digests[n]: _ago(h) for n, h in spec.revision_hours_ago.items()}
    newest = max(pushed.values(), default=_ago(10000))
    model = RepoModel(spec.name, tags, revisions, pushed=pushed, newest=newest)
    for kind, which in spec.corruption:
        _model_corruption(model, kind, which, built)
    return model


def _children_closure(built: Built, roots: Iterable[str]) -> set[str]:
    """A pushed index's children are pushed to the repository first: linked there too."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        digest = stack.pop()
        if digest not in seen:
            seen.add(digest)
            stack.extend(built.children.get(digest, ()))
    return seen


BOGUS = "sha256:" + "e" * 64  # a digest with no blob
GARBAGE = b'{"schemaVersion": 2, "layers": [ oops'
HUGE_SIZE = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": 2**63, "digest": "sha256:" + "f" * 64},
        "layers": [],
    }
).encode()
DEEP_CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}'
DEEP_ANNOTATION = (
    b'{"schemaVersion": 2, "mediaType": "'
    + OCI_MANIFEST.encode()
    + b'", "config": '
    + json.dumps(_descriptor(OCI_CONFIG, DEEP_CONFIG)).encode()
    + b', "layers": [], "nested": '
    + b"[" * 2000
    + b"]" * 2000
    + b"}"
)


def _corrupt_tag(model: RepoModel, which: int) -> str:
    names = sorted(model.tags)
    if not names:
        model.tags["broken"] = BOGUS
        return "broken"
    return names[which % len(names)]


def _model_corruption(model: RepoModel, kind: str, which: int, built: Built) -> None:
    model.untrusted = model.untrusted or CORRUPTIONS[kind]
    model.revisions_hidden = model.revisions_hidden or kind == "symlinked_revisions"
    if kind in ("empty_tag_link", "garbage_tag_link", "tag_without_current"):
        _corrupt_tag(model, which)  # the tag stays in the model with the digest it had
    elif kind == "dangling_tag":
        model.tags[f"dangling{which}"] = BOGUS
    elif kind == "dangling_revision":
        model.corrupt_revisions.add(BOGUS)
    elif kind == "wrong_revision_link":
        model.corrupt_revisions.add("sha256:" + "d" * 64)
    elif kind == "unparsable_manifest":
        garbage = sha256(GARBAGE)
        built.blobs[garbage] = GARBAGE
        model.corrupt_revisions.add(garbage)
        model.tags[f"garbage{which}"] = garbage
    elif kind == "no_layers_dir":
        model.has_layers = False
    elif kind in ("huge_size", "deep_annotation"):
        data = HUGE_SIZE if kind == "huge_size" else DEEP_ANNOTATION
        digest = sha256(data)
        built.blobs[digest] = data
        if kind == "deep_annotation":
            built.blob_refs[digest] = (sha256(DEEP_CONFIG),)
            built.blobs[sha256(DEEP_CONFIG)] = DEEP_CONFIG
        model.revisions.add(digest)
        model.tags[f"{kind.replace('_', '-')}{which}"] = digest


# ------------------------------------------------------------------ writing


def _write(path: Path, data: bytes, when: datetime | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if when is not None:
        ts = when.timestamp()
        os.utime(path, (ts, ts))


def _link(directory: Path, digest: str, when: datetime) -> None:
    _write(directory / "sha256" / digest[7:] / "link", digest.encode(), when)


def _ago(hours: int) -> datetime:
    return NOW - timedelta(hours=hours)


def write_tree(root: Path, spec: TreeSpec, outside: Path) -> tuple[Built, list[RepoModel]]:
    """Write ``spec`` under ``root`` (the registry's rootdirectory); returns the model.
    Symbolic links out of the root point into ``outside`` (a directory beside the root)."""
    built = build(spec)
    models = [repo_model(r, built) for r in spec.repositories]
    v2 = root / "docker" / "registry" / "v2"
    for digest, data in built.blobs.items():
        hexpart = digest[7:]
        _write(v2 / "blobs" / "sha256" / hexpart[:2] / hexpart / "data", data, _ago(5000))
    if spec.orphan_blob:
        orphan = b"nothing references this blob"
        hexpart = sha256(orphan)[7:]
        _write(v2 / "blobs" / "sha256" / hexpart[:2] / hexpart / "data", orphan, _ago(5000))
    if spec.empty_blob_dir:
        (v2 / "blobs" / "sha256" / "ab" / ("ab" * 32)).mkdir(parents=True, exist_ok=True)
    layer_dirs: list[tuple[Path, datetime]] = []
    for repo, model in zip(spec.repositories, models, strict=True):
        directory = v2 / "repositories" / repo.name
        layer_dirs.extend(_write_repository(directory, repo, model, built, outside))
    for directory, when in layer_dirs:  # last: writing nested repositories touches nothing here
        ts = when.timestamp()
        os.utime(directory, (ts, ts))
    return built, models


def _write_repository(
    path: Path, spec: RepoSpec, model: RepoModel, built: Built, outside: Path
) -> list[tuple[Path, datetime]]:
    manifests = path / "_manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    newest = model.newest
    for digest in sorted(model.revisions):
        _link(manifests / "revisions", digest, model.revision_time(digest))
    pushed = {t.name: _ago(t.hours_ago) for t in spec.tags}
    for name, digest in sorted(model.tags.items()):
        when = pushed.get(name, newest)
        tag = manifests / "tags" / name
        _write(tag / "current" / "link", digest.encode(), when)
        _link(tag / "index", digest, when)
    for t in spec.tags:
        if t.previous is not None:
            _link(manifests / "tags" / t.name / "index", built.digests[t.previous], _ago(9000))
    layers = {b for d in model.revisions for b in built.blob_refs.get(d, ())}
    for digest in sorted(layers):
        _link(path / "_layers", digest, newest)
    (path / "_layers" / "sha256").mkdir(parents=True, exist_ok=True)
    for kind, which in spec.corruption:
        _write_corruption(path, model, kind, which, newest, outside)
    if not model.has_layers:
        _rmtree(path / "_layers")
        return []
    return [(path / "_layers" / "sha256", newest)]


def _rmtree(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(path)


def _write_corruption(
    path: Path, model: RepoModel, kind: str, which: int, when: datetime, outside: Path
) -> None:
    manifests = path / "_manifests"
    if kind in ("empty_tag_link", "garbage_tag_link", "tag_without_current"):
        tag = _corrupt_tag(model, which)
        link = manifests / "tags" / tag / "current" / "link"
        if kind == "tag_without_current":
            if link.parent.is_dir() and not link.parent.is_symlink():  # not removed already
                link.unlink(missing_ok=True)
                link.parent.rmdir()
        else:
            _write(link, b"" if kind == "empty_tag_link" else b"not a digest\n", when)
    elif kind == "dangling_tag":
        _write(manifests / "tags" / f"dangling{which}" / "current" / "link", BOGUS.encode(), when)
    elif kind == "dangling_revision":
        _link(manifests / "revisions", BOGUS, when)
    elif kind == "wrong_revision_link":
        wrong = manifests / "revisions" / "sha256" / ("d" * 64) / "link"
        _write(wrong, ("sha256:" + "c" * 64).encode(), when)
    elif kind == "unparsable_manifest":
        garbage = sha256(GARBAGE)
        _link(manifests / "revisions", garbage, when)
        garbage_tag = manifests / "tags" / f"garbage{which}"
        _write(garbage_tag / "current" / "link", garbage.encode(), when)
    elif kind.startswith("symlinked_"):
        if kind == "symlinked_current":
            inside = manifests / "tags" / _corrupt_tag(model, which) / "current"
        elif kind == "symlinked_tags":
            inside = manifests / "tags"
        else:
            inside = manifests / "revisions" / "sha256"
        _move_outside(inside, outside / f"{model.name.replace('/', '_')}-{kind}-{which}")


def _move_outside(inside: Path, outside: Path) -> None:
    """Move ``inside`` (made when missing) to ``outside`` and leave a symlink to it: a tree
    whose content is right, but read through a link out of the storage root."""
    if inside.is_symlink() or outside.exists():
        return
    inside.mkdir(parents=True, exist_ok=True)
    outside.parent.mkdir(parents=True, exist_ok=True)
    os.rename(inside, outside)
    os.symlink(outside, inside)
