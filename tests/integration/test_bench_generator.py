"""Trees from ``bench/generate.py`` are valid: the real registry serves them, its GC finds
nothing to collect, and the plan on them matches the GC after the plan's removals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.generate import SUMMARY_FILE, Params, generate
from retentiond.core.inventory import Inventory
from retentiond.core.plan import make_plan
from retentiond.policy.model import KeepRules, Policy, Safety, Untagged
from retentiond.policy.selectors import Selector
from retentiond.storage.reader import read_inventory
from tests.harness.gc import gc_dry_run
from tests.harness.images import pull_error
from tests.harness.registry import start_registry, stop_registry
from tests.harness.tree import copy_tree
from tests.integration.test_plan_scenarios import make_removals

PARAMS = Params(
    repositories=5,
    tags=10,
    depth=3,
    nested_share=0.3,
    alias_share=0.2,
    index_share=0.3,
    history_share=0.3,
    bases=2,
    docker_share=0.5,
    seed=6,
)


def interesting_tags(inventory: Inventory) -> list[tuple[str, str]]:
    """A tag of each kind per repository: on an index, an alias, the first by name."""
    picked: dict[tuple[str, str], None] = {}
    for repo in inventory.repositories:
        digests = [t.digest for t in repo.tags]
        on_index = [t for t in repo.tags if inventory.manifests.children_of(t.digest)]
        aliases = [t for t in repo.tags if digests.count(t.digest) > 1]
        for tags in (on_index, aliases, list(repo.tags)):
            if tags:
                picked[(repo.name, tags[0].name)] = None
    return list(picked)


def test_generated_tree_is_served_and_clean(docker_ready: None, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    summary = generate(root, PARAMS, jobs=2)
    assert json.loads((root / SUMMARY_FILE).read_text())["tags"] == summary["tags"] == 50
    inventory = read_inventory(root)
    assert inventory.problems == ()
    names = [r.name for r in inventory.repositories]
    assert any(r.has_nested for r in inventory.repositories), names
    assert any(
        inventory.manifests.children_of(t.digest) for r in inventory.repositories for t in r.tags
    )
    shared = {b for m in inventory.manifests.values() for b in m.blobs}
    assert len(shared) < sum(len(m.blobs) for m in inventory.manifests.values())

    dry = gc_dry_run(root)
    assert dry.returncode == 0, dry.output
    assert dry.eligible == set() and dry.blobs_eligible == 0
    assert dry.marked == len(inventory.blobs)

    registry = start_registry(root)
    try:
        failures = {
            f"{repo}:{tag}": error
            for repo, tag in interesting_tags(inventory)
            if (error := pull_error(registry, repo, tag)) is not None
        }
    finally:
        stop_registry(registry)
    assert failures == {}
    assert len(interesting_tags(inventory)) >= 8


def test_plan_on_generated_tree_matches_the_gc(docker_ready: None, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    generate(root, PARAMS, jobs=2)
    policy = Policy(
        name="last-3",
        repositories=Selector.parse(["**"]),
        tags=Selector.parse(["*"]),
        keep=KeepRules(last=3),
        untagged=Untagged.DELETE,
        allow_mass_delete=True,
    )
    plan = make_plan(
        read_inventory(root, workers=2),
        [policy],
        Safety(untagged_min_age=timedelta(hours=1)),
        datetime.now(UTC),
    )
    assert plan.tags_deleted and plan.manifests_unlinked and plan.reclaimable
    copy = copy_tree(root, tmp_path / "copy")
    make_removals(copy, plan)
    dry = gc_dry_run(copy)
    assert dry.returncode == 0, dry.output
    assert dry.eligible == set(plan.reclaimable)


def test_same_seed_same_tree(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    generate(one, PARAMS, jobs=2)
    generate(two, PARAMS, jobs=1)
    a, b = read_inventory(one), read_inventory(two)
    assert dict(a.blobs) == dict(b.blobs)
    assert [(r.name, r.tags) for r in a.repositories] == [(r.name, r.tags) for r in b.repositories]
