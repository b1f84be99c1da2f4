"""`undo`, `apply` and crash recovery trust nothing found under the storage root, and a state
file of the wrong shape is a clear one-line error, never a move (issue 12).

Each scenario runs the real CLI (`python -m retentiond`) and checks what a user sees: the exit
code, a one-line message, the tree unchanged, a sentinel directory outside the root untouched,
and, where a real registry is involved, the kept images still pulling.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from retentiond.run_files import save_removals
from retentiond.storage.filesystem import held_on_disk
from retentiond.storage.layout import QUARANTINE
from retentiond.storage.removal import move_out
from retentiond.storage.removal_list import Removal, live_path
from tests.harness.images import pull_ok, push_oci_image
from tests.harness.registry import RunningRegistry
from tests.harness.tree import copy_tree, set_pushed_at, tag_dir
from tests.integration.test_apply import KEEP_LATEST, ago, make_setup
from tests.unit.test_removal_paths import add_tag, snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN = "20261201T030000Z-1a2b3c"


def retentiond(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]  # JSON logs
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]


class Held:
    """A storage root (built by hand), a run ``RUN`` that moved ``app:old`` into its
    quarantine (with --no-gc: undo is still possible), and a sentinel directory outside."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.v2 = self.root / "docker/registry/v2"
        self.state = tmp_path / "state"
        self.outside = tmp_path / "outside"
        for tag in ("old", "latest"):
            add_tag(self.v2, "app", tag)
        add_tag(self.outside, "app", "old")
        (self.outside / "secret").write_text("not retentiond's")
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies/p.yaml").write_text(
            "policies:\n  - name: app\n    repositories: [app]\n    keep: {tags: [latest]}\n"
        )
        self.config = tmp_path / "retentiond.yaml"
        self.config.write_text(
            json.dumps(
                {
                    "registry": {"root": str(self.root), "url": "http://127.0.0.1:9"},
                    "runtime": {"kind": "none"},
                    "policies": ["policies/"],
                    "state_dir": str(self.state),
                    "log": {"format": "json"},
                }
            )
        )
        self.removal = Removal(0, "tag", "app", "old", live_path("tag", "app", "old"))
        save_removals(self.state, RUN, [self.removal.to_json()])
        move_out(self.root, RUN, [self.removal], lambda r: None)
        self.history(
            {
                "run_id": RUN,
                "status": "ok",
                "gc_ran": False,
                "purged": False,
                "held_until": "2099-01-01T00:00:00Z",
            }
        )
        self.before = self.snapshot()

    def history(self, *records: dict[str, Any]) -> None:
        with (self.state / "runs.jsonl").open("a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")

    def snapshot(self) -> dict[str, Any]:
        return {"root": snapshot(self.root), "outside": snapshot(self.outside)}

    def write_removals(self, entries: list[Any]) -> Path:
        path = self.removals
        path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
        return path

    @property
    def removals(self) -> Path:
        """Where the run's list of removals is (retentiond.run_files)."""
        return self.state / "runs" / RUN / "removals.jsonl"

    def assert_unchanged(self) -> None:
        assert self.snapshot() == self.before
        assert (self.root / QUARANTINE / held_on_disk(f"{RUN}/0000000")).is_dir()
        assert not tag_dir(self.root, "app", "old").exists()


@pytest.fixture
def held(tmp_path: Path) -> Held:
    return Held(tmp_path)


# -- undo: the list of removals comes from state_dir and is checked whole ------------------------


def test_undo_puts_back_what_state_dir_lists(held: Held) -> None:
    proc = retentiond(held.config, "undo", RUN)
    assert proc.returncode == 0, proc.stderr
    assert f"run {RUN}: put back 1 of 1 removals" in proc.stdout
    assert tag_dir(held.root, "app", "old").is_dir()
    assert not (held.root / QUARANTINE / RUN).exists()
    assert not held.removals.exists()


def test_undo_refuses_a_removal_with_an_absolute_live_path(held: Held) -> None:
    path = held.write_removals([{**held.removal.to_json(), "live": str(held.outside / "app")}])
    proc = retentiond(held.config, "undo", RUN)
    assert_one_line_error(proc, 1, str(path), "entry 0 live path", "nothing was moved")
    held.assert_unchanged()


def test_undo_refuses_a_removal_with_dot_dot(held: Held) -> None:
    live = "repositories/app/_manifests/tags/../../../../../../../outside/app"
    path = held.write_removals([{**held.removal.to_json(), "live": live}])
    proc = retentiond(held.config, "undo", RUN)
    assert_one_line_error(proc, 1, str(path), "entry 0", "'repositories/app/_manifests/tags/old'")
    held.assert_unchanged()


