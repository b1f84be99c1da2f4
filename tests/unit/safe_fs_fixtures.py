"""Fixtures shared by the tests of ``safe_fs`` and of the filesystem backend, imported by their
modules (autouse there only): every test runs in both ways of opening a path, and a FIFO opened
the wrong way fails the test instead of hanging it."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from retentiond.storage import safe_fs


@pytest.fixture(params=["openat2", "step-by-step"], autouse=True)
def resolution(request: pytest.FixtureRequest) -> Iterator[str]:
    safe_fs.use_openat2(request.param == "openat2")
    yield str(request.param)
    safe_fs.use_openat2(True)


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A FIFO opened the wrong way blocks: fail instead."""
    signal.alarm(20)
    yield
    signal.alarm(0)
