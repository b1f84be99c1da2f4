"""``move_out`` checks each parent once and looks a directory of many removals up in one
listing; it skips the check of names already held on a fresh run only: on real files, a run
interrupted between two moves is finished by a second attempt or rolled back by ``put_back``,
and a link in the way still refuses the whole list."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from retentiond.errors import StorageError
from retentiond.storage.layout import QUARANTINE
from retentiond.storage.removal import move_out, put_back
from retentiond.storage.removal_list import Removal
from tests.unit.test_removal_paths import RUN, add_tag, make_tree, moved, snapshot, tag_removal

MANY = [f"t{n:02d}" for n in range(20)]


def many_tags(v2: Path) -> list[Removal]:
    """Twenty tags of ``app`` to remove: more than a directory is stat'ed for one by one."""
    for tag in MANY:
        add_tag(v2, "app", tag)
    return [tag_removal(n, tag) for n, tag in enumerate(MANY)]


class Killed(Exception):
    pass


def kill_after(count: int) -> Callable[[Removal], None]:
    seen: list[Removal] = []

    def done(removal: Removal) -> None:
        seen.append(removal)
        if len(seen) == count:
            raise Killed

    return done


def test_many_removals_of_one_directory_are_moved(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    removals = many_tags(v2)
    (v2 / "repositories/app/_manifests/tags/t03").rename(tmp_path / "gone")  # gone already
    assert move_out(root, RUN, removals, lambda r: None) == 19
    assert len(moved(root)) == 19
    assert sorted(p.name for p in (v2 / "repositories/app/_manifests/tags").iterdir()) == [
        "latest",
        "old",
        "older",
    ]


@pytest.mark.parametrize("what", ["symbolic link", "regular file", "FIFO"])
def test_one_entry_in_the_way_among_many_moves_nothing(tmp_path: Path, what: str) -> None:
    root, v2, outside = make_tree(tmp_path)
    removals = many_tags(v2)
    tags = v2 / "repositories/app/_manifests/tags"
    victim = tags / "t17"
    for p in sorted(victim.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    victim.rmdir()
    if what == "symbolic link":
        victim.symlink_to(outside / "repositories/app/_manifests/tags/old")
    elif what == "regular file":
        victim.write_text("x")
    else:
        os.mkfifo(victim)
    before = snapshot(outside)
    with pytest.raises(StorageError, match=rf"tags/t17 is a {what}.*nothing was moved"):
        move_out(root, RUN, removals, lambda r: None)
    assert moved(root) == []
    assert (tags / "t00").is_dir()
    assert snapshot(outside) == before


def test_an_attempt_killed_between_two_moves_is_finished_by_the_next(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    removals = many_tags(v2)
    with pytest.raises(Killed):
        move_out(root, RUN, removals, kill_after(7))
    assert len(moved(root)) == 7
    assert move_out(root, RUN, removals, lambda r: None) == 13
    assert moved(root) == [f"{RUN}/{n:07d}" for n in range(20)]


def test_an_attempt_killed_between_two_moves_is_rolled_back(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    removals = many_tags(v2)
    before = snapshot(v2)
    with pytest.raises(Killed):
        move_out(root, RUN, removals, kill_after(11))
    result = put_back(root, RUN, removals)
    assert result.restored == 11 and result.conflicts == []
    assert snapshot(v2) == before
    assert not (root / QUARANTINE / RUN).exists()


def test_a_resumed_attempt_never_moves_onto_a_name_already_held(tmp_path: Path) -> None:
    root, v2, _ = make_tree(tmp_path)
    removals = [tag_removal(0, "old"), tag_removal(1, "older")]
    with pytest.raises(Killed):
        move_out(root, RUN, removals, kill_after(1))
    held = root / QUARANTINE / RUN / "0000000"
    held_before = snapshot(held)
    add_tag(v2, "app", "old", "ef" * 32)  # pushed again before the attempt is resumed
    assert move_out(root, RUN, removals, lambda r: None) == 1
    assert snapshot(held) == held_before
    assert (v2 / "repositories/app/_manifests/tags/old/current/link").read_text() == (
        "sha256:" + "ef" * 32
    )
    assert moved(root) == [f"{RUN}/0000000", f"{RUN}/0000001"]
