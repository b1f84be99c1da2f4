"""The tree's mutations (move into the quarantine, put back, purge, clean after GC) follow no
symbolic link, act only on removals of the registry layout's shape, and never touch anything
outside the storage root. Each test keeps a sentinel directory outside the root and checks it
is untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from retentiond.errors import StorageError
from retentiond.run_files import save_removals
from retentiond.run_records import HistoryEntry, new_run_id
from retentiond.state import Journal, append_history, read_history
from retentiond.storage.cleanup import clean_after_gc, repository_names
from retentiond.storage.layout import QUARANTINE
from retentiond.storage.removal import (
    check_writable,
    move_out,
    purge,
    put_back,
    quarantine_dir,
    run_removals,
)
from retentiond.storage.removal_list import Removal, live_path, parse_removals

RUN = "20261201T030000Z-1a2b3c"
HEX = "ab" * 32
OTHER = "cd" * 32


def snapshot(path: Path) -> dict[str, Any]:
    """Every entry below ``path`` with its type and content (links not followed)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", full.read_bytes())
    return out


def add_tag(v2: Path, repo: str, tag: str, digest_hex: str = HEX) -> Path:
    current = v2 / "repositories" / repo / "_manifests/tags" / tag / "current"
    current.mkdir(parents=True)
    (current / "link").write_text(f"sha256:{digest_hex}")
    return current.parent


def make_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(root, v2, outside): a small registry tree and a sentinel directory outside the root
    that looks like a repository's insides, so a followed link would find work there."""
    root = tmp_path / "root"
    v2 = root / "docker/registry/v2"
    for tag in ("old", "older", "latest"):
        add_tag(v2, "app", tag)
    revision = v2 / "repositories/app/_manifests/revisions/sha256" / HEX
    revision.mkdir(parents=True)
    (revision / "link").write_text(f"sha256:{HEX}")
    (v2 / "repositories/app/_layers/sha256" / OTHER).mkdir(parents=True)
    (v2 / "blobs/sha256/ab" / HEX).mkdir(parents=True)
    (v2 / "blobs/sha256/ab" / HEX / "data").write_text("{}")
    outside = tmp_path / "outside"
    add_tag(outside, "app", "old")
    (outside / "tags").mkdir()
    add_tag(outside / "tags", "x", "old")
    (outside / "empty-dir" / "sub").mkdir(parents=True)
    (outside / OTHER).mkdir()  # a "_layers" entry whose blob is gone
    (outside / "secret").write_text("do not move me")
    return root, v2, outside


def tag_removal(index: int, tag: str, repo: str = "app") -> Removal:
    return Removal(index, "tag", repo, tag, live_path("tag", repo, tag))


def moved(root: Path) -> list[str]:
    """What the quarantine holds, by the port's names (``<run>/<held>``): a held directory in
    its bucket (``<run>/b<index // 100>/<held>``, this backend's) or, as an earlier version
    held it, in the run's directory."""
    quarantine = root / QUARANTINE
    held = []
    for p in quarantine.glob("*/*"):
        inside = sorted(p.iterdir()) if p.name.startswith("b") else [p]
        held += [f"{p.parent.name}/{q.name}" for q in inside]
    return sorted(held)


# -- move_out ------------------------------------------------------------------------------------


