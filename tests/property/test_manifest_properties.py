"""The manifest parser on generated documents: well-formed manifests parse to exactly what they
reference; any JSON document parses or raises ManifestError; a config's ``created`` is read or
is None, never an exception (the contract of ``retentiond.core.manifests``)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from retentiond.core.manifests import ManifestError, parse_created, parse_manifest
from tests.property.profiles import scaled
from tests.property.trees import Image, TreeSpec, build, nodes, sha256

FIELDS = (
    "schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "subject",
    "fsLayers", "blobSum", "platform", "annotations", "urls", "created", "artifactType",
)  # fmt: skip
MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
KEYS = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS).map(str.upper),
    st.sampled_from(FIELDS).map(lambda k: k.replace("s", "\u017f").replace("k", "\u212a")),
    st.text(max_size=6),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**66),
    st.integers(min_value=-(2**66), max_value=-(2**62)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from((0, 1, 2, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1)),
)
STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(MEDIA_TYPES),
    st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    st.from_regex(r"sha256:[0-9a-fA-F]{0,70}", fullmatch=True),
    st.from_regex(
        r"\d{1,5}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,12})?(Z|[+-]\d\d:\d\d)?", fullmatch=True
    ),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=30,
)


def encode(doc: Any, pretty: bool) -> bytes:
    return json.dumps(doc, indent=3 if pretty else None, ensure_ascii=pretty).encode()


@settings(max_examples=scaled(150))
@given(pool=st.integers(1, 6).flatmap(nodes))
def test_generated_manifests_parse_to_exactly_what_they_reference(pool: Any) -> None:
    layer_count = 1 + max(
        (n for node in pool if isinstance(node, Image) for n in node.layers), default=0
    )
    built = build(TreeSpec(layer_count, frozenset(), pool, ()))
    for node, digest in zip(pool, built.digests, strict=True):
        manifest = parse_manifest(digest, built.blobs[digest])
        assert manifest.digest == digest
        assert manifest.children == built.children.get(digest, ())
        assert manifest.blobs == built.blob_refs.get(digest, ())
        assert manifest.subject == built.subject.get(digest)
        if isinstance(node, Image):
            config = built.blob_refs[digest][0]
            created = parse_created(built.blobs[config])
            assert created is not None and created.tzinfo is not None


@settings(max_examples=scaled(800))
@given(doc=JSON, pretty=st.booleans())
def test_any_json_document_parses_or_raises_manifest_error(doc: Any, pretty: bool) -> None:
    data = encode(doc, pretty)
    with contextlib.suppress(ManifestError):
        parse_manifest(sha256(data), data)
    created = parse_created(data)
    assert created is None or (isinstance(created, datetime) and created.tzinfo is not None)


@settings(max_examples=scaled(300))
@given(
    base=st.sampled_from(("image", "index")),
    key=st.sampled_from(FIELDS),
    where=st.sampled_from(("top", "config", "first")),
    value=JSON,
)
def test_valid_manifest_with_a_hostile_field_parses_or_raises_manifest_error(
    base: str, key: str, where: str, value: Any
) -> None:
    digest = "sha256:" + "1" * 64
    descriptor = {"mediaType": MEDIA_TYPES[0], "size": 10, "digest": digest}
    doc: dict[str, Any] = (
        {"schemaVersion": 2, "mediaType": MEDIA_TYPES[0], "config": dict(descriptor),
         "layers": [dict(descriptor)]}
        if base == "image"
        else {"schemaVersion": 2, "mediaType": MEDIA_TYPES[1], "manifests": [dict(descriptor)]}
    )  # fmt: skip
    target = {
        "top": doc,
        "config": doc.get("config", doc),
        "first": (doc.get("layers") or doc["manifests"])[0],
    }[where]
    target[key] = value
    data = encode(doc, pretty=False)
    with contextlib.suppress(ManifestError):
        parse_manifest(sha256(data), data)


@settings(max_examples=scaled(200))
@given(noise=st.binary(max_size=64), at=st.integers(0, 400), pick=st.integers(0, 3))
def test_damaged_real_manifest_bytes_parse_or_raise_manifest_error(
    noise: bytes, at: int, pick: int
) -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPES[pick],
        "config": {"mediaType": "x", "size": 1, "digest": "sha256:" + "2" * 64},
        "layers": [{"mediaType": "x", "size": 1, "digest": "sha256:" + "3" * 64}],
        "manifests": [{"mediaType": "x", "size": 1, "digest": "sha256:" + "4" * 64}],
    }
    data = encode(doc, pretty=True)
    at %= len(data) + 1
    damaged = data[:at] + noise + data[at + len(noise) // 2 :]
    with contextlib.suppress(ManifestError):
        parse_manifest(sha256(damaged), damaged)
    parse_created(damaged)
