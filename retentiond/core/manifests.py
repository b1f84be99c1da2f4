"""Parse manifest blobs the way registry 2.8's garbage collector does, to know what each marks.

The registry decides a manifest's kind from ``schemaVersion`` and ``mediaType``; an OCI document
without ``mediaType`` is an index when it has ``manifests``, else an image manifest. Anything it
could not unmarshal makes its GC abort, so :class:`ManifestError` here means "GC would abort".
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from retentiond.core.inventory import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_SCHEMA1,
    Manifest,
)

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class ManifestError(ValueError):
    """The blob is not a manifest the registry can read."""


def is_digest(value: object) -> bool:
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


def _descriptor_digest(desc: object, where: str) -> str:
    if not isinstance(desc, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    digest = desc.get("digest")
    if not isinstance(digest, str):
        raise ManifestError(f"{where} has no digest string")
    return digest


def _descriptor_list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"'{key}' is not a list")
    return value


def _subject(doc: dict[str, Any]) -> str | None:
    subject = doc.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        return str(subject["digest"])
    return None


def _descriptor_digests(key: str, descriptors: list[Any]) -> list[str]:
    """The digests of ``descriptors`` (one loop; the error names the first bad one)."""
    digests: list[str] = []
    for desc in descriptors:
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str):
            i = len(digests)
            return [_descriptor_digest(desc, f"{key}[{i}]")]  # raises
        digests.append(digest)
    return digests


def _stated_size(desc: Any) -> int:
    size = desc.get("size")
    return size if type(size) is int and size >= 0 else -1


def _image(digest: str, media_type: str, doc: dict[str, Any]) -> Manifest:
    config = doc.get("config")
    config_digest = "" if config is None else _descriptor_digest(config, "config")
    descriptors = _descriptor_list(doc, "layers")
    layers = _descriptor_digests("layers", descriptors)
    sizes = list(map(_stated_size, descriptors))
    if config_digest:
        layers.insert(0, config_digest)
        sizes.insert(0, _stated_size(config))
    blobs = tuple(layers)
    return Manifest(
        digest=digest,
        media_type=media_type,
        blobs=blobs,
        subject=_subject(doc),
        config=config_digest or None,
        blob_sizes=tuple(sizes),
    )


def _index(digest: str, media_type: str, doc: dict[str, Any]) -> Manifest:
    children = tuple(_descriptor_digests("manifests", _descriptor_list(doc, "manifests")))
    return Manifest(digest=digest, media_type=media_type, children=children, subject=_subject(doc))


def _schema1(digest: str, doc: dict[str, Any]) -> Manifest:
    layers: list[str] = []
    for i, layer in enumerate(_descriptor_list(doc, "fsLayers")):
        if not isinstance(layer, dict) or not isinstance(layer.get("blobSum"), str):
            raise ManifestError(f"fsLayers[{i}] has no blobSum")
        layers.append(str(layer["blobSum"]))
    return Manifest(digest=digest, media_type=MEDIA_SCHEMA1, blobs=tuple(layers))


def parse_manifest(digest: str, data: bytes) -> Manifest:
    """Parse a manifest blob; raise :class:`ManifestError` where registry 2.8 would fail."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    version = doc.get("schemaVersion")
    media_type = doc.get("mediaType", "")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ManifestError(f"schemaVersion is {version!r}, not a number")
    if not isinstance(media_type, str):
        raise ManifestError("mediaType is not a string")
    if version == 1:
        return _schema1(digest, doc)
    if version != 2:
        raise ManifestError(f"unrecognized manifest schema version {version}")
    if media_type in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST):
        return _image(digest, media_type, doc)
    if media_type in (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX):
        return _index(digest, media_type, doc)
    if media_type == "":
        if doc.get("manifests") is not None:
            return _index(digest, MEDIA_OCI_INDEX, doc)
        return _image(digest, MEDIA_OCI_MANIFEST, doc)
    raise ManifestError(f"unrecognized manifest content type {media_type}")


def parse_created(data: bytes) -> datetime | None:
    """The ``created`` time of an image config blob, or None when absent or unreadable."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    created = doc.get("created") if isinstance(doc, dict) else None
    return parse_rfc3339(created) if isinstance(created, str) else None


_FRACTION = re.compile(r"\.(\d+)")


def parse_rfc3339(text: str) -> datetime | None:
    """Parse Go's RFC 3339 times (nanoseconds, ``Z``) into aware UTC datetimes."""
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text.strip(), count=1)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
