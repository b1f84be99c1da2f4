"""``retentiond apply``: one maintenance run now, outside any window."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from retentiond.commands.context import JobContext, load_context
from retentiond.config import registry_password
from retentiond.core.plan_types import Plan
from retentiond.errors import UsageError
from retentiond.maintenance import Deps, RunResult, recover_interrupted, run_maintenance
from retentiond.registry import RegistryClient
from retentiond.render import human_bytes, plan_table
from retentiond.runtime.factory import make_runtime
from retentiond.state import run_lock


def make_registry_client(ctx: JobContext) -> RegistryClient:
    reg = ctx.config.registry
    password = registry_password(reg)
    auth = (reg.username, password or "") if reg.username else None
    return RegistryClient(reg.url, auth=auth, verify=reg.tls_verify)


def ask(plan: Plan) -> bool:
    print(plan_table(plan, verbose=True))
    answer = input(
        f"\nDelete {len(plan.tags_deleted)} tags and reclaim {human_bytes(plan.bytes_reclaimed)}"
        " now? [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def describe(result: RunResult) -> str:
    r: dict[str, Any] = result.record
    if result.status in ("dry-run", "nothing-to-do", "refused"):
        plan = r.get("plan", {})
        what = {
            "dry-run": "dry run, nothing changed",
            "nothing-to-do": "nothing to delete",
            "refused": "not confirmed, nothing changed",
        }[result.status]
        return (
            f"{what}: {plan.get('tags_deleted', 0)} tags, "
            f"{plan.get('manifests_unlinked', 0)} manifests, "
            f"{human_bytes(plan.get('bytes_reclaimed', 0))} reclaimable"
        )
    lines = [
        f"run {result.run_id}: {result.status}"
        + (" (an interrupted run, finished now)" if r.get("resumed") else ""),
        f"  removed {r['removed']['tags']} tags, {r['removed']['manifests']} manifests, "
        f"{r['removed']['repositories']} repositories",
        f"  reclaimed {human_bytes(r['bytes_reclaimed'])} ({r['bytes_reclaimed']} bytes, "
        f"{r['blobs_deleted']} blobs; planned {(r.get('plan') or {}).get('bytes_reclaimed', 0)})",
        f"  writes refused {r['read_only_seconds']:.1f}s, registry unavailable "
        f"{r['unavailable_seconds']:.1f}s",
        "  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["durations"].items()),
    ]
    if r.get("held_until"):
        lines.append(
            f"  GC not run; `retentiond undo {result.run_id}` works until the next GC "
            f"(held until {r['held_until']})"
        )
    lines += [f"  BROKEN {b}" for b in r.get("broken", [])]
    lines += [f"  error: {e}" for e in r.get("errors", [])]
    return "\n".join(lines)


def run_apply(config_arg: Path | None, *, yes: bool, dry_run: bool, no_gc: bool) -> int:
    ctx = load_context(config_arg)
    if not (yes or dry_run) and not sys.stdin.isatty():
        raise UsageError("apply deletes images: pass --yes to run it without a terminal")
    confirm = None if (yes or dry_run) else ask
    with make_registry_client(ctx) as registry, run_lock(ctx.config.state_dir):
        deps = Deps(
            ctx.config, ctx.policies, make_runtime(ctx.config.runtime), registry, confirm=confirm
        )
        if not dry_run:
            resumed = recover_interrupted(deps)
            if resumed is not None:
                print(describe(resumed))
        result = run_maintenance(deps, dry_run=dry_run, no_gc=no_gc)
    print(describe(result))
    return 0 if result.status in ("ok", "dry-run", "nothing-to-do", "refused") else 1
