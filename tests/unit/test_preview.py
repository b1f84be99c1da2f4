"""The preview in a process of its own says what the same preview made here says, and its
errors come back with their type and message (nothing is mocked: the child is a real
``python -m retentiond.preview``)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.generate import Params, generate
from retentiond.core.protection import NO_PROTECTION
from retentiond.errors import RetentiondError, StorageError
from retentiond.policy.loader import load_policies
from retentiond.policy.model import Safety
from retentiond.preview import PreviewRequest, make_preview, preview_in_child
from retentiond.pulls.settings import PullsConfig

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
    child = preview_in_child(request(root, tmp_path))
    assert here.to_do and plan.tags_deleted
    assert child.summary == here.summary
    assert (child.to_do, child.gc_blocked, child.gc_problems) == (
        here.to_do,
        here.gc_blocked,
        here.gc_problems,
    )
    assert dict(child.sizes) == dict(here.sizes)
    assert set(child.sizes) == set(plan.reclaimable)  # every reclaimable blob has data here
    # the manifests it parsed come back for the frozen read to take
    assert child.parsed is not None and here.parsed is not None
    assert child.parsed == here.parsed and len(child.parsed) > 30


def test_an_error_in_the_child_is_raised_here_with_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    with pytest.raises(StorageError) as here:
        make_preview(request(missing, tmp_path))
    with pytest.raises(StorageError) as child:
        preview_in_child(request(missing, tmp_path))
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
        preview_in_child(big)


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
        "import sys; sys.stdin.buffer.read(); "
        f"sys.stdout.buffer.write(open({str(tmp_path / 'half')!r}, 'rb').read()); "
        f"sys.exit({status})",
    )
    with pytest.raises(RetentiondError, match=f"exited {status}; nothing was changed"):
        preview_in_child(request(root, tmp_path))
