"""The registry's storage layout as :mod:`retentiond.storage.layout` spells it: the paths the
distribution registry writes, and the forms relative to a repository or to the blob store are
the same paths."""

from __future__ import annotations

from retentiond.storage import layout
from retentiond.storage.removal_list import live_path

HEX = "ab" * 32
DIGEST = "sha256:" + HEX


def test_v2_and_the_quarantine_are_below_the_root() -> None:
    assert layout.V2 == "docker/registry/v2" == "/".join(layout.V2_PARTS)
    assert layout.quarantine("20261201T030000Z-1a2b3c") == (
        "retentiond-quarantine/20261201T030000Z-1a2b3c"
    )


def test_the_blob_store() -> None:
    assert layout.blob_data(HEX) == f"blobs/sha256/ab/{HEX}/data"
    assert layout.blob_dir(HEX) == f"blobs/sha256/ab/{HEX}"
    assert layout.blob_prefix_dir(layout.blob_prefix(HEX)) == "blobs/sha256/ab"
    assert f"{layout.BLOB_STORE}/{layout.blob_data_in_store(HEX)}" == layout.blob_data(HEX)


def test_a_repository_s_links() -> None:
    assert layout.tag_dir("a/b", "v1") == "repositories/a/b/_manifests/tags/v1"
    assert layout.tag_link("a/b", "v1") == "repositories/a/b/_manifests/tags/v1/current/link"
    revisions = "repositories/a/_manifests/revisions/sha256"
    assert layout.revision_link("a", DIGEST) == f"{revisions}/{HEX}/link"
    assert layout.revisions_dir("a") == revisions
    assert layout.layer_link("a", DIGEST) == f"repositories/a/_layers/sha256/{HEX}/link"
    assert layout.layer_links_dir("a") == "repositories/a/_layers/sha256"
    assert [layout.repository_part("a", p) for p in layout.PARTS] == [
        "repositories/a/_manifests",
        "repositories/a/_layers",
        "repositories/a/_uploads",
    ]


def test_paths_inside_a_repository_are_the_same_paths() -> None:
    base = layout.repository("a/b")
    assert f"{base}/{layout.in_repository_tag_link('v1')}" == layout.tag_link("a/b", "v1")
    revision = layout.revision_link("a/b", DIGEST)
    assert f"{base}/{layout.in_repository_revision_link(HEX)}" == revision
    assert f"{base}/{layout.in_repository_layer_link(HEX)}" == layout.layer_link("a/b", DIGEST)
    assert layout.digest_of(layout.hex_of(DIGEST)) == DIGEST


def test_held_removals_list_in_removal_order() -> None:
    names = [layout.held_name(i) for i in (0, 9, 10, 1234567)]
    assert names == ["0000000", "0000009", "0000010", "1234567"] == sorted(names)
    assert layout.held("RUN", 3) == "RUN/0000003"
    assert layout.in_quarantine("") == "retentiond-quarantine"
    assert layout.in_quarantine(layout.held("RUN", 3)) == "retentiond-quarantine/RUN/0000003"


def test_each_kind_of_removal_is_a_layout_directory() -> None:
    assert live_path("tag", "a", "v1") == layout.tag_dir("a", "v1")
    assert live_path("revision", "a", DIGEST) == layout.revision_dir("a", DIGEST)
    assert live_path("repository-part", "a", "_layers") == "repositories/a/_layers"
    assert live_path("repository", "a/b", "") == "repositories/a/b"