def test_undo_refuses_a_tag_path_of_the_wrong_shape(held: Held) -> None:
    good = {
        **held.removal.to_json(),
        "index": 1,
        "name": "latest",
        "live": live_path("tag", "app", "latest"),
    }
    wrong = {**held.removal.to_json(), "live": "repositories/app/_layers/sha256/" + "ab" * 32}
    path = held.write_removals([good, wrong])
    proc = retentiond(held.config, "undo", RUN)
    assert_one_line_error(proc, 1, str(path), "entry 1", "the tag's place", "refused whole")
    held.assert_unchanged()


def test_undo_refuses_a_list_that_is_not_json(held: Held) -> None:
    path = held.removals
    path.write_text('{"index": 0, "kind": "tag"\n')
    proc = retentiond(held.config, "undo", RUN)
    assert_one_line_error(proc, 1, str(path), "is not valid JSON", "nothing was moved")
    held.assert_unchanged()


def test_undo_argument_dot_dot_is_a_usage_error(held: Held) -> None:
    proc = retentiond(held.config, "undo", "../../outside")
    assert_one_line_error(proc, 2, "'../../outside' is not a retentiond run id")
    held.assert_unchanged()


def test_run_id_dot_dot_in_runs_jsonl_is_refused_by_undo_and_apply(held: Held) -> None:
    # a purge of this record would rmtree <root>/retentiond-quarantine/../../outside
    held.history({"run_id": "../../outside", "status": "ok", "held_until": "2000-01-01T00:00:00Z"})
    for args in (("undo", RUN), ("apply", "--yes")):
        proc = retentiond(held.config, *args)
        assert_one_line_error(
            proc,
            1,
            f"{held.state}/runs.jsonl line 2",
            "'../../outside', not a run id",
            "fix or delete that line",
        )
        held.assert_unchanged()


def test_undo_of_an_old_style_run_refuses_and_says_what_to_do(held: Held) -> None:
    """A run made by the previous version: its list is only in the quarantine."""
    held.removals.unlink()
    listing = held.root / QUARANTINE / RUN / "removals.json"
    listing.write_text(json.dumps([{**held.removal.to_json(), "live": "/etc"}]))
    held.before = held.snapshot()
    proc = retentiond(held.config, "undo", RUN)
    assert_one_line_error(
        proc, 1, "earlier retentiond", str(listing), "not trusted", "back by hand"
    )
    held.assert_unchanged()


# -- crash recovery at apply's start: a state file of the wrong shape changes nothing -----------


@pytest.mark.parametrize(
    ("shape", "text", "why"),
    [
        ("not-json", '{"run_id": "' + RUN + '", "phase": "remov', "is not valid JSON"),
        ("a-list", json.dumps([RUN, "removing"]), "it is list, not a JSON object"),
        (
            "missing-and-wrong-keys",
            json.dumps({"run_id": RUN, "durations": "fast"}),
            "'phase' is missing",
        ),
        (
            "wrong-types",
            json.dumps({"run_id": RUN, "phase": "removing", "gc_ran": "no"}),
            "'gc_ran' is 'no', not true or false",
        ),
    ],
)
def test_malformed_journal_at_apply_start_changes_nothing(
    held: Held, shape: str, text: str, why: str
) -> None:
    journal = held.state / "journal.json"
    journal.write_text(text)
    proc = retentiond(held.config, "apply", "--yes")
    assert_one_line_error(proc, 1, str(journal), why, "move the file away")
    held.assert_unchanged()
    assert journal.read_text() == text


