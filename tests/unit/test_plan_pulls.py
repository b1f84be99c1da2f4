"""``keep.pulled_within`` in the pure planner: last pulls as a mapping and the tracking start."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

from retentiond.commands.plan import write_plan_json
from retentiond.core.plan import make_plan
from retentiond.core.pulls import PullTimes
from retentiond.core.values import Tag
from retentiond.policy.model import Safety
from retentiond.render import plan_json
from tests.unit.test_plan import NOW, Repo, d, days_ago, image, index, inventory, policy

PULLED = policy(pulled_within=timedelta(days=30))


def app() -> Repo:
    return Repo(
        "app",
        (
            Tag("old", d(1), days_ago(90)),
            Tag("multi", d(2), days_ago(80)),
            Tag("pulled", d(5), days_ago(70)),
            Tag("new", d(6), days_ago(1)),
        ),
        {d(n): days_ago(90) for n in (1, 2, 3, 4, 5, 6)},
    )


MANIFESTS = [image(1, 10), index(2, 3, 4), image(3, 30), image(4, 40), image(5, 50), image(6, 60)]


def test_a_tag_not_pulled_within_goes_and_its_reason_and_pulled_at_say_so() -> None:
    since = days_ago(100)
    pulls = PullTimes(since, {"app": {d(5): days_ago(2), d(1): days_ago(40)}})
    plan = make_plan(inventory([app()], MANIFESTS), [PULLED], Safety(), NOW, pulls=pulls)
    deleted = {t.tag: t for t in plan.tags_deleted}
    assert set(deleted) == {"old", "multi"}
    assert deleted["old"].reason == "not pulled within 30d"
    assert deleted["old"].pulled_at == days_ago(40)
    assert deleted["multi"].pulled_at == since  # nothing recorded: pulled when tracking began


def test_a_pull_of_a_platform_manifest_keeps_its_index() -> None:
    pulls = PullTimes(days_ago(100), {"app": {d(4): days_ago(3)}})
    plan = make_plan(inventory([app()], MANIFESTS), [PULLED], Safety(), NOW, pulls=pulls)
    assert {t.tag for t in plan.tags_deleted} == {"old", "pulled"}


def test_a_pull_in_another_repository_does_not_count() -> None:
    pulls = PullTimes(days_ago(100), {"other": {d(1): days_ago(1)}})
    plan = make_plan(inventory([app()], MANIFESTS), [PULLED], Safety(), NOW, pulls=pulls)
    assert "old" in {t.tag for t in plan.tags_deleted}


def test_turning_tracking_on_deletes_nothing_at_once() -> None:
    pulls = PullTimes(days_ago(1))  # tracking began yesterday; nothing recorded since
    plan = make_plan(inventory([app()], MANIFESTS), [PULLED], Safety(), NOW, pulls=pulls)
    assert plan.tags_deleted == ()


def test_without_tracking_a_repository_under_pulled_within_is_refused() -> None:
    other = Repo("other", (Tag("x", d(1), days_ago(90)), Tag("y", d(6), days_ago(1))), {})
    policies = [
        policy("pulled", repos="app", pulled_within=timedelta(days=30)),
        policy("rest", repos="other", last=1),
    ]
    plan = make_plan(inventory([app(), other], MANIFESTS), policies, Safety(), NOW)
    assert [r.repository for r in plan.refused] == ["app"]
    assert "keep.pulled_within" in plan.refused[0].reason
    assert "pulls.listen" in plan.refused[0].reason
    assert {(t.repository, t.tag) for t in plan.tags_deleted} == {("other", "x")}


def test_keep_wins_and_other_rules_still_keep() -> None:
    rules = policy(pulled_within=timedelta(days=30), last=3)
    pulls = PullTimes(days_ago(100))
    plan = make_plan(inventory([app()], MANIFESTS), [rules], Safety(), NOW, pulls=pulls)
    assert [t.tag for t in plan.tags_deleted] == ["old"]
    assert plan.tags_deleted[0].reason == "not among the last 3 pushed, not pulled within 30d"


def test_pulled_at_in_both_json_forms_only_with_tracking() -> None:
    inv = inventory([app()], MANIFESTS)
    tracked = make_plan(inv, [PULLED], Safety(), NOW, pulls=PullTimes(days_ago(100)))
    untracked = make_plan(inv, [policy(last=1)], Safety(), NOW)
    for plan, expected in ((tracked, "2026-08-20T03:00:00Z"), (untracked, None)):
        out = StringIO()
        write_plan_json(plan, None, out)
        streamed = json.loads(out.getvalue())
        assert streamed == json.loads(json.dumps(plan_json(plan)))
        assert {t.get("pulled_at") for t in streamed["tags"]} == {expected}
