"""What a run says when the registry's GC failed."""

from __future__ import annotations

from retentiond.run_phases import gc_failure


def test_the_last_lines_and_the_exit_code() -> None:
    message = gc_failure(1, "line 1\nline 2\nline 3\npanic: boom\n")
    assert message == "the registry's garbage-collect exited 1: line 2 / line 3 / panic: boom"


def test_no_repository_left_on_s3_is_explained() -> None:
    output = (
        'time="..." level=info msg="..."\n'
        "failed to mark: s3aws: Path not found: /docker/registry/v2/repositories\n"
    )
    message = gc_failure(1, output)
    assert "without any repository" in message
    assert "first GC after the next push" in message
