"""``retentiond plan``: read the tree, evaluate the policies, show the plan. Changes nothing."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from retentiond.commands.context import load_context
from retentiond.core.plan import make_plan
from retentiond.logs import get_logger
from retentiond.policy.selectors import Selector
from retentiond.render import plan_json, plan_table
from retentiond.storage.reader import read_inventory


def run_plan(
    config_arg: Path | None,
    *,
    as_json: bool = False,
    repositories: list[str] | None = None,
    quiet: bool = False,
) -> int:
    ctx = load_context(config_arg)
    log = get_logger(job="plan")
    started = time.monotonic()
    inventory = read_inventory(ctx.config.registry.root, read_created=ctx.needs_created)
    read_seconds = time.monotonic() - started
    plan = make_plan(inventory, ctx.policies, ctx.config.safety, datetime.now(UTC))
    only = Selector.parse(repositories) if repositories else None
    if as_json:
        print(json.dumps(plan_json(plan, only), indent=2))
    else:
        print(plan_table(plan, only, verbose=not quiet))
    log.info(
        "plan",
        repositories=plan.repositories,
        tags=plan.tags,
        tags_deleted=len(plan.tags_deleted),
        manifests_unlinked=len(plan.manifests_unlinked),
        repositories_removed=len(plan.repositories_removed),
        refused=len(plan.refused),
        problems=len(plan.problems),
        blobs_reclaimed=len(plan.reclaimable),
        bytes_reclaimed=plan.bytes_reclaimed,
        read_seconds=round(read_seconds, 3),
        seconds=round(time.monotonic() - started, 3),
    )
    return 0
