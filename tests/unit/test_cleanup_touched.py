"""Cleaning only what a run and its GC touched (``clean_touched``, inside the window) and the
``_layers`` links of the blobs the GC deleted (``drop_dangling_layer_links``, once pushes are
taken again): on real files, with no link followed and no concurrent push losing its link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retentiond.storage.cleanup import clean_touched, drop_dangling_layer_links
from retentiond.storage.filesystem import FilesystemStorage
from retentiond.storage.layout import LAYER_LINKS_HELD, QUARANTINE
from tests.unit.test_removal_paths import snapshot

GONE = "ab" * 32
KEPT = "cd" * 32
OTHER = "ef" * 32


def v2_of(root: Path) -> Path:
    return root / "docker/registry/v2"


def blob(root: Path, hexpart: str, data: bytes = b"{}") -> Path:
    path = v2_of(root) / "blobs/sha256" / hexpart[:2] / hexpart
    path.mkdir(parents=True, exist_ok=True)
    (path / "data").write_bytes(data)
    return path


def layer_link(root: Path, repo: str, hexpart: str) -> Path:
    path = v2_of(root) / "repositories" / repo / "_layers/sha256" / hexpart
    path.mkdir(parents=True)
    (path / "link").write_text(f"sha256:{hexpart}")
    return path


def repository(root: Path, name: str) -> Path:
    path = v2_of(root) / "repositories" / name / "_manifests/tags"
    path.mkdir(parents=True)
    return path.parent.parent


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (v2_of(root) / "repositories").mkdir(parents=True)
    (v2_of(root) / "blobs/sha256").mkdir(parents=True)
    return root


# -- clean_touched -------------------------------------------------------------------------------


def test_clean_touched_removes_the_named_prefixes_that_are_empty(root: Path) -> None:
    store = v2_of(root) / "blobs/sha256"
    (store / "ab").mkdir()  # emptied by the GC
    blob(root, KEPT)  # cd/ still holds a blob
    (store / "ef").mkdir()  # empty, but the run did not touch it
    cleaned = clean_touched(root, prefixes=["ab", "cd", "ab", "12"], removed_repositories=[])
    assert cleaned.blob_prefix_dirs == 1
    assert not (store / "ab").exists()
    assert (store / "cd" / KEPT / "data").is_file()
    assert (store / "ef").is_dir()


def test_clean_touched_removes_emptied_namespaces_up_to_repositories(root: Path) -> None:
    repos = v2_of(root) / "repositories"
    (repos / "team/app").mkdir(parents=True)  # team/app/api was moved out: app is empty
    repository(root, "team/web")
    (repos / "solo").mkdir()  # left empty by a removal as parts (it had nested ones)
    (repos / "lonely/ns").mkdir(parents=True)  # its only repository lonely/ns/x was moved
    cleaned = clean_touched(
        root,
        prefixes=[],
        removed_repositories=["team/app/api", "solo", "lonely/ns/x"],
    )
    assert cleaned.namespace_dirs == 4  # team/app, solo, lonely/ns, lonely
    assert sorted(p.name for p in repos.iterdir()) == ["team"]
    assert sorted(p.name for p in (repos / "team").iterdir()) == ["web"]


def test_clean_touched_never_removes_repositories_itself(root: Path) -> None:
    cleaned = clean_touched(root, prefixes=[], removed_repositories=["only"])
    assert cleaned.namespace_dirs == 0
    assert (v2_of(root) / "repositories").is_dir()


def test_clean_touched_follows_no_link(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    (outside / "ns" / "inner").mkdir(parents=True)
    store = v2_of(root) / "blobs/sha256"
    (store / "ab").symlink_to(outside / "empty")
    (v2_of(root) / "repositories/ns").symlink_to(outside / "ns")
    before = snapshot(outside)
    cleaned = clean_touched(root, prefixes=["ab"], removed_repositories=["ns/inner", "ns/x"])
    assert snapshot(outside) == before
    assert (store / "ab").is_symlink()
    assert (v2_of(root) / "repositories/ns").is_symlink()
    assert cleaned.blob_prefix_dirs == 0 and cleaned.namespace_dirs == 0
    assert any(p.endswith("blobs/sha256/ab") for p in cleaned.skipped)
    assert any(p.endswith("repositories/ns") for p in cleaned.skipped)


@pytest.mark.parametrize("prefix", ["a", "AB", "../x", "abc", "zz"])
def test_clean_touched_refuses_what_is_not_a_prefix(root: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="is not a blob store prefix"):
        clean_touched(root, prefixes=[prefix], removed_repositories=[])


@pytest.mark.parametrize("name", ["../x", "a/../b", "a/_layers", "", "/abs"])
def test_clean_touched_refuses_what_is_not_a_repository(root: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is not a repository name"):
        clean_touched(root, prefixes=[], removed_repositories=[name])


# -- drop_dangling_layer_links -------------------------------------------------------------------


def test_drops_the_links_whose_blob_is_gone_and_keeps_the_others(root: Path) -> None:
    blob(root, KEPT)
    gone = layer_link(root, "app", GONE)
    kept = layer_link(root, "app", KEPT)
    other = layer_link(root, "other", GONE)  # not a candidate: left as it is
    candidates = [("app", f"sha256:{GONE}"), ("app", f"sha256:{KEPT}"), ("app", f"sha256:{OTHER}")]
    assert drop_dangling_layer_links(root, candidates) == 1
    assert not gone.exists()
    assert (kept / "link").read_text() == f"sha256:{KEPT}"
    assert other.is_dir()
    assert not (root / QUARANTINE / LAYER_LINKS_HELD).exists()


def test_nothing_to_drop_makes_no_quarantine(root: Path) -> None:
    blob(root, KEPT)
    layer_link(root, "app", KEPT)
    assert drop_dangling_layer_links(root, [("app", f"sha256:{KEPT}")]) == 0
    assert drop_dangling_layer_links(root, iter([])) == 0
    assert not (root / QUARANTINE).exists()


@pytest.fixture
def push_during_drop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A push of the dropped link's blob that lands right after the link is moved aside (the
    registry writes the blob's data, then its link); the list says what the push wrote."""
    hold = FilesystemStorage.hold
    wrote: list[str] = []

    def hold_then_push(self: FilesystemStorage, path: str, held: str) -> None:
        hold(self, path, held)
        hexpart = path.rpartition("/")[2]
        blob(self.root, hexpart, b"pushed again")
        if "relink" in wrote:
            link = v2_of(self.root) / path
            link.mkdir()
            (link / "link").write_text(f"sha256:{hexpart}")
        wrote.append("blob")

    monkeypatch.setattr(FilesystemStorage, "hold", hold_then_push)
    yield wrote