def test_move_out_moves_each_tag_into_the_run_quarantine(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    seen: list[Removal] = []
    count = move_out(root, RUN, [tag_removal(0, "old"), tag_removal(1, "older")], seen.append)
    assert count == 2 and seen == [tag_removal(0, "old"), tag_removal(1, "older")]
    assert moved(root) == [f"{RUN}/0000000", f"{RUN}/0000001"]
    assert not (v2 / "repositories/app/_manifests/tags/old").exists()
    assert (v2 / "repositories/app/_manifests/tags/latest").is_dir()


def test_symlinked_tag_directory_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    before = snapshot(outside)
    tags = v2 / "repositories/app/_manifests/tags"
    link = tags / "older"
    for p in sorted(link.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    link.rmdir()
    link.symlink_to(outside / "repositories/app/_manifests/tags/old")
    with pytest.raises(StorageError, match=r"tags/older.*symbolic link.*nothing was moved"):
        move_out(root, RUN, [tag_removal(0, "old"), tag_removal(1, "older")], lambda r: None)
    assert (tags / "old").is_dir(), "the removal before the link moved"
    assert moved(root) == []
    assert snapshot(outside) == before


def test_symlinked_manifests_tags_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    add_tag(v2, "other", "old")
    tags = v2 / "repositories/app/_manifests/tags"
    tags.rename(tmp_path / "real-tags")
    tags.symlink_to(outside / "repositories/app/_manifests/tags")
    before = snapshot(outside)
    removals = [tag_removal(0, "old", "other"), tag_removal(1, "old")]
    with pytest.raises(StorageError, match=r"_manifests/tags.*symbolic link.*nothing was moved"):
        move_out(root, RUN, removals, lambda r: None)
    assert (v2 / "repositories/other/_manifests/tags/old").is_dir()
    assert moved(root) == []
    assert snapshot(outside) == before


def test_symlinked_quarantine_pointing_outside_receives_nothing(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    (root / QUARANTINE).symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(StorageError, match=r"retentiond-quarantine is not a directory made by"):
        move_out(root, RUN, [tag_removal(0, "old")], lambda r: None)
    with pytest.raises(StorageError, match=r"retentiond-quarantine is not a directory made by"):
        check_writable(root)
    assert (v2 / "repositories/app/_manifests/tags/old").is_dir()
    assert snapshot(outside) == before


def test_symlinked_run_directory_in_the_quarantine_receives_nothing(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    (root / QUARANTINE).mkdir()
    (root / QUARANTINE / RUN).symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(StorageError, match=RUN + r" is not a directory made by retentiond"):
        move_out(root, RUN, [tag_removal(0, "old")], lambda r: None)
    assert (v2 / "repositories/app/_manifests/tags/old").is_dir()
    assert snapshot(outside) == before


def test_a_list_with_one_bad_entry_moves_nothing(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    bad = Removal(1, "tag", "app", "older", "/etc")
    with pytest.raises(StorageError, match=r"entry 1 live path '/etc' is not"):
        move_out(root, RUN, [tag_removal(0, "old"), bad], lambda r: None)
    assert (v2 / "repositories/app/_manifests/tags/old").is_dir()
    assert not (root / QUARANTINE).exists()


def test_bad_run_id_never_becomes_a_path(tmp_path: Path) -> None:
    root, _, _ = make_tree(tmp_path)
    for run_id in ("../../x", "..", "", "20261201T030000Z-1a2b3c/..", "x"):
        with pytest.raises(StorageError, match="is not a retentiond run id"):
            quarantine_dir(root, run_id)
        with pytest.raises(StorageError, match="is not a retentiond run id"):
            move_out(root, run_id, [tag_removal(0, "old")], lambda r: None)
        with pytest.raises(StorageError, match="is not a retentiond run id"):
            purge(root, run_id)


def test_new_run_ids_have_the_checked_format() -> None:
    from datetime import UTC, datetime

    run_id = new_run_id(datetime(2026, 12, 1, 3, tzinfo=UTC))
    assert run_id.startswith("20261201T030000Z-")
    assert quarantine_dir(Path("/r"), run_id) == f"/r/{QUARANTINE}/{run_id}"


# -- put_back and purge --------------------------------------------------------------------------


def test_put_back_restores_and_removes_the_run_quarantine(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    removals = [tag_removal(0, "old"), tag_removal(1, "older")]
    move_out(root, RUN, removals, lambda r: None)
    result = put_back(root, RUN, removals)
    assert result.restored == 2 and result.conflicts == []
    assert (v2 / "repositories/app/_manifests/tags/old/current/link").is_file()
    assert not (root / QUARANTINE / RUN).exists()


def test_put_back_through_a_symlinked_parent_is_refused(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    removals = [tag_removal(0, "old")]
    move_out(root, RUN, removals, lambda r: None)
    tags = v2 / "repositories/app/_manifests/tags"
    tags.rename(tmp_path / "real-tags")
    tags.symlink_to(outside / "tags")
    before = snapshot(outside)
    with pytest.raises(StorageError, match=r"_manifests/tags.*symbolic link.*nothing was put"):
        put_back(root, RUN, removals)
    assert moved(root) == [f"{RUN}/0000000"]
    assert snapshot(outside) == before


def test_a_run_held_by_an_earlier_version_is_put_back(tmp_path: Path) -> None:
    """Before the buckets, a run held each directory in its own directory: such a run (kept
    for undo, or interrupted before an upgrade) is still found, put back and removed."""
    root, v2, _ = make_tree(tmp_path)
    removals = [tag_removal(0, "old"), tag_removal(1, "older")]
    move_out(root, RUN, removals, lambda r: None)
    run_dir = root / QUARANTINE / RUN
    for held in sorted((run_dir / "b00000").iterdir()):  # as an earlier version left them
        held.rename(run_dir / held.name)
    (run_dir / "b00000").rmdir()
    assert moved(root) == [f"{RUN}/0000000", f"{RUN}/0000001"]
    result = put_back(root, RUN, removals)
    assert result.restored == 2 and result.conflicts == []
    assert (v2 / "repositories/app/_manifests/tags/older/current/link").is_file()
    assert not run_dir.exists()


def test_a_link_in_place_of_a_bucket_is_not_followed(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    (root / QUARANTINE / RUN).mkdir(parents=True)
    (root / QUARANTINE / RUN / "b00000").symlink_to(outside / "tags")
    before = snapshot(outside)
    with pytest.raises(StorageError, match=r"b00000.*symbolic link"):
        move_out(root, RUN, [tag_removal(0, "old")], lambda r: None)
    assert (v2 / "repositories/app/_manifests/tags/old/current/link").is_file()
    assert snapshot(outside) == before


def test_purge_deletes_every_bucket_and_what_an_earlier_version_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several ``find`` at once, each given some buckets; the rest by one more."""
    monkeypatch.setattr("retentiond.storage.filesystem.DELETE_CHUNK", 200)  # 2 buckets a find
    root, v2, outside = make_tree(tmp_path)
    tags = [f"t{n}" for n in range(450)]
    for tag in tags:
        add_tag(v2, "app", tag)
    move_out(root, RUN, [tag_removal(n, tag) for n, tag in enumerate(tags)], lambda r: None)
    run_dir = root / QUARANTINE / RUN
    assert sorted(p.name for p in run_dir.iterdir()) == [f"b{n:05d}" for n in range(5)]
    (run_dir / "9000000").mkdir()  # held by an earlier version
    (run_dir / "9000000" / "current").symlink_to(outside)
    before = snapshot(outside)
    purge(root, RUN)
    assert not run_dir.exists()
    assert snapshot(outside) == before


def test_purge_of_a_symlinked_quarantine_deletes_nothing_outside(tmp_path: Path) -> None:
    root, _, outside = make_tree(tmp_path)
    (outside / RUN / "0000000").mkdir(parents=True)
    (root / QUARANTINE).symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(StorageError, match="retentiond-quarantine is not a directory made by"):
        purge(root, RUN)
    assert snapshot(outside) == before


def test_purge_of_a_symlinked_run_directory_deletes_nothing_outside(tmp_path: Path) -> None:
    root, _, outside = make_tree(tmp_path)
    (root / QUARANTINE).mkdir()
    (root / QUARANTINE / RUN).symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(StorageError, match="not a directory made by retentiond"):
        purge(root, RUN)
    assert snapshot(outside) == before
    assert (root / QUARANTINE / RUN).is_symlink()


def test_purge_leaves_links_inside_the_quarantine_unfollowed(tmp_path: Path) -> None:
    root, _, outside = make_tree(tmp_path)
    held = root / QUARANTINE / RUN / "0000000"
    held.mkdir(parents=True)
    (held / "current").symlink_to(outside)
    before = snapshot(outside)
    purge(root, RUN)
    assert not (root / QUARANTINE / RUN).exists()
    assert snapshot(outside) == before


# -- lists of removals read back -----------------------------------------------------------------


def entry(**changes: Any) -> dict[str, Any]:
    return {**tag_removal(0, "old").to_json(), **changes}


BAD_ENTRIES = {
    "absolute live": (entry(live="/etc/passwd"), "live path '/etc/passwd' is not"),
    "dot-dot in live": (
        entry(live="repositories/app/_manifests/tags/../../../../../../x"),
        "is not 'repositories/app/_manifests/tags/old'",
    ),
    "dot-dot in the repository": (entry(repository="../x"), "has the component '..'"),
    "tag with a slash": (
        entry(name="a/b", live="repositories/app/_manifests/tags/a/b"),
        "not one path component",
    ),
    "tag path of the wrong shape": (
        entry(live="repositories/app/_manifests/revisions/sha256/" + HEX),
        "is not 'repositories/app/_manifests/tags/old'",
    ),
    "unknown kind": (entry(kind="blob"), "kind 'blob' is not one of"),
    "negative index": (entry(index=-1), "index -1 is not a non-negative integer"),
    "boolean index": (entry(index=True), "index True is not"),
    "string index": (entry(index="0"), "index '0' is not"),
    "extra field": ({**entry(), "held": "../x"}, "has the fields"),
    "missing field": ({k: v for k, v in entry().items() if k != "live"}, "has the fields"),
    "not an object": ("repositories/app", "is str, not an object"),
    "repository component starting with _": (
        entry(repository="app/_manifests", live="repositories/app/_manifests/_manifests/tags/old"),
        "has the component '_manifests'",
    ),
    "revision digest not matching its path": (
        {
            "index": 0,
            "kind": "revision",
            "repository": "app",
            "name": "sha256:" + OTHER,
            "live": "repositories/app/_manifests/revisions/sha256/" + HEX,
        },
        "is not 'repositories/app/_manifests/revisions/sha256/" + OTHER,
    ),
    "repository part not a part": (
        {
            "index": 0,
            "kind": "repository-part",
            "repository": "app",
            "name": "..",
            "live": "repositories/app/..",
        },
        "part '..' is not one of",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_entry_refuses_the_whole_list(case: str) -> None:
    bad, why = BAD_ENTRIES[case]
    good = tag_removal(1, "older").to_json()
    with pytest.raises(StorageError) as refused:
        parse_removals([good, bad], "removals.json")
    message = str(refused.value)
    assert message.startswith("removals.json: entry 1 ") and why in message, message
    assert "nothing was moved" in message and "\n" not in message


def test_duplicate_indexes_are_refused() -> None:
    with pytest.raises(StorageError, match="index 0 appears twice"):
        parse_removals([entry(), tag_removal(0, "older").to_json()], "f")


def test_a_list_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(StorageError, match="f is dict, not a list of removals"):
        parse_removals({"removals": []}, "f")


def test_every_kind_the_plan_makes_reads_back() -> None:
    good = [
        tag_removal(0, "v1.0"),
        Removal(
            1, "revision", "a/b", "sha256:" + HEX, live_path("revision", "a/b", "sha256:" + HEX)
        ),
        Removal(2, "repository", "a/c", "", "repositories/a/c"),
        Removal(3, "repository-part", "a", "_layers", "repositories/a/_layers"),
    ]
    assert parse_removals([r.to_json() for r in good], "f") == good


def test_quarantine_without_a_list_in_state_dir_is_not_trusted(tmp_path: Path) -> None:
    root, _, _ = make_tree(tmp_path)
    qdir = root / QUARANTINE / RUN
    qdir.mkdir(parents=True)
    (qdir / "removals.json").write_text(json.dumps([entry(live="/etc")]))
    with pytest.raises(StorageError, match=r"earlier retentiond.*not trusted.*by hand"):
        run_removals(tmp_path / "state", root, RUN)


def test_the_list_in_state_dir_is_read_back(tmp_path: Path) -> None:
    root, _, _ = make_tree(tmp_path)
    save_removals(tmp_path / "state", RUN, [entry()])
    assert run_removals(tmp_path / "state", root, RUN) == [tag_removal(0, "old")]
    assert run_removals(tmp_path / "state", root, "20261201T030000Z-000000") is None


# -- state files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "it is list, not a JSON object"),
        ('{"phase": "removing"}', "'run_id' is missing"),
        ('{"run_id": "../../x", "phase": "removing"}', "'run_id' is '../../x', not a run id"),
        (json.dumps({"run_id": RUN, "phase": 3}), "'phase' is 3, not a string"),
        (json.dumps({"run_id": RUN, "phase": "gc", "kept_tags": [["a"]]}), "'kept_tags' is"),
    ],
)
def test_malformed_journal_is_one_clear_error(tmp_path: Path, text: str, why: str) -> None:
    journal = Journal(tmp_path)
    journal.path.write_text(text)
    with pytest.raises(StorageError) as refused:
        journal.load()
    message = str(refused.value)
    assert str(journal.path) in message and why in message and "move the file away" in message


def test_history_record_with_a_hostile_run_id_is_an_error(tmp_path: Path) -> None:
    append_history(tmp_path, {"run_id": RUN, "status": "ok"})
    append_history(tmp_path, {"run_id": "../../x", "status": "ok", "held_until": None})
    with pytest.raises(StorageError, match=r"runs.jsonl line 2 .*'../../x', not a run id"):
        read_history(tmp_path)


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2]",
        '"text"',
        '{"run_id": 5}',
        json.dumps({"run_id": RUN, "gc_ran": "yes"}),
        json.dumps({"run_id": RUN, "held_until": "tomorrow"}),
    ],
)
def test_history_line_of_the_wrong_shape_is_an_error(tmp_path: Path, line: str) -> None:
    (tmp_path / "runs.jsonl").write_text(line + "\n")
    with pytest.raises(StorageError, match=r"runs.jsonl line 1 is not a run record"):
        read_history(tmp_path)


def test_history_line_nested_too_deeply_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text("[" * 100_000 + "\n")
    append_history(tmp_path, {"run_id": RUN, "status": "ok"})
    assert read_history(tmp_path) == [HistoryEntry.from_json({"run_id": RUN, "status": "ok"})]


def test_torn_history_line_is_skipped_and_the_next_record_kept(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text('{"run_id": "2026')
    append_history(tmp_path, {"run_id": RUN, "status": "ok"})
    assert read_history(tmp_path) == [HistoryEntry.from_json({"run_id": RUN, "status": "ok"})]


# -- cleaning after the GC -----------------------------------------------------------------------


def test_cleaning_follows_no_link_out_of_the_tree(tmp_path: Path) -> None:
    root, v2, outside = make_tree(tmp_path)
    evil = v2 / "repositories/evil"
    (evil / "_manifests/revisions").mkdir(parents=True)
    (evil / "_manifests/revisions/sha256").symlink_to(outside)  # empty-dir: no link inside
    (evil / "_layers").mkdir()
    (evil / "_layers/sha256").symlink_to(outside)  # OTHER: a _layers link whose blob is gone
    (v2 / "repositories/ns").symlink_to(outside / "empty-dir")  # an empty namespace
    (v2 / "blobs/sha256/zz").symlink_to(outside / "empty-dir")
    before = snapshot(outside)
    names = repository_names(root)
    assert names == ["app", "evil"]
    cleaned = clean_after_gc(root, names, {"sha256:" + HEX})
    assert snapshot(outside) == before
    assert cleaned.layer_links == 1  # app's dangling _layers link, inside the tree
    assert not (v2 / "repositories/app/_layers/sha256" / OTHER).exists()
    assert any(p.endswith("repositories/evil/_layers/sha256") for p in cleaned.skipped)
