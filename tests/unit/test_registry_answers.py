"""`Answers`: each blob of a repository asked once, whichever threads want it at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from retentiond.errors import RegistryError
from retentiond.registry import Answers


def test_a_digest_wanted_by_many_threads_is_asked_once() -> None:
    answers = Answers()
    asked: list[str] = []
    release = threading.Event()

    def ask(digest: str) -> int:
        asked.append(digest)
        release.wait(5)  # the other threads arrive while the first is asking
        return 404 if digest == "sha256:b" else 200

    def want(n: int) -> int:
        digest = "sha256:b" if n % 2 else "sha256:a"
        return answers.blob(digest, lambda: ask(digest))

    with ThreadPoolExecutor(16) as pool:
        statuses = pool.map(want, range(64))
        threading.Timer(0.2, release.set).start()
        assert list(statuses) == [404 if n % 2 else 200 for n in range(64)]
    assert sorted(asked) == ["sha256:a", "sha256:b"]


def test_blobs_and_manifests_are_apart_and_kept() -> None:
    answers = Answers()
    assert answers.blob("sha256:a", lambda: 404) == 404
    assert answers.manifest("sha256:a", lambda: "") == ""
    assert answers.blob("sha256:a", lambda: 200) == 404
    assert answers.manifest("sha256:b", lambda: "broken") == "broken"
    assert answers.manifest("sha256:b", lambda: "") == "broken"


def test_an_error_reaches_every_thread_that_waited() -> None:
    answers = Answers()

    def fail() -> int:
        raise RegistryError("registry at http://x did not answer HEAD")

    with pytest.raises(RegistryError):
        answers.blob("sha256:a", fail)
    with pytest.raises(RegistryError):
        answers.blob("sha256:a", lambda: 200)
