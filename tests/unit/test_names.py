"""Repository and tag names as the registry reads them.

Which names make the real GC abort is checked in tests/integration/test_hostile_cli.py
(``test_gc_aborts_on_exactly_the_repository_names_retentiond_reports``)."""

from __future__ import annotations

import time

import pytest

from retentiond.core.names import printable, repository_name_problem, tag_name_problem

GC_READS = [
    "ok/app",
    "a",
    "0",
    "a.b",
    "a_b",
    "a__b",
    "a-b",
    "a---b",
    "a.b/c",
    "team/app/v2",
    "Ok/app",
    "Host-1.Ex/app",
    "a" * 200 + "/" + "b" * 54,
]
GC_ABORTS = [
    "UPPER",
    "sp ace",
    "a..b",
    "a.-b",
    "a___b",
    "-a/b",
    "a-/b",
    "a/B",
    "a/-b",
    "a/.b",
    ".x",
    "é",
    "x\ny",
    "ok/app\t",
    "a:b",
    "host:5000/app",
    "A_b/c",
    "a" * 200 + "/" + "b" * 55,
]


@pytest.mark.parametrize("name", GC_READS)
def test_repository_names_the_gc_reads_have_no_problem(name: str) -> None:
    assert repository_name_problem(name) is None


@pytest.mark.parametrize("name", GC_ABORTS)
def test_repository_names_the_gc_aborts_on_have_a_problem(name: str) -> None:
    message = repository_name_problem(name)
    assert message is not None and "\n" not in message and "\t" not in message


def test_repository_name_longer_than_255_bytes_says_how_long() -> None:
    assert repository_name_problem("a" * 200 + "/" + "b" * 55) == (
        "256 bytes long; the registry allows 255"
    )


def test_repository_name_check_is_linear_on_a_hostile_name() -> None:
    started = time.perf_counter()
    for name in ("a" * 254 + "!", "a-" * 127 + "!", "a" + "._" * 126 + "!"):
        assert repository_name_problem(name) is not None
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("tag", ["v1", "latest", "_x", "1.0-rc.1", "A" * 128])
def test_tags_the_registry_serves_have_no_problem(tag: str) -> None:
    assert tag_name_problem(tag) is None


@pytest.mark.parametrize(
    "tag",
    [".x", "-x", "a b", "x\ny", "é", "a:b", "a/b", "", "\udcff"],
    ids=["dot", "dash", "space", "newline", "non-ascii", "colon", "slash", "empty", "not-utf8"],
)
def test_tags_the_registry_cannot_serve_have_a_problem(tag: str) -> None:
    assert tag_name_problem(tag) is not None


def test_tag_longer_than_128_says_how_long() -> None:
    assert (
        tag_name_problem("a" * 129)
        == "129 characters long; the registry serves tags of at most 128"
    )


def test_printable_escapes_controls_and_backslashes_only() -> None:
    assert printable("team/app") == "team/app"
    assert printable("é") == "é"
    assert printable("a\nb") == "a\\nb"
    assert printable("a\\nb") == "a\\\\nb"  # a real backslash cannot pass for an escape
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("\udcff") == "\\udcff"
    assert printable("x" * 10, 4) == "xxxx..."
