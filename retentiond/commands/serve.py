"""``retentiond serve``: the daemon."""

from __future__ import annotations

from pathlib import Path

from retentiond.commands.context import load_context, make_registry_client
from retentiond.daemon import Daemon
from retentiond.metrics import Metrics
from retentiond.runtime.factory import make_runtime


def run_serve(config_arg: Path | None) -> int:
    ctx = load_context(config_arg)
    with make_registry_client(ctx) as registry:
        daemon = Daemon(
            ctx.config, list(ctx.policies), make_runtime(ctx.config.runtime), registry, Metrics()
        )
        return daemon.run_forever()