def test_a_blob_pushed_again_meanwhile_keeps_its_link(
    root: Path, push_during_drop: list[str]
) -> None:
    link = layer_link(root, "app", GONE)
    before = snapshot(link)
    assert drop_dangling_layer_links(root, [("app", f"sha256:{GONE}")]) == 0
    assert push_during_drop == ["blob"]
    assert snapshot(link) == before, "the link is back as the registry wrote it"
    assert not (root / QUARANTINE / LAYER_LINKS_HELD).exists()


def test_a_link_written_again_meanwhile_is_the_one_kept(
    root: Path, push_during_drop: list[str]
) -> None:
    link = layer_link(root, "app", GONE)
    push_during_drop.append("relink")
    assert drop_dangling_layer_links(root, [("app", f"sha256:{GONE}")]) == 0
    assert (link / "link").read_text() == f"sha256:{GONE}"
    assert not (root / QUARANTINE / LAYER_LINKS_HELD).exists()


def test_links_on_the_way_are_not_followed(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    for name in (GONE, OTHER):
        (outside / name).mkdir(parents=True)
        (outside / name / "link").write_text(f"sha256:{name}")
    layers = v2_of(root) / "repositories/app/_layers"
    layers.mkdir(parents=True)
    (layers / "sha256").symlink_to(outside)  # the repository's link directory is a link
    (v2_of(root) / "repositories/web/_layers/sha256").mkdir(parents=True)
    (v2_of(root) / "repositories/web/_layers/sha256" / GONE).symlink_to(outside / GONE)
    before = snapshot(outside)
    candidates = [("app", f"sha256:{GONE}"), ("web", f"sha256:{GONE}")]
    assert drop_dangling_layer_links(root, candidates) == 0
    assert snapshot(outside) == before
    assert (v2_of(root) / "repositories/web/_layers/sha256" / GONE).is_symlink()


def test_a_blob_data_that_cannot_be_looked_at_keeps_the_link(root: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (v2_of(root) / "blobs/sha256/ab").symlink_to(tmp_path / "elsewhere")
    link = layer_link(root, "app", GONE)
    assert drop_dangling_layer_links(root, [("app", f"sha256:{GONE}")]) == 0
    assert link.is_dir()


def test_what_a_killed_call_left_aside_is_deleted_by_the_next(root: Path) -> None:
    left = root / QUARANTINE / LAYER_LINKS_HELD / "0000000"
    left.mkdir(parents=True)
    (left / "link").write_text(f"sha256:{OTHER}")
    gone = layer_link(root, "app", GONE)
    assert drop_dangling_layer_links(root, [("app", f"sha256:{GONE}")]) == 1
    assert not gone.exists()
    assert not (root / QUARANTINE / LAYER_LINKS_HELD).exists()
    assert (root / QUARANTINE).is_dir()


def test_a_symlinked_quarantine_receives_nothing(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / LAYER_LINKS_HELD).mkdir(parents=True)
    (outside / LAYER_LINKS_HELD / "keep").write_text("mine")
    (root / QUARANTINE).symlink_to(outside)
    link = layer_link(root, "app", GONE)
    before = snapshot(outside)
    with pytest.raises(Exception, match="retentiond-quarantine"):
        drop_dangling_layer_links(root, [("app", f"sha256:{GONE}")])
    assert snapshot(outside) == before
    assert link.is_dir()


@pytest.mark.parametrize("digest", ["sha256:" + "AB" * 32, "sha256:../../x", "md5:" + "ab" * 16])
def test_a_candidate_that_is_not_a_digest_is_refused(root: Path, digest: str) -> None:
    with pytest.raises(ValueError, match="is not a sha256 digest"):
        drop_dangling_layer_links(root, [("app", digest)])
