"""``retentiond verify``: every tag resolves to a complete image on disk, or exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from retentiond.commands.context import load_context
from retentiond.core.verify import broken_tags
from retentiond.logs import get_logger
from retentiond.render import text
from retentiond.storage.reader import read_inventory


def run_verify(config_arg: Path | None, *, as_json: bool = False) -> int:
    ctx = load_context(config_arg)
    inventory = read_inventory(ctx.config.registry.location, read_layers=True)
    broken = broken_tags(inventory)
    tags = sum(len(r.tags) for r in inventory.repositories)
    if as_json:
        print(
            json.dumps(
                {
                    "tags": tags,
                    "broken": [
                        {
                            "repository": b.repository,
                            "tag": b.tag,
                            "digest": b.digest,
                            "reason": b.reason,
                        }
                        for b in broken
                    ],
                    "problems": [
                        {
                            "path": p.path,
                            "kind": p.kind.value,
                            "repository": p.repository,
                            "message": p.message,
                        }
                        for p in inventory.problems
                    ],
                },
                indent=2,
            )
        )
    else:
        for b in broken:
            print(text(f"broken {b.repository}:{b.tag}: {b.reason}"))
        for p in inventory.problems:
            print(text(f"problem {p}"))
        print(
            f"{tags - len(broken)} of {tags} tags resolve to complete images"
            + (f"; {len(broken)} broken" if broken else "")
        )
    get_logger(job="verify").info(
        "verify", tags=tags, broken=len(broken), problems=len(inventory.problems)
    )
    return 1 if broken else 0
