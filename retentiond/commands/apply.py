"""``retentiond apply``: one maintenance run now, outside any window."""

from __future__ import annotations

import sys
from pathlib import Path

from retentiond.commands.context import load_context, make_registry_client
from retentiond.core.plan_types import Plan
from retentiond.errors import UsageError
from retentiond.maintenance import RunResult, run_maintenance
from retentiond.notify.webhooks import WebhookNotifier
from retentiond.protection import protection_reader
from retentiond.recovery import recover_interrupted
from retentiond.render import human_bytes, plan_table
from retentiond.run_phases import MaintenanceServices
from retentiond.run_records import RunStatus
from retentiond.runtime.factory import make_runtime
from retentiond.state import run_lock

#: how a run that changed nothing is told
_NOTHING_CHANGED = {
    RunStatus.DRY_RUN: "dry run, nothing changed",
    RunStatus.NOTHING_TO_DO: "nothing to delete",
    RunStatus.REFUSED: "not confirmed, nothing changed",
}


def ask(plan: Plan) -> bool:
    print(plan_table(plan, verbose=True))
    answer = input(
        f"\nDelete {len(plan.tags_deleted)} tags and reclaim {human_bytes(plan.bytes_reclaimed)}"
        " now? [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def describe(result: RunResult) -> str:
    r = result.record
    if r is None:
        plan = result.summary
        return (
            f"{_NOTHING_CHANGED[result.status]}: {plan.get('tags_deleted', 0)} tags, "
            f"{plan.get('manifests_unlinked', 0)} manifests, "
            f"{human_bytes(plan.get('bytes_reclaimed', 0))} reclaimable"
        )
    lines = [
        f"run {result.run_id}: {result.status}"
        + (" (an interrupted run, finished now)" if r.resumed else ""),
        f"  removed {r.removed.get('tags', 0)} tags, {r.removed.get('manifests', 0)} "
        f"manifests, {r.removed.get('repositories', 0)} repositories",
        f"  reclaimed {human_bytes(r.bytes_reclaimed)} ({r.bytes_reclaimed} bytes, "
        f"{r.blobs_deleted} blobs; planned {(r.plan or {}).get('bytes_reclaimed', 0)})",
        f"  writes refused {r.read_only_seconds:.1f}s, registry unavailable "
        f"{r.unavailable_seconds:.1f}s",
        "  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r.durations.items()),
    ]
    if r.held_until:
        lines.append(
            f"  GC not run; `retentiond undo {result.run_id}` works until the next GC "
            f"(held until {r.held_until})"
        )
    lines += [f"  BROKEN {b}" for b in r.broken]
    lines += [f"  error: {e}" for e in r.errors]
    return "\n".join(lines)


def run_apply(config_arg: Path | None, *, yes: bool, dry_run: bool, no_gc: bool) -> int:
    ctx = load_context(config_arg)
    if not (yes or dry_run) and not sys.stdin.isatty():
        raise UsageError("apply deletes images: pass --yes to run it without a terminal")
    confirm = None if (yes or dry_run) else ask
    with make_registry_client(ctx) as registry, run_lock(ctx.config.state_dir):
        services = MaintenanceServices(
            ctx.config,
            ctx.policies,
            make_runtime(ctx.config.runtime),
            registry,
            confirm=confirm,
            # logged only: apply has no metrics server to count a failure on
            notify=WebhookNotifier(
                ctx.config.notify.webhooks, registry_url=ctx.config.registry.url
            ),
            protection=protection_reader(ctx.config.protect),
        )
        if not dry_run:
            resumed = recover_interrupted(services)
            if resumed is not None:
                print(describe(resumed))
        result = run_maintenance(services, dry_run=dry_run, no_gc=no_gc)
    print(describe(result))
    return 0 if result.status in (RunStatus.OK, *_NOTHING_CHANGED) else 1
