"""The preview in a process of its own says what the same preview made here says, its read of
the frozen tree gives the inventory a read here gives, and its errors come back with their type
and message (nothing is mocked: the child is a real ``python -P -c`` of retentiond.preview)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.generate import Params, generate
from retentiond.core.protection import NO_PROTECTION
from retentiond.errors import RetentiondError, StorageError
from retentiond.policy.loader import load_policies
from retentiond.policy.model import Safety
from retentiond.preview import PreviewChild, PreviewRequest, make_preview, read_frozen
from retentiond.pulls.settings import PullsConfig
from retentiond.storage.reader import read_inventory
from tests.unit.test_reader_parallel import plan_snapshot, snapshot
from tests.unit.test_reader_reuse import push_other, records

POLICY = """\
policies:
  - name: keep-2
    repositories: ["**"]
    keep: {last: 2}
    untagged: delete
    allow_mass_delete: true
"""


def request(root: Path, tmp_path: Path) -> PreviewRequest:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return PreviewRequest(
        location=root,
        policies=tuple(load_policies([tmp_path / "policy.yaml"])),
        safety=Safety(),
        now=datetime(2026, 1, 2, tzinfo=UTC),
        read_created=False,
        gc_reads_schema1=True,
        pulls=PullsConfig(),
        state_dir=tmp_path / "state",
        protection=NO_PROTECTION,
    )


def test_the_child_answers_as_the_preview_made_here(tmp_path: Path) -> None:
    root = tmp_path / "root"
    generate(root, Params(repositories=6, tags=5, index_share=0.3, seed=3), jobs=1)
    here, plan = make_preview(request(root, tmp_path))
    with PreviewChild(request(root, tmp_path)) as child:
        answer = child.preview
    assert child._child.returncode == 0  # its input closed, it ended by itself
    assert here.to_do and plan.tags_deleted
    assert answer.summary == here.summary
    assert (answer.to_do, answer.gc_blocked, answer.gc_problems, answer.blobs) == (
        here.to_do,
        here.gc_blocked,
        here.gc_problems,
        here.blobs,
    )
    assert dict(answer.sizes) == dict(here.sizes)
    assert set(answer.sizes) == set(plan.reclaimable)  # every reclaimable blob has data here
    # the manifests it parsed stay in the child, for its frozen read
    assert answer.parsed is None and here.parsed is not None and len(here.parsed) > 30


def test_the_childs_frozen_read_is_a_read_made_here(tmp_path: Path) -> None:
    """Asked after the freeze, the child reads the tree again, taking the manifests it parsed
    for the preview: the inventory is the one a read here gives of the tree as it is then
    (here it changed in between: a repository pushed from another tree), and the child ends."""
    root, other = tmp_path / "root", tmp_path / "other"
    generate(root, Params(repositories=6, tags=5, index_share=0.3, seed=3), jobs=1)
    generate(other, Params(repositories=2, tags=3, seed=9), jobs=1)
    with PreviewChild(request(root, tmp_path)) as child:
        assert child.preview.to_do
        push_other(root, other)
        frozen = child.read_frozen()
        assert child._child.returncode == 0
    fresh = read_inventory(root)
    assert snapshot(frozen.inventory) == snapshot(fresh)
    assert records(frozen.inventory) == records(fresh)
    assert plan_snapshot(frozen.inventory) == plan_snapshot(fresh)
    assert [r.name for r in fresh.repositories if r.name.startswith("pushed-")]
    # every manifest of the preview taken again (none changed), the pushed ones parsed
    assert frozen.offered == frozen.reused > 30
    # the same read made here (an interactive apply's), after a preview made here
    here = read_frozen(root, False, make_preview(request(root, tmp_path))[0].parsed)
    assert records(here.inventory) == records(fresh)
    assert here.offered == here.reused > frozen.reused


def test_a_child_whose_frozen_read_fails_says_why(tmp_path: Path) -> None:
    root = tmp_path / "root"
    generate(root, Params(repositories=3, tags=3, seed=4), jobs=1)
    with PreviewChild(request(root, tmp_path)) as child:
        shutil.rmtree(root)
        with pytest.raises(StorageError) as error:
            child.read_frozen()
    assert str(root) in str(error.value)
    with pytest.raises(StorageError) as here:
        read_inventory(root)
    assert str(error.value) == str(here.value)


def test_an_error_in_the_child_is_raised_here_with_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    with pytest.raises(StorageError) as here:
        make_preview(request(missing, tmp_path))
    with pytest.raises(StorageError) as child:
        PreviewChild(request(missing, tmp_path))
    assert str(child.value) == str(here.value)
    assert str(missing) in str(child.value)


def test_a_child_that_dies_before_reading_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that cannot start (here: a Python that exits at once) says so; a request larger
    than a pipe's buffer does not hang or crash on the broken pipe."""
    from retentiond import preview

    monkeypatch.setattr(preview, "_CHILD", "import sys; sys.exit(3)")
    big = request(tmp_path, tmp_path)
    big = PreviewRequest(**{**big.__dict__, "policies": tuple(big.policies) * 2000})  # ~MBs pickled
    with pytest.raises(RetentiondError, match="exited 3; nothing was changed"):
        PreviewChild(big)


@pytest.mark.parametrize("status", [0, 5])
def test_a_child_that_ends_in_the_middle_of_its_answer_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """The answer is read as the child writes it: one cut short (the child killed while it
    wrote, here: the first half of a real answer, then an exit) is an error, whatever the
    child's status, and nothing of it is used."""
    from retentiond import preview

    root = tmp_path / "root"
    generate(root, Params(repositories=4, tags=3, seed=5), jobs=1)
    answer = pickle.dumps(("preview", make_preview(request(root, tmp_path))[0]), protocol=5)
    (tmp_path / "half").write_bytes(answer[: len(answer) // 2])
    monkeypatch.setattr(
        preview,
        "_CHILD",
        "import pickle, sys; pickle.load(sys.stdin.buffer); "
        f"sys.stdout.buffer.write(open({str(tmp_path / 'half')!r}, 'rb').read()); "
        f"sys.exit({status})",
    )
    with pytest.raises(RetentiondError, match=f"exited {status}; nothing was changed"):
        PreviewChild(request(root, tmp_path))


def test_a_child_that_dies_in_the_frozen_read_is_an_error(tmp_path: Path) -> None:
    """A child that answered the preview, then is killed before it answers the frozen read
    (the out-of-memory killer, a stop: here a real SIGKILL to the real child) is an error that
    says so; nothing of it is used."""
    root = tmp_path / "root"
    generate(root, Params(repositories=4, tags=3, seed=5), jobs=1)
    with PreviewChild(request(root, tmp_path)) as child:
        assert child.preview.to_do
        os.kill(child._child.pid, signal.SIGKILL)
        child._child.wait()
        with pytest.raises(RetentiondError, match="killed by signal 9; nothing was removed"):
            child.read_frozen()
