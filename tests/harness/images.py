"""Push real images into a RunningRegistry with real clients, and pull them back.

- ``push_docker_image``: ``docker build`` (legacy builder) + ``docker push`` (schema2 manifests,
  gzip layers), optionally on a shared base image.
- ``push_oci_image`` / ``push_oci_index``: an OCI image layout written by hand here
  (uncompressed deterministic tar layers: identical content gives identical digests, also
  across repositories and test runs), pushed with ``skopeo copy --preserve-digests``, so the
  registry stores exactly the bytes computed here (``make_oci_image`` / ``make_oci_index``
  give every digest in advance).
- ``tag_alias``: a second tag on the same digest (``skopeo copy`` registry to registry).
- ``pull_ok`` (skopeo, every blob downloaded and digest-checked) and ``docker_pull_ok``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.proc import CommandError, docker, skopeo
from tests.harness.registry import RunningRegistry
from tests.harness.tree import LIST_TYPES, read_manifest, set_pushed_at, tag_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

#: Fixed mtime for everything generated (2000-01-01T00:00:00Z).
FIXED_MTIME = 946684800
SEED_LABEL = "org.retentiond.test.seed"
#: Local images the harness builds are kept under these names as a build cache.
IMAGE_CACHE_REPO = "retentiond-test/img"
BASE_IMAGE_REPO = "retentiond-test/base"

_SKOPEO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# OCI images computed in memory


def layer_tar(content: bytes, name: str | None = None) -> bytes:
    """An uncompressed tar holding one file with ``content``: same content (and name), same
    bytes, same digest, whoever builds it and whenever."""
    name = name or f"layer-{hashlib.sha256(content).hexdigest()[:16]}.bin"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = FIXED_MTIME
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform must be os/arch[/variant]: {platform!r}")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


@dataclass(frozen=True)
class OciImage:
    """An OCI image manifest with its config and layers, all bytes known."""

    digest: str
    manifest: bytes
    config_digest: str
    layer_digests: tuple[str, ...]
    blobs: dict[str, bytes] = field(repr=False)
    platform: str = "linux/amd64"
    media_type: str = OCI_MANIFEST

    @property
    def blob_digests(self) -> set[str]:
        """Manifest + config + layers: every blob the registry stores for this image."""
        return {self.digest, self.config_digest, *self.layer_digests}

    def descriptor(self, with_platform: bool = False) -> dict[str, Any]:
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest),
        }
        if with_platform:
            desc["platform"] = _platform(self.platform)
        return desc


@dataclass(frozen=True)
class OciIndex:
    """An OCI image index with its child images."""

    digest: str
    manifest: bytes
    children: tuple[OciImage, ...]
    blobs: dict[str, bytes] = field(repr=False)
    media_type: str = OCI_INDEX

    @property
    def child_digests(self) -> list[str]:
        return [c.digest for c in self.children]

    @property
    def blob_digests(self) -> set[str]:
        out = {self.digest}
        for child in self.children:
            out |= child.blob_digests
        return out

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest)}


def make_oci_image(
    layers: Sequence[bytes],
    *,
    config_created: str | None = None,
    platform: str = "linux/amd64",
    seed: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
) -> OciImage:
    """Compute an OCI image: each item of ``layers`` becomes one uncompressed tar layer holding
    it as a file (see ``layer_tar``). ``config_created`` is the config's ``created`` field
    (RFC 3339, e.g. ``"2024-01-02T03:04:05Z"``; omitted when None). ``seed`` goes into a
    config label, so distinct seeds give distinct images even with the same layers.
    ``subject`` (a descriptor) and ``artifact_type`` make it an OCI artifact."""
    blobs: dict[str, bytes] = {}
    layer_descs = []
    diff_ids = []
    for content in layers:
        tar = layer_tar(content)
        d = sha256_digest(tar)
        blobs[d] = tar
        diff_ids.append(d)
        layer_descs.append({"mediaType": OCI_LAYER, "digest": d, "size": len(tar)})
    all_labels = dict(labels or {})
    if seed is not None:
        all_labels[SEED_LABEL] = seed
    config: dict[str, Any] = {
        **_platform(platform),
        "config": {"Labels": all_labels} if all_labels else {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if config_created is not None:
        config["created"] = config_created
    config_bytes = canonical_json(config)
    config_digest = sha256_digest(config_bytes)
    blobs[config_digest] = config_bytes
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": layer_descs,
    }
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    if subject is not None:
        manifest["subject"] = subject
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest_bytes = canonical_json(manifest)
    digest = sha256_digest(manifest_bytes)
    blobs[digest] = manifest_bytes
    return OciImage(
        digest=digest,
        manifest=manifest_bytes,
        config_digest=config_digest,
        layer_digests=tuple(diff_ids),
        blobs=blobs,
        platform=platform,
    )


def make_oci_index(
    children: Sequence[OciImage] | None = None,
    *,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    seed: str = "index",
    config_created: str | None = None,
) -> OciIndex:
    """An OCI index over ``children``, or over one generated image per platform (its single
    layer derived from ``seed`` and the platform)."""
    if children is None:
        children = [
            make_oci_image(
                [f"{seed} {p}\n".encode()],
                platform=p,
                seed=f"{seed}/{p}",
                config_created=config_created,
            )
            for p in platforms
        ]
    blobs: dict[str, bytes] = {}
    for child in children:
        blobs.update(child.blobs)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [c.descriptor(with_platform=True) for c in children],
    }
    index_bytes = canonical_json(index)
    digest = sha256_digest(index_bytes)
    blobs[digest] = index_bytes
    return OciIndex(digest=digest, manifest=index_bytes, children=tuple(children), blobs=blobs)


def write_oci_layout(directory: Path, tag: str, obj: OciImage | OciIndex) -> Path:
    """Write ``obj`` as an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``) with
    the reference name ``tag``."""
    directory = Path(directory)
    for d, data in obj.blobs.items():
        path = directory / "blobs" / "sha256" / d.split(":", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (directory / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    desc = obj.descriptor()
    desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (directory / "index.json").write_bytes(
        canonical_json({"schemaVersion": 2, "manifests": [desc]})
    )
    return directory


def push_oci(reg: RunningRegistry, repo: str, tag: str, obj: OciImage | OciIndex) -> str:
    """Push a computed image or index with skopeo, byte for byte; return its digest (checked
    against the tag's ``current/link``)."""
    with tempfile.TemporaryDirectory(prefix="retentiond-oci-") as tmp:
        write_oci_layout(Path(tmp), tag, obj)
        args = ["copy", "--quiet", "--preserve-digests", *_SKOPEO_TLS]
        if isinstance(obj, OciIndex):
            args.append("--all")
        skopeo(*args, f"oci:{tmp}:{tag}", f"docker://{reg.ref(repo, tag)}")
    stored = tag_digest(reg.root, repo, tag)
    if stored != obj.digest:
        raise AssertionError(f"{repo}:{tag} stored as {stored}, pushed {obj.digest}")
    return obj.digest


def push_oci_image(
    reg: RunningRegistry,
    repo: str,
    tag: str,
    *,
    layers: Sequence[bytes],
    config_created: str | None = None,
    platform: str = "linux/amd64",
    seed: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """Push an OCI image (see ``make_oci_image``) as ``repo:tag``; return its manifest
    digest. The same ``layers`` bytes give the same layer blobs in every repository."""
    img = make_oci_image(
        layers,
        config_created=config_created,
        platform=platform,
        seed=seed,
        labels=labels,
        annotations=annotations,
    )
    return push_oci(reg, repo, tag, img)


def push_oci_index(
    reg: RunningRegistry,
    repo: str,
    tag: str,
    *,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    seed: str,
    config_created: str | None = None,
) -> tuple[str, list[str]]:
    """Push an OCI index with one child image per platform (``skopeo copy --all``); return
    (index digest, child digests in platform order). Children are untagged."""
    index = make_oci_index(platforms=platforms, seed=seed, config_created=config_created)
    push_oci(reg, repo, tag, index)
    return index.digest, index.child_digests


# --------------------------------------------------------------------------------------------
# Tags and pulls


def tag_alias(reg: RunningRegistry, repo: str, src_tag: str, new_tag: str) -> str:
    """Give ``repo:src_tag``'s manifest a second tag ``new_tag`` (same digest, lists with all
    their children); return the digest."""
    skopeo(
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        *_SKOPEO_TLS,
        f"docker://{reg.ref(repo, src_tag)}",
        f"docker://{reg.ref(repo, new_tag)}",
    )
    src, new = tag_digest(reg.root, repo, src_tag), tag_digest(reg.root, repo, new_tag)
    if src != new:
        raise AssertionError(f"alias {repo}:{new_tag} is {new}, {src_tag} is {src}")
    return new


def pull_error(reg: RunningRegistry, repo: str, ref: str) -> str | None:
    """Pull ``repo:ref`` (tag or digest) with skopeo, every platform of a list and every blob,
    into a throw-away ``dir:`` copy (no format conversion; skopeo checks each blob's digest).
    Returns None on success, else skopeo's error output."""
    with tempfile.TemporaryDirectory(prefix="retentiond-pull-") as tmp:
        res = skopeo(
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            *_SKOPEO_TLS,
            f"docker://{reg.ref(repo, ref)}",
            f"dir:{tmp}/image",
            check=False,
        )
    return None if res.returncode == 0 else (res.stderr.strip() or res.stdout.strip())


def pull_ok(reg: RunningRegistry, repo: str, ref: str) -> bool:
    """True when ``repo:ref`` can be pulled completely (see ``pull_error``)."""
    return pull_error(reg, repo, ref) is None


def docker_pull_error(
    reg: RunningRegistry, repo: str, ref: str, *, timeout: float = 120.0
) -> str | None:
    """``docker pull`` of ``repo:ref`` (tag or digest); None on success, else docker's output.

    The local image with the same id is removed first so that docker really fetches the
    manifest and config (a layer that another local image also holds is still not downloaded
    again: use ``pull_ok`` to check every blob). The harness's own cache tags for that image
    are put back afterwards. dockerd retries a failed blob download 5 times with 5 s, 10 s,
    ... pauses: the pull is cut short at the first "Retrying in" and counts as failed."""
    full = reg.ref(repo, ref)
    image_id = _local_image_id_for(reg, repo, ref)
    saved_tags: list[str] = []
    if image_id:
        res = docker("image", "inspect", "-f", "{{json .RepoTags}}", image_id, check=False)
        if res.returncode == 0:
            saved_tags = [
                t
                for t in json.loads(res.stdout or "null") or []
                if t.startswith("retentiond-test/")
            ]
            docker("rmi", "-f", image_id, check=False)
    output: list[str] = []
    proc = subprocess.Popen(
        ["docker", "pull", full],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DOCKER_CLI_HINTS": "false"},
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "Retrying in" in line:
                proc.kill()
                break
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    if returncode != 0:
        return "".join(output).strip() or f"docker pull exited {returncode}"
    for t in saved_tags:
        docker("tag", full, t, check=False)
    docker("rmi", full, check=False)
    return None


def docker_pull_ok(reg: RunningRegistry, repo: str, ref: str) -> bool:
    """True when ``docker pull`` of ``repo:ref`` succeeds (see ``docker_pull_error``)."""
    return docker_pull_error(reg, repo, ref) is None


def _local_image_id_for(reg: RunningRegistry, repo: str, ref: str) -> str | None:
    """The config digest (= local image id) of the image ``repo:ref`` names in the tree."""
    try:
        digest = ref if ref.startswith("sha256:") else tag_digest(reg.root, repo, ref)
        doc = read_manifest(reg.root, digest)
        if doc.get("mediaType") in LIST_TYPES:
            return None
        config = doc.get("config", {}).get("digest")
        return str(config) if config else None
    except (OSError, ValueError, KeyError):
        return None


# --------------------------------------------------------------------------------------------
# docker build + docker push

_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:100] or "x"


def _image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def _image_id(ref: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


def build_docker_image(
    layers: Sequence[bytes], *, seed: str, base: str | None = None, tag: str | None = None
) -> str:
    """``docker build`` an image: ``FROM scratch`` (or ``base``), one ``COPY`` layer per item
    of ``layers`` (a file named after its content's hash, with a fixed mtime) and the seed as a
    label. Kept locally as ``retentiond-test/img:<hash of the inputs>`` (or ``tag``) and not
    rebuilt while that exists, so repeated pushes of the same seed give the same digest.
    Returns the local reference."""
    from_ref = "scratch" if base is None else ensure_base_image(base)
    from_id = "scratch" if base is None else _image_id(from_ref)
    key = hashlib.sha256(
        canonical_json(
            {"from": from_id, "layers": [sha256_digest(x) for x in layers], "seed": seed}
        )
    ).hexdigest()[:32]
    ref = tag or f"{IMAGE_CACHE_REPO}:{key}"
    if _image_exists(ref):
        return ref
    with tempfile.TemporaryDirectory(prefix="retentiond-build-") as tmp:
        ctx = Path(tmp)
        lines = [f"FROM {from_ref}"]
        for i, content in enumerate(layers):
            src = ctx / f"l{i}.bin"
            src.write_bytes(content)
            os.utime(src, (FIXED_MTIME, FIXED_MTIME))
            lines.append(f"COPY l{i}.bin /layer-{hashlib.sha256(content).hexdigest()[:16]}.bin")
        lines.append(f"LABEL {SEED_LABEL}={json.dumps(seed)}")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker("build", "-q", "-t", ref, str(ctx), timeout=300)
    return ref


def ensure_base_image(base: str, layers: Sequence[bytes] | None = None) -> str:
    """A local image to build on: ``base`` itself when such a local image exists, else a
    harness-built ``retentiond-test/base:<base>`` with two layers derived from the name (or
    ``layers``). Images built on the same base share its layer blobs in the registry."""
    if _image_exists(base):
        return base
    ref = f"{BASE_IMAGE_REPO}:{_slug(base)}"
    if layers is None:
        layers = [f"base {base} layer {i}\n".encode() * 64 for i in range(2)]
    return build_docker_image(layers, seed=f"base:{base}", tag=ref)


def push_docker_image(
    reg: RunningRegistry,
    repo: str,
    tag: str,
    *,
    layers: list[bytes] | None = None,
    seed: str,
    base: str | None = None,
) -> str:
    """Build (see ``build_docker_image``; ``layers`` defaults to one layer derived from
    ``seed``) and ``docker push`` as ``repo:tag``. Returns the schema2 manifest digest as
    stored in the registry. Each distinct seed gives a distinct image."""
    if layers is None:
        layers = [f"seed {seed}\n".encode()]
    local = build_docker_image(layers, seed=seed, base=base)
    remote = reg.ref(repo, tag)
    docker("tag", local, remote)
    try:
        out = docker("push", remote, timeout=300).stdout
    finally:
        docker("rmi", remote, check=False)  # only the tag: the local cache name stays
    match = _DIGEST_RE.search(out)
    stored = tag_digest(reg.root, repo, tag)
    if match and match.group(1) != stored:
        raise AssertionError(f"docker push said {match.group(1)}, {repo}:{tag} is {stored}")
    return stored


__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "CommandError",
    "OciImage",
    "OciIndex",
    "build_docker_image",
    "docker_pull_error",
    "docker_pull_ok",
    "ensure_base_image",
    "layer_tar",
    "make_oci_image",
    "make_oci_index",
    "pull_error",
    "pull_ok",
    "push_docker_image",
    "push_oci",
    "push_oci_image",
    "push_oci_index",
    "set_pushed_at",
    "tag_alias",
    "write_oci_layout",
]
