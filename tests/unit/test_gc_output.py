"""GcDeletions on the output of the real registry 2.8.2 GC, and the runtime's line cutting.

``tests/data/gc_output`` holds what Debian's docker-registry 2.8.2 printed (stdout and stderr
merged, as a pipe gives them, log level info) collecting a small generated tree after a
``keep: {last: 2}`` plan's removals: ``dry-run-2.8.2.txt`` with ``--dry-run``, ``real-2.8.2.txt``
without (it deleted the blobs), and ``blob-sizes.json``: every blob of the tree before the GC
(digest -> size) and the plan's reclaimable digests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retentiond.core.blob_table import BlobTable
from retentiond.core.gc_output import ELIGIBLE_PREFIX, UNEXPECTED_SAMPLE, GcDeletions
from retentiond.runtime.base import GcLines, LineCutter

DATA = Path(__file__).resolve().parents[1] / "data" / "gc_output"
SAMPLE = json.loads((DATA / "blob-sizes.json").read_text())
SIZES: dict[str, int] = SAMPLE["blobs"]
RECLAIMABLE: list[str] = SAMPLE["reclaimable"]


def output(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def eligible_digests(lines: list[str]) -> set[str]:
    return {
        line.removeprefix(ELIGIBLE_PREFIX) for line in lines if line.startswith(ELIGIBLE_PREFIX)
    }


def parsed(lines: list[str], reclaimable: dict[str, int]) -> GcDeletions:
    deletions = GcDeletions(BlobTable.from_items(reclaimable.items()))
    for line in lines:
        deletions.feed(line)
    return deletions


@pytest.mark.parametrize("name", ["dry-run-2.8.2.txt", "real-2.8.2.txt"])
def test_the_real_gc_output_is_understood_whole(name: str) -> None:
    lines = output(name)
    reclaimable = {d: SIZES[d] for d in RECLAIMABLE}
    deletions = parsed(lines, reclaimable)
    assert eligible_digests(lines) == set(RECLAIMABLE), "the sample: the plan equals the GC"
    assert deletions.understood
    assert deletions.summary_marked == len(SIZES) - len(RECLAIMABLE)
    assert deletions.summary_eligible == deletions.eligible == deletions.blobs == len(RECLAIMABLE)
    assert deletions.summary_manifests == 0
    assert deletions.bytes == sum(reclaimable.values())
    assert deletions.prefixes == {d[7:9] for d in RECLAIMABLE}
    assert deletions.unexpected_count == 0 and deletions.unexpected == []
    assert deletions.missed == 0


def test_the_real_gc_prints_a_log_line_per_deleted_blob_that_is_ignored() -> None:
    lines = output("real-2.8.2.txt")
    logged = [line for line in lines if "Deleting blob:" in line]
    assert len(logged) == len(RECLAIMABLE) and all(line.startswith("time=") for line in logged)
    # without them, the same lines as the dry run's (the eligible ones in another order)
    without_logs = [line for line in lines if line not in logged]
    dry = output("dry-run-2.8.2.txt")
    assert sorted(without_logs) == sorted(dry)


def test_blobs_the_plan_did_not_expect_are_counted_apart() -> None:
    expected = RECLAIMABLE[3:]
    deletions = parsed(output("real-2.8.2.txt"), {d: SIZES[d] for d in expected})
    assert deletions.understood, "the output is whole, whatever the plan expected"
    assert deletions.eligible == len(RECLAIMABLE)
    assert deletions.blobs == len(expected)
    assert deletions.bytes == sum(SIZES[d] for d in expected)
    assert deletions.unexpected_count == 3
    assert sorted(deletions.unexpected) == sorted(RECLAIMABLE[:3])
    assert deletions.prefixes == {d[7:9] for d in RECLAIMABLE}


def test_the_plan_expected_more_than_the_gc_collected() -> None:
    extra = "sha256:" + "ab" * 32
    reclaimable = {d: SIZES[d] for d in RECLAIMABLE} | {extra: 5}
    deletions = parsed(output("dry-run-2.8.2.txt"), reclaimable)
    assert deletions.understood and deletions.missed == 1
    assert deletions.bytes == sum(SIZES[d] for d in RECLAIMABLE)


def test_the_unexpected_sample_is_bounded() -> None:
    lines = [f"{ELIGIBLE_PREFIX}sha256:{n:064x}" for n in range(UNEXPECTED_SAMPLE + 5)]
    summary = f"9 blobs marked, {len(lines)} blobs and 0 manifests eligible for deletion"
    deletions = parsed([summary, *lines], {})
    assert deletions.understood and deletions.unexpected_count == len(lines)
    assert deletions.unexpected == [line.removeprefix(ELIGIBLE_PREFIX) for line in lines][:20]
    assert deletions.prefixes == {"00"}


def test_a_cut_output_is_not_understood() -> None:
    lines = output("real-2.8.2.txt")
    last_eligible = max(i for i, line in enumerate(lines) if line.startswith(ELIGIBLE_PREFIX))
    deletions = parsed(lines[:last_eligible], {d: SIZES[d] for d in RECLAIMABLE})
    assert deletions.summary_eligible == len(RECLAIMABLE)
    assert deletions.eligible == len(RECLAIMABLE) - 1 and not deletions.understood


def test_a_failed_gc_is_not_understood() -> None:
    # what 2.8.2 prints on a tree that never received a push
    deletions = GcDeletions({})
    deletions.feed("failed to mark: filesystem: Path not found: /docker/registry/v2/repositories")
    assert deletions.summary_eligible is None and not deletions.understood


def test_registry_3_lines_are_read_and_its_layer_link_lines_ignored() -> None:
    # distribution v3.1.1 registry/storage/garbagecollect.go prints the same summary and
    # eligible lines, and a `<repo>: layer link eligible for deletion: <digest>` line per link
    digest = "sha256:" + "c0" * 32
    deletions = GcDeletions({digest: 7})
    for line in (
        "team/app",
        f"team/app: marking manifest {'sha256:' + '11' * 32} ",
        "",
        "1 blobs marked, 1 blobs and 0 manifests eligible for deletion",
        f"{ELIGIBLE_PREFIX}{digest}",
        f"team/app: layer link eligible for deletion: {digest}",
    ):
        deletions.feed(line)
    assert deletions.understood and (deletions.eligible, deletions.bytes) == (1, 7)


def test_lines_with_their_line_end_and_odd_digests() -> None:
    deletions = GcDeletions({})
    deletions.feed("0 blobs marked, 2 blobs and 0 manifests eligible for deletion\n")
    deletions.feed(f"{ELIGIBLE_PREFIX}sha256:{'e1' * 32}\r\n")
    deletions.feed(f"{ELIGIBLE_PREFIX}sha256:..{'e' * 62}\n")  # never a directory name
    assert deletions.understood and deletions.unexpected_count == 2
    assert deletions.prefixes == {"e1"}
    assert deletions.unexpected[0] == f"sha256:{'e1' * 32}"


# ------------------------------------------------------------------------------------------
# the runtime's cutting of output chunks into lines


def test_chunks_cut_anywhere_give_whole_lines() -> None:
    text = "".join(f"{line}\n" for line in output("real-2.8.2.txt")) + "é last without end"
    data = text.encode()
    got: list[str] = []
    cutter = LineCutter(got.append)
    for start in range(0, len(data), 7):  # cuts inside lines and inside the two-byte é
        cutter.feed(data[start : start + 7])
    cutter.close()
    assert got == text.split("\n")


def test_gc_lines_keep_only_the_tail_and_count_every_line() -> None:
    seen: list[str] = []
    lines = GcLines(seen.append, tail=3)
    out, err = lines.stream(), lines.stream()
    out.feed(b"one\ntw")
    err.feed(b"err")
    out.feed(b"o\nthree\n")
    err.feed(b"or\n")
    out.feed(b"four\n")
    out.close()
    err.close()
    assert seen == ["one", "two", "three", "error", "four"]
    assert lines.count == 5 and lines.output == "three\nerror\nfour"


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    got: list[str] = []
    cutter = LineCutter(got.append)
    cutter.feed(b"bad \xff byte\n")
    cutter.close()
    assert got == ["bad \ufffd byte"]


def test_v3_layer_link_lines_name_the_repositories_that_lost_a_link_to_a_surviving_blob() -> None:
    """3.x prints ``<repo>: layer link eligible for deletion: <digest>`` after the blob lines
    (registry/storage/garbagecollect.go at v3.1.1): a link to a blob it deleted needs nothing
    more, a link to a blob that survives (another repository uses it) names a repository whose
    redis entries must be forgotten."""
    gone = "sha256:" + "a" * 64
    survives = "sha256:" + "b" * 64
    deletions = GcDeletions(BlobTable.from_items([(gone, 10)]))
    for line in [
        "1 blobs marked, 1 blobs and 0 manifests eligible for deletion",
        f"blob eligible for deletion: {gone}",
        f"app: layer link eligible for deletion: {gone}",
        f"app: layer link eligible for deletion: {survives}",
        f"team/web: layer link eligible for deletion: {gone}",
        'time=... level=info msg="something: layer link eligible for deletion: nothing"',
    ]:
        deletions.feed(line)
    assert deletions.understood
    assert deletions.blobs == 1
    assert deletions.layer_links == 3
    assert deletions.unlinked_repositories == {"app"}
