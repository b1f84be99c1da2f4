"""Which deleted tags verification asks although the registry's tag list leaves them out."""

from __future__ import annotations

from retentiond.verification import _extends_one_of


def test_a_tag_extending_a_listed_one_is_asked() -> None:
    """distribution 3.1.0-3.1.1 (#4891) can drop `v1.2` from tags/list when `v1` is there."""
    listed = {"v1", "latest"}
    assert _extends_one_of("v1.2", listed)
    assert _extends_one_of("latest-rc", listed)
    assert not _extends_one_of("v2", listed)
    assert not _extends_one_of("v1", listed)  # itself is not another tag
    assert not _extends_one_of("x", set())
