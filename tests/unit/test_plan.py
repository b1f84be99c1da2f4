"""The pure planner on literal inventories: no disk, no clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.core.plan_types import PlanEntries
from retentiond.core.values import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    Manifest,
    Problem,
    ProblemKind,
    Tag,
)
from retentiond.policy.model import KeepRules, Policy, Safety, Untagged
from retentiond.policy.selectors import Selector
from tests.builders import InventoryBuilder

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def image(n: int, config: int, *layers: int) -> Manifest:
    return Manifest(
        d(n), MEDIA_DOCKER_MANIFEST, blobs=(d(config), *map(d, layers)), config=d(config)
    )


def index(n: int, *children: int) -> Manifest:
    return Manifest(d(n), MEDIA_OCI_INDEX, children=tuple(map(d, children)))


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def policy(
    name: str = "p",
    repos: str = "**",
    untagged: Untagged = Untagged.KEEP,
    allow_empty: bool = False,
    **keep: object,
) -> Policy:
    tags = keep.pop("tags", None)
    rules = KeepRules(tags=Selector.parse(tags) if tags else None, **keep)  # type: ignore[arg-type]
    return Policy(
        name=name,
        repositories=Selector.parse([repos]),
        tags=Selector.parse(["*"]),
        keep=rules,
        untagged=untagged,
        allow_empty=allow_empty,
    )


class Repo(NamedTuple):
    name: str
    tags: tuple[Tag, ...]
    revisions: dict[str, datetime]


def inventory(
    repos: list[Repo],
    manifests: list[Manifest],
    sizes: dict[str, int] | None = None,
    problems: tuple[Problem, ...] = (),
) -> Inventory:
    """Manifest blobs of 100 bytes and the blobs they reference of 1000, but for ``sizes``."""
    built = InventoryBuilder("/r")
    for m in manifests:
        built.manifest(m, size=100)
        for b in m.blobs:
            built.blob(b, 1000)
    built.blobs(sizes or {})
    for repo in repos:
        built.repository(repo.name, repo.tags, repo.revisions)
    for problem in problems:
        built.problem(problem)
    return built.build()


def test_deleting_an_alias_keeps_the_shared_manifest() -> None:
    repo = Repo(
        "app",
        (Tag("v3", d(1), days_ago(30)), Tag("latest", d(1), days_ago(1))),
        {d(1): days_ago(30)},
    )
    inv = inventory([repo], [image(1, 10, 11)])
    plan = make_plan(inv, [policy(tags=["latest"])], Safety(), NOW)
    assert [t.tag for t in plan.tags_deleted] == ["v3"]
    assert plan.manifests_unlinked == ()
    assert plan.reclaimable == {}


def test_deleted_tag_unlinks_its_manifest_and_reclaims_exactly_its_blobs() -> None:
    repo = Repo(
        "app",
        (Tag("old", d(1), days_ago(30)), Tag("new", d(2), days_ago(1))),
        {d(1): days_ago(30), d(2): days_ago(1)},
    )
    inv = inventory([repo], [image(1, 10, 11, 99), image(2, 20, 21, 99)])
    plan = make_plan(inv, [policy(last=1)], Safety(), NOW)
    assert [t.tag for t in plan.tags_deleted] == ["old"]
    assert plan.tags_deleted[0].reason == "not among the last 1 pushed"
    assert [m.digest for m in plan.manifests_unlinked] == [d(1)]
    assert set(plan.reclaimable) == {d(1), d(10), d(11)}  # 99 is shared with "new"
    assert plan.bytes_reclaimed == 2100


def test_index_children_stay_reachable_and_go_with_their_index() -> None:
    repo = Repo(
        "base",
        (Tag("1.0", d(1), days_ago(20)), Tag("2.0", d(2), days_ago(1))),
        {d(n): days_ago(20) for n in (1, 2, 3, 4, 5, 6)},
    )
    mans = [
        index(1, 3, 4),
        index(2, 5, 6),
        image(3, 30, 31),
        image(4, 40, 41),
        image(5, 50, 51),
        image(6, 60, 61),
    ]
    plan = make_plan(inventory([repo], mans), [policy(last=1)], Safety(), NOW)
    assert {m.digest for m in plan.manifests_unlinked} == {d(1), d(3), d(4)}
    assert {d(5), d(6), d(2)}.isdisjoint(plan.reclaimable)


def test_untagged_children_of_a_kept_index_are_never_untagged_garbage() -> None:
    repo = Repo(
        "base",
        (Tag("1.0", d(1), days_ago(20)),),
        {d(1): days_ago(20), d(3): days_ago(20), d(4): days_ago(20)},
    )
    mans = [index(1, 3, 4), image(3, 30, 31), image(4, 40, 41)]
    plan = make_plan(
        inventory([repo], mans), [policy(untagged=Untagged.DELETE, last=5)], Safety(), NOW
    )
    assert plan.manifests_unlinked == ()


def test_untagged_manifests_respect_min_age() -> None:
    repo = Repo(
        "app",
        (Tag("v1", d(1), days_ago(5)),),
        {d(1): days_ago(5), d(2): days_ago(3), d(3): NOW - timedelta(minutes=5)},
    )
    mans = [image(1, 10), image(2, 20), image(3, 30)]
    plan = make_plan(
        inventory([repo], mans), [policy(untagged=Untagged.DELETE, last=5)], Safety(), NOW
    )
    assert [m.digest for m in plan.manifests_unlinked] == [d(2)]
    keep_untagged = make_plan(inventory([repo], mans), [policy(last=5)], Safety(), NOW)
    assert keep_untagged.manifests_unlinked == ()


def test_keep_wins_across_policies() -> None:
    repo = Repo(
        "ci/app",
        (Tag("a", d(1), days_ago(30)), Tag("b", d(2), days_ago(1))),
        {d(1): days_ago(30), d(2): days_ago(1)},
    )
    inv = inventory([repo], [image(1, 10), image(2, 20)])
    plan = make_plan(
        inv,
        [policy("strict", last=1), policy("lenient", "ci/*", within=timedelta(days=60))],
        Safety(),
        NOW,
    )
    assert plan.tags_deleted == ()


def test_newest_tag_survives_unless_allow_empty() -> None:
    repo = Repo("tmp/x", (Tag("a", d(1), days_ago(30)),), {d(1): days_ago(30)})
    inv = inventory([repo], [image(1, 10)])
    assert make_plan(inv, [policy(within=timedelta(days=1))], Safety(), NOW).tags_deleted == ()
    plan = make_plan(inv, [policy(within=timedelta(days=1), allow_empty=True)], Safety(), NOW)
    assert [t.tag for t in plan.tags_deleted] == ["a"]
    assert plan.repositories_removed == ("tmp/x",)


def test_mass_delete_is_refused_with_the_fix_in_the_message() -> None:
    tags = tuple(Tag(f"t{i}", d(i + 1), days_ago(100 - i)) for i in range(20))
    repo = Repo("ci/app", tags, {t.digest: t.pushed_at for t in tags})
    inv = inventory([repo], [image(i + 1, 100 + i) for i in range(20)])
    plan = make_plan(inv, [policy(last=2)], Safety(), NOW)
    assert plan.tags_deleted == () and plan.manifests_unlinked == ()
    assert "would delete 90% of 20 tags" in plan.refused[0].reason
    assert "allow_mass_delete" in plan.refused[0].reason


def test_unreadable_repository_is_refused_and_its_blobs_stay_marked() -> None:
    repo = Repo(
        "app",
        (Tag("old", d(1), days_ago(30)), Tag("new", d(2), days_ago(1))),
        {d(1): days_ago(30), d(2): days_ago(1)},
    )
    problem = Problem("/r/x/link", "link file is empty", ProblemKind.UNREADABLE, "app")
    plan = make_plan(
        inventory([repo], [image(1, 10), image(2, 20)], problems=(problem,)),
        [policy(last=1)],
        Safety(),
        NOW,
    )
    assert plan.tags_deleted == () and plan.reclaimable == {}
    assert "cannot trust /r/x/link" in plan.refused[0].reason


def test_blob_shared_across_repositories_is_reclaimed_only_when_no_user_remains() -> None:
    a = Repo(
        "a",
        (Tag("old", d(1), days_ago(30)), Tag("new", d(2), days_ago(1))),
        {d(1): days_ago(30), d(2): days_ago(1)},
    )
    b = Repo("b", (Tag("x", d(3), days_ago(30)),), {d(3): days_ago(30)})
    mans = [image(1, 10, 77), image(2, 20), image(3, 30, 77)]
    plan = make_plan(inventory([a, b], mans), [policy(repos="a", last=1)], Safety(), NOW)
    assert set(plan.reclaimable) == {d(1), d(10)}


def test_referrer_tags_follow_their_subject() -> None:
    sig = "sha256-" + f"{1:064x}" + ".sig"
    repo = Repo(
        "app",
        (
            Tag("old", d(1), days_ago(30)),
            Tag(sig, d(5), days_ago(30)),
            Tag("new", d(2), days_ago(1)),
        ),
        {d(1): days_ago(30), d(2): days_ago(1), d(5): days_ago(30)},
    )
    plan = make_plan(
        inventory([repo], [image(1, 10), image(2, 20), image(5, 50)]),
        [policy(last=1)],
        Safety(),
        NOW,
    )
    assert {t.tag for t in plan.tags_deleted} == {"old", sig}
    assert {m.digest for m in plan.manifests_unlinked} == {d(1), d(5)}


def test_repository_without_policy_is_untouched() -> None:
    repo = Repo(
        "other",
        (Tag("old", d(1), days_ago(300)), Tag("new", d(2), days_ago(1))),
        {d(1): days_ago(300), d(2): days_ago(1)},
    )
    plan = make_plan(
        inventory([repo], [image(1, 10), image(2, 20)]),
        [policy(repos="ci/**", last=1)],
        Safety(),
        NOW,
    )
    assert plan.tags_deleted == () and plan.refused == ()


def test_semver_keeps_highest_versions() -> None:
    names = ["1.0.0", "1.2.0", "v2.0.0-rc.1", "v2.0.0", "latest-build"]
    tags = tuple(Tag(n, d(i + 1), days_ago(50 - i)) for i, n in enumerate(names))
    repo = Repo("rel", tags, {t.digest: t.pushed_at for t in tags})
    plan = make_plan(
        inventory([repo], [image(i + 1, 100 + i) for i in range(5)]),
        [policy(semver=2)],
        Safety(),
        NOW,
    )
    # latest-build is the newest tag: it survives as the repository's most recent
    assert {t.tag for t in plan.tags_deleted} == {"1.0.0", "1.2.0"}  # semver 2.0 order


def test_plan_entries_behave_as_the_tuple_they_stand_for() -> None:
    built: list[str] = []

    def part(*items: int) -> tuple[int, Callable[[], list[int]]]:
        def build() -> list[int]:
            built.append(",".join(map(str, items)))
            return list(items)

        return len(items), build

    entries = PlanEntries([part(1, 2), part(), part(3), part(4, 5, 6)])
    as_tuple = (1, 2, 3, 4, 5, 6)
    assert len(entries) == 6 and list(entries) == list(as_tuple)
    assert entries == as_tuple and as_tuple == entries and entries == PlanEntries([part(*as_tuple)])
    assert entries != (1, 2, 3) and entries != (1, 2, 3, 4, 5, 7) and entries != [1, 2, 3, 4, 5, 6]
    assert [entries[i] for i in range(-6, 6)] == [*as_tuple, *as_tuple]
    assert entries[1:4] == (2, 3, 4) and entries[::-1] == as_tuple[::-1]
    assert 5 in entries and 7 not in entries
    for index in (6, -7):
        with pytest.raises(IndexError):
            entries[index]
    assert repr(entries) == repr(as_tuple)
    built.clear()
    assert entries[3] == 4 and built == ["4,5,6"]  # only the part that holds it is built
    empty = PlanEntries[int]()
    assert len(empty) == 0 and not empty and empty == () and list(empty) == []
