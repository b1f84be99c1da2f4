"""The manifest parser on hostile blobs: nothing but ManifestError, and the registry's reading.

What registry 2.8's GC does with each case was checked against Debian's docker-registry 2.8.2
(see the table in retentiond/core/manifests.py); tests/integration/test_hostile_cli.py runs the
real GC on the CLI-visible ones.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from retentiond.core.blob_table import BlobTable
from retentiond.core.manifest_table import MAX_CHILDREN, pack_manifest
from retentiond.core.manifests import (
    GO_MAX_DEPTH,
    ManifestError,
    load_json,
    parse_created,
    parse_manifest,
    parse_rfc3339,
)
from retentiond.core.values import Manifest

DIGEST = "sha256:" + "d" * 64
CONFIG = "sha256:" + "c" * 64
LAYER = "sha256:" + "1" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def image(*, size: str = "11", extra: str = "", layers_key: str = "layers") -> bytes:
    """An OCI image manifest as text, with ``size`` as the layer's size literal and ``extra``
    JSON members appended."""
    return (
        f'{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}", '
        f'"config": {{"digest": "{CONFIG}", "size": 5}}, '
        f'"{layers_key}": [{{"digest": "{LAYER}", "size": {size}}}]{extra}}}'
    ).encode()


def nested(depth: int) -> str:
    """A JSON value nested ``depth`` arrays deep."""
    return "[" * depth + "]" * depth


def assert_only_manifest_error(data: bytes) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(DIGEST, data)
    return caught.value


# -- nesting ----------------------------------------------------------------------------------


def test_manifest_nested_1000_deep_parses_as_the_registry_does() -> None:
    manifest = parse_manifest(DIGEST, image(extra=f', "x": {nested(999)}'))
    assert manifest.blobs == (CONFIG, LAYER)


def test_manifest_nested_10000_deep_is_read_like_gos_decoder_reads_it() -> None:
    # the top-level object and 9,999 arrays: Go's limit exactly
    manifest = parse_manifest(DIGEST, image(extra=f', "x": {nested(GO_MAX_DEPTH - 1)}'))
    assert manifest.blob_sizes == (5, 11)


def test_manifest_nested_10001_deep_is_refused_as_the_gc_refuses_it() -> None:
    error = assert_only_manifest_error(image(extra=f', "x": {nested(GO_MAX_DEPTH)}'))
    assert "nested more than 10000 deep" in str(error) and error.gc_aborts


def test_manifest_nested_100000_deep_is_a_manifest_error() -> None:
    assert_only_manifest_error(nested(100_000).encode())


def test_100000_unclosed_brackets_are_a_manifest_error() -> None:
    assert_only_manifest_error(b"[" * 100_000)


def test_deep_manifest_with_a_syntax_error_inside_is_a_manifest_error() -> None:
    assert_only_manifest_error(image(extra=', "x": ' + "[" * 2000 + "1 2" + "]" * 2000))
    assert_only_manifest_error(image(extra=', "x": ' + "[" * 2000 + "]" * 1999))


def test_deep_objects_past_the_c_decoder_are_read() -> None:
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    assert parse_manifest(DIGEST, image(extra=f', "x": {deep}')).blobs == (CONFIG, LAYER)


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [str(2**63), str(-(2**63) - 1), "1.5", "11.0", "1e1", "1e999", "9" * 5000, '"11"', "true"],
    ids=["2^63", "below-int64", "1.5", "11.0", "1e1", "1e999", "5000-digits", "string", "bool"],
)
def test_descriptor_size_go_cannot_unmarshal_into_int64_is_a_manifest_error(literal: str) -> None:
    error = assert_only_manifest_error(image(size=literal))
    assert "layers[0].size" in str(error) and error.gc_aborts


def test_descriptor_size_2_63_minus_1_is_read() -> None:
    assert parse_manifest(DIGEST, image(size=str(2**63 - 1))).blob_sizes == (5, 2**63 - 1)


def test_negative_or_null_size_is_read_as_no_size_stated() -> None:
    assert parse_manifest(DIGEST, image(size="-1")).blob_sizes == (5, -1)
    assert parse_manifest(DIGEST, image(size="null")).blob_sizes == (5, -1)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    assert "not JSON" in str(assert_only_manifest_error(image(size=constant)))
    assert_only_manifest_error(image(extra=f', "x": {constant}'))


def test_huge_numbers_in_fields_the_registry_ignores_are_read() -> None:
    assert parse_manifest(DIGEST, image(extra=', "x": 1e999999')).blobs == (CONFIG, LAYER)
    assert parse_manifest(DIGEST, image(extra=', "x": ' + "9" * 5000)).blobs == (CONFIG, LAYER)


def test_float_schema_version_is_a_manifest_error() -> None:
    data = image().replace(b'"schemaVersion": 2', b'"schemaVersion": 2.0')
    assert_only_manifest_error(data)


def test_descriptor_media_type_not_a_string_is_a_manifest_error() -> None:
    data = image().replace(b'"size": 11', b'"size": 11, "mediaType": 5')
    assert "mediaType" in str(assert_only_manifest_error(data))


# -- encodings, keys ----------------------------------------------------------------------------


def test_invalid_utf8_inside_a_string_is_read_as_the_registry_reads_it() -> None:
    data = image(extra=', "annotations": {"a": "\xff\xfe"}'.replace("\xff\xfe", "XX"))
    data = data.replace(b"XX", b"\xff\xfe")
    assert parse_manifest(DIGEST, data).blobs == (CONFIG, LAYER)


@pytest.mark.parametrize(
    "data",
    [b"\xef\xbb\xbf" + image(), image().decode().encode("utf-16"), image() + b" x", b"", b"  "],
    ids=["bom", "utf-16", "trailing-garbage", "empty", "whitespace"],
)
def test_what_go_does_not_decode_is_a_manifest_error(data: bytes) -> None:
    assert_only_manifest_error(data)


def test_non_string_keys_are_a_manifest_error() -> None:
    assert_only_manifest_error(b'{1: 2, "schemaVersion": 2}')


def test_duplicate_key_last_one_wins_as_in_go() -> None:
    data = image(extra=', "layers": []')
    assert parse_manifest(DIGEST, data).blobs == (CONFIG,)


@pytest.mark.parametrize(
    "key", ["LAYERS", "Layers", "layer\u017f"], ids=["upper", "title", "long-s"]
)
def test_key_in_another_case_is_the_same_field_as_in_go(key: str) -> None:
    # Go matches keys to struct fields case-insensitively: the GC marks no layer here
    assert parse_manifest(DIGEST, image(extra=f', "{key}": []')).blobs == (CONFIG,)


def test_folded_keys_the_last_in_document_order_wins() -> None:
    data = image(layers_key="Layers", extra=f', "layers": [], "Layers": [{{"digest": "{LAYER}"}}]')
    assert parse_manifest(DIGEST, data).blobs == (CONFIG, LAYER)


def test_kelvin_sign_folds_to_k_in_a_key() -> None:
    index = (
        '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", '
        f'"manifests": [{{"digest": "{LAYER}"}}], "manifests": []}}'
    )
    assert parse_manifest(DIGEST, index.encode()).children == ()
    assert load_json('{"\u212a": 1}'.encode()) == {"\u212a": 1}  # not a field read here


def test_folded_keys_past_the_c_decoder_are_folded_too() -> None:
    data = image(extra=f', "x": {nested(3000)}, "LAYERS": []')
    assert parse_manifest(DIGEST, data).blobs == (CONFIG,)


def test_media_type_null_is_an_oci_image_as_in_go() -> None:
    data = image().replace(f'"{OCI_MANIFEST}"'.encode(), b"null")
    assert parse_manifest(DIGEST, data).media_type == OCI_MANIFEST


# -- size --------------------------------------------------------------------------------------


def test_4_mib_manifest_with_many_layers_parses() -> None:
    layer = f'{{"mediaType": "a", "digest": "{LAYER}", "size": 1}}'
    count = (4 * 1024 * 1024) // (len(layer) + 1)
    data = image(extra="").replace(
        f'[{{"digest": "{LAYER}", "size": 11}}]'.encode(),
        ("[" + ",".join([layer] * count) + "]").encode(),
    )
    assert len(data) <= 4 * 1024 * 1024 + 200
    assert len(parse_manifest(DIGEST, data).blobs) == count + 1


def test_index_of_more_children_than_a_record_holds_is_refused_without_blocking_gc() -> None:
    child = f'{{"digest": "{LAYER}"}}'
    data = (
        '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", '
        f'"manifests": [{",".join([child] * (MAX_CHILDREN + 1))}]}}'
    ).encode()
    error = assert_only_manifest_error(data)
    assert not error.gc_aborts


def test_pack_manifest_refuses_more_children_than_a_record_holds() -> None:
    manifest = Manifest(
        DIGEST, "application/vnd.oci.image.index.v1+json", children=(LAYER,) * (MAX_CHILDREN + 1)
    )
    with pytest.raises(ValueError, match="at most 65535"):
        pack_manifest(manifest, 0, BlobTable.from_items([(DIGEST, 1)]))


@pytest.mark.parametrize("seed", range(20))
def test_garbage_bytes_are_a_manifest_error(seed: int) -> None:
    data = random.Random(seed).randbytes(64 + seed * 97)
    with pytest.raises(ManifestError):
        parse_manifest(DIGEST, data)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        "x",
        1,
        None,
        {"schemaVersion": 3},
        {"schemaVersion": 2**64},
        {"schemaVersion": True},
        {"schemaVersion": 2, "mediaType": 5},
        {"schemaVersion": 2, "layers": {}},
        {"schemaVersion": 2, "layers": [1]},
        {"schemaVersion": 2, "layers": [{"digest": 1}]},
        {"schemaVersion": 2, "config": []},
        {"schemaVersion": 1, "fsLayers": [{}]},
        {"schemaVersion": 2, "mediaType": "x" * 100_000},
    ],
)
def test_wrong_shapes_are_manifest_errors(doc: Any) -> None:
    error = assert_only_manifest_error(json.dumps(doc).encode())
    assert len(str(error)) < 400


# -- config blobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b'{"created": NaN}',
        b"\xff",
        b'{"created": 5}',
        b'{"created": "0001-01-01T00:00:00+01:00"}',
        b'{"created": "9999-12-31T23:59:59-01:00"}',
    ],
    ids=["deep", "nan", "garbage", "number", "before-year-1", "after-year-9999"],
)
def test_config_created_that_cannot_be_read_is_none(data: bytes) -> None:
    assert parse_created(data) is None


def test_config_created_with_nanoseconds_is_read() -> None:
    when = parse_created(b'{"created": "2024-01-02T03:04:05.123456789Z"}')
    assert when is not None and when.microsecond == 123456


def test_rfc3339_out_of_range_is_none() -> None:
    assert parse_rfc3339("0001-01-01T00:00:00+01:00") is None


# -- fields of the wrong JSON type (the GC cannot unmarshal them) --------------------------------


@pytest.mark.parametrize(
    "layer_members",
    [
        ', "annotations": {"a": 1}',
        ', "annotations": []',
        ', "urls": [1]',
        ', "urls": "x"',
        ', "platform": {"architecture": 1}',
        ', "Platform": {"Architecture": 1}',
        ', "platform": []',
    ],
)
def test_descriptor_fields_of_the_wrong_type_are_manifest_errors(layer_members: str) -> None:
    data = image(size="11" + layer_members)
    assert assert_only_manifest_error(data).gc_aborts


@pytest.mark.parametrize(
    "layer_members",
    [', "annotations": {"a": null}', ', "urls": [null]', ', "platform": null', ', "x": [1]'],
)
def test_descriptor_fields_go_reads_are_read(layer_members: str) -> None:
    assert parse_manifest(DIGEST, image(size="11" + layer_members)).blob_sizes == (5, 11)


def test_oci_manifest_annotations_of_the_wrong_type_are_a_manifest_error() -> None:
    assert_only_manifest_error(image(extra=', "Annotations": {"a": 1}'))


def test_docker_manifest_has_no_annotations_field_to_check() -> None:
    data = image(extra=', "annotations": {"a": 1}').replace(
        OCI_MANIFEST.encode(), b"application/vnd.docker.distribution.manifest.v2+json"
    )
    assert parse_manifest(DIGEST, data).blobs == (CONFIG, LAYER)


def test_index_child_platform_features_of_the_wrong_type_are_a_manifest_error() -> None:
    index = (
        '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", '
        f'"manifests": [{{"digest": "{LAYER}", "platform": {{"features": [1]}}}}]}}'
    )
    assert_only_manifest_error(index.encode())