def test_fifo_as_journal_is_an_error_not_a_hang(held: Held) -> None:
    journal = held.state / "journal.json"
    os.mkfifo(journal)
    proc = subprocess.run(
        [sys.executable, "-m", "retentiond", "--config", str(held.config), "apply", "--yes"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert_one_line_error(proc, 1, str(journal), "a FIFO, not a regular file", "move it away")
    held.assert_unchanged()


def test_journal_nested_too_deeply_is_one_clear_error(held: Held) -> None:
    journal = held.state / "journal.json"
    journal.write_text("[" * 100_000 + "]" * 100_000)
    proc = retentiond(held.config, "apply", "--yes")
    assert_one_line_error(proc, 1, str(journal), "is not valid JSON (nested too deeply)")
    held.assert_unchanged()


def test_malformed_removals_list_at_recovery_changes_nothing(held: Held) -> None:
    """A run killed while removing is rolled back from state_dir's list: a bad entry there
    stops the rollback before anything moves."""
    (held.state / "journal.json").write_text(json.dumps({"run_id": RUN, "phase": "removing"}))
    path = held.write_removals([{**held.removal.to_json(), "live": "../../../outside/app"}])
    proc = retentiond(held.config, "apply", "--yes")
    assert_one_line_error(proc, 1, str(path), "entry 0", "nothing was moved")
    held.assert_unchanged()


# -- apply against a real registry ---------------------------------------------------------------


def seed(registry: RunningRegistry) -> None:
    push_oci_image(registry, "app", "old", layers=[b"old" * 300], seed="old")
    push_oci_image(registry, "app", "latest", layers=[b"latest"], seed="latest")
    set_pushed_at(registry.root, "app", "old", ago(5))


def sentinel(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep/file").write_text("not retentiond's")
    return outside


def test_symlinked_quarantine_pointing_outside_is_refused_before_the_freeze(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    seed(registry)
    outside = sentinel(tmp_path)
    before = snapshot(outside)
    (registry.root / QUARANTINE).symlink_to(outside)
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    proc = setup.run("apply", "--yes", check=False)
    assert_one_line_error(
        proc,
        1,
        f"{registry.root}/{QUARANTINE} is not a directory made by",
        "symbolic link",
        "move it away",
    )
    assert snapshot(outside) == before, "something was written outside the root"
    assert tag_dir(registry.root, "app", "old").is_dir()
    assert pull_ok(registry, "app", "old") and pull_ok(registry, "app", "latest")
    push_oci_image(registry, "app", "after", layers=[b"after"], seed="after")  # read-write


@pytest.mark.parametrize("swapped", ["tag-directory", "manifests-tags"])
def test_symlink_swapped_in_at_removal_time_moves_nothing(
    swapped: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    """The plan was made on a clean tree; while the registry is frozen, before the removals,
    a tag directory (or the repository's whole ``_manifests/tags``) becomes a link to a copy
    outside the root. apply refuses, puts nothing anywhere and brings the registry back."""
    seed(registry)
    outside = sentinel(tmp_path)
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    proc = subprocess.Popen(
        [sys.executable, "-m", "retentiond", "--config", str(setup.config), "apply", "--yes"],
        cwd=REPO_ROOT,
        env={**os.environ, "RETENTIOND_PAUSE": "planned=4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = setup.state / "journal.json"
    try:
        deadline = time.monotonic() + 120
        while not (journal.exists() and json.loads(journal.read_text())["phase"] == "planned"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        real = tag_dir(registry.root, "app", "old")
        if swapped == "manifests-tags":
            real = real.parent
        copy_tree(real, outside / real.name)
        shutil.move(real, tmp_path / "moved-aside")
        real.symlink_to(outside / real.name)
        before = snapshot(outside)
    finally:
        out, err = proc.communicate(timeout=240)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(done, 1, "symbolic link", "nothing was moved")
    assert snapshot(outside) == before, "something outside the root changed"
    assert not any((registry.root / QUARANTINE).glob("*/*")), "something was moved"
    assert setup.history()[-1]["status"] == "failed"
    assert not journal.exists()
    real.unlink()
    shutil.move(tmp_path / "moved-aside", real)
    assert pull_ok(registry, "app", "latest") and pull_ok(registry, "app", "old")
    push_oci_image(registry, "app", "after", layers=[b"after"], seed="after")  # read-write


def test_undo_of_an_old_style_registry_run_refuses_and_keeps_images(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    """A real run with --no-gc, then made to look like one of the previous version (its list
    only in the quarantine, pointing outside): undo refuses; nothing moves."""
    seed(registry)
    outside = sentinel(tmp_path)
    before = snapshot(outside)
    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    setup.run("apply", "--yes", "--no-gc")
    run_id = setup.history()[-1]["run_id"]
    listing = setup.state / "runs" / run_id / "removals.jsonl"
    entries = [json.loads(line) for line in listing.read_text().splitlines()]
    listing.unlink()
    qdir = registry.root / QUARANTINE / run_id
    (qdir / "removals.json").write_text(
        json.dumps([{**e, "live": str(outside / "keep")} for e in entries])
    )
    held = snapshot(qdir)
    proc = setup.run("undo", run_id, check=False)
    assert_one_line_error(proc, 1, "earlier retentiond", "not trusted", "back by hand")
    assert snapshot(qdir) == held and snapshot(outside) == before
    assert not pull_ok(registry, "app", "old") and pull_ok(registry, "app", "latest")
