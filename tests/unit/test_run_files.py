"""A run's own files in state_dir (retentiond.run_files): written whole, read back checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from retentiond.core.blob_table import BlobTable
from retentiond.errors import StorageError
from retentiond.run_files import (
    KEEP_FINISHED,
    drop_removals,
    finish_files,
    load_removals,
    migrate_legacy,
    read_deleted_tags,
    read_kept,
    read_reclaimable,
    removal_batches,
    removals_path,
    run_dir,
    save_removals,
    write_deleted,
    write_kept,
    write_reclaimable,
)
from retentiond.run_records import DeletedTag, JournalEntry, KeptTag, Phase, UnlinkedManifest

RUN = "20261201T030000Z-1a2b3c"


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def test_removals_round_trip_one_line_each(tmp_path: Path) -> None:
    items = [{"index": i, "kind": "tag"} for i in range(10_000)]
    assert save_removals(tmp_path, RUN, iter(items)) == 10_000
    path = run_dir(tmp_path, RUN) / "removals.jsonl"
    assert path.read_text().count("\n") == 10_000
    assert load_removals(tmp_path, RUN) == items
    assert not list(path.parent.glob(".*.tmp"))
    drop_removals(tmp_path, RUN)
    assert load_removals(tmp_path, RUN) is None


def test_removals_of_an_earlier_version_are_read(tmp_path: Path) -> None:
    legacy = tmp_path / "removals" / f"{RUN}.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps([{"index": 0}]))
    assert removals_path(tmp_path, RUN) == legacy
    assert load_removals(tmp_path, RUN) == [{"index": 0}]
    drop_removals(tmp_path, RUN)
    assert not legacy.exists()


def test_a_cut_line_is_refused(tmp_path: Path) -> None:
    save_removals(tmp_path, RUN, [{"index": 0}, {"index": 1}])
    path = run_dir(tmp_path, RUN) / "removals.jsonl"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(StorageError, match="cut line"):
        load_removals(tmp_path, RUN)


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    here = run_dir(tmp_path, RUN)
    here.mkdir(parents=True)
    os.mkfifo(here / "kept.jsonl")
    with pytest.raises(StorageError, match="not a regular file"):
        list(read_kept(tmp_path, RUN))


def test_a_bad_run_id_never_becomes_a_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a retentiond run id"):
        run_dir(tmp_path, "../../etc")


def test_kept_and_deleted_round_trip(tmp_path: Path) -> None:
    kept = [("a", "v1", digest(1)), ("b", "v2", digest(2))]
    write_kept(tmp_path, RUN, iter(kept))
    assert list(read_kept(tmp_path, RUN)) == kept
    write_deleted(
        tmp_path,
        RUN,
        [
            ["tag", "a", "old", "p"],
            ["manifest", "a", digest(3), None],
            ["repository", "c", "", None],
        ],
    )
    assert list(read_deleted_tags(tmp_path, RUN)) == [("a", "old")]


def test_a_kept_row_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    here = run_dir(tmp_path, RUN)
    here.mkdir(parents=True)
    (here / "kept.jsonl").write_text('["a", 1, "x"]\n')
    with pytest.raises(StorageError, match="line 1"):
        list(read_kept(tmp_path, RUN))


def test_reclaimable_round_trip_and_checksum(tmp_path: Path) -> None:
    table = BlobTable.from_items((digest(n * 7919), n) for n in range(1, 500))
    write_reclaimable(tmp_path, RUN, table)
    back = read_reclaimable(tmp_path, RUN)
    assert back is not None and dict(back.items()) == dict(table.items())
    path = run_dir(tmp_path, RUN) / "reclaimable.bin"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksum"):
        read_reclaimable(tmp_path, RUN)
    assert read_reclaimable(tmp_path, "20261201T030000Z-000000") is None


def test_finish_keeps_the_record_and_the_newest_runs(tmp_path: Path) -> None:
    runs = [f"20261201T{n:06d}Z-1a2b3c" for n in range(KEEP_FINISHED + 5)]
    for run in runs:
        write_deleted(tmp_path, run, [["tag", "a", "t", None]])
        write_kept(tmp_path, run, [("a", "u", digest(1))])
    save_removals(tmp_path, runs[0], [{"index": 0}])  # held: kept whatever its age
    finish_files(tmp_path, runs[-1])
    left = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert left == [runs[0], *runs[-KEEP_FINISHED:]]
    assert not (run_dir(tmp_path, runs[-1]) / "kept.jsonl").exists()
    assert (run_dir(tmp_path, runs[-1]) / "deleted.jsonl").exists()


def test_a_journal_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    entry = JournalEntry(
        run_id=RUN,
        phase=Phase.GC_DONE,
        reclaimable={digest(5): 100, digest(4): 50},
        deleted_tags=[DeletedTag("a", "old", "p"), DeletedTag("a", "older", "p")],
        unlinked=[UnlinkedManifest("a", digest(3), None)],
        repositories_removed=[],
        kept_tags=[KeptTag("a", "v1", digest(1))],
    )
    assert migrate_legacy(tmp_path, entry)
    assert entry.kept_tags is None and entry.reclaimable is None
    assert entry.removed == {"tags": 2, "manifests": 1, "repositories": 0}
    assert entry.removed_by_policy == {"tags": {"p": 2}, "manifests": {"": 1}}
    assert list(read_kept(tmp_path, RUN)) == [("a", "v1", digest(1))]
    assert list(read_deleted_tags(tmp_path, RUN)) == [("a", "old"), ("a", "older")]
    back = read_reclaimable(tmp_path, RUN)
    assert back is not None and dict(back.items()) == {digest(4): 50, digest(5): 100}
    assert not migrate_legacy(tmp_path, entry)
    assert "kept_tags" not in entry.to_json()


def _removal(index: int, tag: str) -> dict[str, object]:
    return {
        "index": index,
        "kind": "tag",
        "repository": "app",
        "name": tag,
        "live": f"repositories/app/_manifests/tags/{tag}",
    }


def test_removals_come_back_in_batches(tmp_path: Path) -> None:
    save_removals(tmp_path, RUN, (_removal(i, f"t{i}") for i in range(25)))
    batches = list(removal_batches(tmp_path, RUN, 10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [r.name for b in batches for r in b] == [f"t{i}" for i in range(25)]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({**_removal(1, "b"), "live": "/etc"}, "entry 1 live path"),
        (_removal(7, "b"), "entry 1 has the index 7, not 1"),
    ],
)
def test_a_bad_removal_stops_its_batch_before_a_move(
    tmp_path: Path, entry: dict[str, object], why: str
) -> None:
    save_removals(tmp_path, RUN, [_removal(0, "a"), entry])
    with pytest.raises(StorageError, match=why) as raised:
        list(removal_batches(tmp_path, RUN, 10))
    assert "nothing was moved" in str(raised.value)


# -- the lines are what json writes and reads ------------------------------------------------------

ODD = ["", 'a"b\\c', "tab\there", "new\nline", "é-ünïcode", "\u2028", "\x00\x1f", "🐳", "/"]


def test_the_lines_written_are_what_json_writes(tmp_path: Path) -> None:
    """The removals, kept and deleted lists are formatted without ``json.dumps`` (they are
    written in the read-only window); the text is the same, whatever the strings hold."""
    from retentiond.storage.removal_list import Removal

    compact = json.JSONEncoder(separators=(",", ":")).encode
    removals = [Removal(i, "tag", f"r{odd}", odd, f"live/{odd}") for i, odd in enumerate(ODD)]
    save_removals(tmp_path, RUN, removals)
    path = run_dir(tmp_path, RUN) / "removals.jsonl"
    assert path.read_text().splitlines() == [compact(r.to_json()) for r in removals]
    kept = [(f"r{odd}", odd, f"sha256:{odd}") for odd in ODD]
    write_kept(tmp_path, RUN, kept)
    assert (run_dir(tmp_path, RUN) / "kept.jsonl").read_text().splitlines() == [
        compact(list(row)) for row in kept
    ]
    deleted = [["tag", f"r{odd}", odd, None if i % 2 else odd] for i, odd in enumerate(ODD)]
    deleted.append(["repository", "x", "", 7])  # type: ignore[list-item]  # (as json would)
    write_deleted(tmp_path, RUN, deleted)
    assert (run_dir(tmp_path, RUN) / "deleted.jsonl").read_text().splitlines() == [
        compact(row) for row in deleted
    ]


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a":1}\n', b"  \n", b' {"b":2} \n', b'{"c":\n', b"3}\n"],  # a value across lines
        [b'["x"]\r\n', b'"\xc3\xa9"\n', b"[1,\n"],
        [b'"a", "b\n', b'c"\n'],  # joined, these would be JSON; alone, neither is
        [b"\xef\xbb\xbf[1]\n", b"NaN\n", b"[1] [2]\n"],
        [b"[" * 5000 + b"]" * 5000 + b"\n"],
    ],
)
@pytest.mark.parametrize("hint", [1 << 20, 8])  # lines read a few at a time, or one by one
def test_each_line_is_read_as_json_loads_reads_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[bytes], hint: int
) -> None:
    from retentiond import run_files
    from retentiond.run_files import read_lines

    monkeypatch.setattr(run_files, "_READ_HINT", hint)
    path = tmp_path / "list.jsonl"
    path.write_bytes(b"".join(lines))
    expected: list[tuple[int, object]] = []
    error: str | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            expected.append((number, json.loads(line)))
        except (ValueError, RecursionError):
            error = f"line {number} is not valid JSON"
            break
    read: list[tuple[int, object]] = []
    if error is None:
        read = list(read_lines(path, "the list"))
    else:
        with pytest.raises(StorageError, match=error):
            for item in read_lines(path, "the list"):
                read.append(item)
    assert read == expected
