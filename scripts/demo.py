"""Push a realistic set of images into a demo registry, so `retentiond plan` has something to say.

Run by scripts/demo.sh as ``python -m scripts.demo ROOT PORT`` from the repository root; uses
the same real clients (skopeo, docker) as the test suite.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness.images import push_oci_image, push_oci_index, tag_alias
from tests.harness.registry import RunningRegistry
from tests.harness.tree import set_pushed_at


def main(root: str, port: int) -> None:
    reg = RunningRegistry(name="retentiond-demo", root=Path(root), port=port)
    now = datetime.now(UTC)
    shared = b"a shared runtime layer\n" * 4096
    # CI builds: 24 pull-request builds over 48 days, plus main and latest
    for i in range(24):
        tag = f"pr-{100 + i}"
        push_oci_image(
            reg, "ci/app", tag, layers=[shared, f"build {i}\n".encode() * 2048], seed=tag
        )
        set_pushed_at(reg.root, "ci/app", tag, now - timedelta(days=48 - 2 * i))
    tag_alias(reg, "ci/app", "pr-123", "main")
    tag_alias(reg, "ci/app", "pr-123", "latest")
    # releases: versions with their image creation times
    for i, version in enumerate(
        [
            "v1.0.0-rc.1",
            "v1.0.0",
            "v1.1.0-rc.1",
            "v1.1.0",
            "v1.2.0",
            "v2.0.0-rc.1",
            "v2.0.0",
            "v2.1.0",
            "nightly-2026-01-03",
        ]
    ):
        created = (now - timedelta(days=200 - 20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        push_oci_image(
            reg,
            "releases/app",
            version,
            layers=[shared, version.encode() * 4096],
            seed=version,
            config_created=created,
        )
    # a multi-arch base image with dated rebuilds
    for i in range(8):
        tag = f"bookworm-2026{i + 1:02d}01"
        push_oci_index(reg, "base/debian", tag, seed=f"debian-{tag}")
        set_pushed_at(reg.root, "base/debian", tag, now - timedelta(days=240 - 30 * i))
    for moving in ("12", "bookworm", "latest"):
        tag_alias(reg, "base/debian", "bookworm-20260801", moving)
    # a repository no policy names: never touched
    push_oci_image(reg, "sandbox/tool", "old", layers=[b"sandbox"], seed="sandbox")
    set_pushed_at(reg.root, "sandbox/tool", "old", now - timedelta(days=400))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the demo registry's storage directory on the host")
    parser.add_argument("port", type=int, help="the registry's port on 127.0.0.1")
    args = parser.parse_args()
    main(args.root, args.port)
