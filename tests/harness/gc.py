"""Run the registry's own garbage collector (Debian's docker-registry 2.8.2) on a storage tree.

``gc_dry_run`` / ``gc_run`` run ``/usr/bin/docker-registry`` as a plain host process with a
temporary config whose filesystem root is the tree given, so a *copy* of a registry's tree can
be collected while the registry keeps running on the original. ``gc_in_container`` runs the
same binary inside a running registry container (``docker exec``), as retentiond does.

``--delete-untagged`` is never used: on 2.8 it breaks multi-arch images.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.proc import docker, run

REGISTRY_BIN = os.environ.get("RETENTIOND_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")

_SUMMARY = re.compile(
    r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion$", re.M
)
_ELIGIBLE = re.compile(r"^blob eligible for deletion: (sha256:[0-9a-f]{64})\s*$", re.M)
_MARKING = re.compile(r": marking (?:manifest|blob) (sha256:[0-9a-f]{64})", re.M)


@dataclass(frozen=True)
class GcResult:
    """What a GC run printed, parsed. ``marked``/``blobs_eligible``/``manifests_eligible`` come
    from the summary line (0 when it is missing, e.g. on failure); ``eligible`` from the
    ``blob eligible for deletion:`` lines; ``marked_digests`` from ``marking ...`` lines."""

    eligible: set[str]
    marked: int
    blobs_eligible: int
    manifests_eligible: int
    returncode: int
    output: str
    marked_digests: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def empty_registry(self) -> bool:
        """GC of a tree that never received a push (no ``repositories/``): exit 1,
        ``Path not found``. Not an error for retentiond."""
        return self.returncode != 0 and "Path not found" in self.output


def parse_gc_output(output: str, returncode: int) -> GcResult:
    summary = _SUMMARY.search(output)
    marked, blobs, manifests = (int(g) for g in summary.groups()) if summary else (0, 0, 0)
    return GcResult(
        eligible=set(_ELIGIBLE.findall(output)),
        marked=marked,
        blobs_eligible=blobs,
        manifests_eligible=manifests,
        returncode=returncode,
        output=output,
        marked_digests=set(_MARKING.findall(output)),
    )


def gc_config(root: Path) -> str:
    """A minimal registry config whose filesystem rootdirectory is ``root``."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {Path(root).resolve()}\n"
        "  delete:\n    enabled: true\n"
    )


def _gc(root: Path, dry_run: bool, timeout: float) -> GcResult:
    with tempfile.TemporaryDirectory(prefix="retentiond-gc-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(gc_config(root))
        cmd = [REGISTRY_BIN, "garbage-collect"]
        if dry_run:
            cmd.append("--dry-run")
        cmd.append(str(config))
        proc = run(cmd, check=False, timeout=timeout)
    return parse_gc_output(proc.stdout + proc.stderr, proc.returncode)


def gc_dry_run(root: Path, *, timeout: float = 300.0) -> GcResult:
    """``docker-registry garbage-collect --dry-run`` on the tree at ``root`` (which contains
    ``docker/registry/v2``). Failures (exit 1) are returned, not raised."""
    return _gc(root, True, timeout)


def gc_run(root: Path, *, timeout: float = 300.0) -> GcResult:
    """A real GC (deletes unmarked blobs) on ``root``; never ``--delete-untagged``. Only on a
    tree no running registry writes to (a copy, or a stopped/read-only registry)."""
    return _gc(root, False, timeout)


def gc_in_container(
    container: str,
    *,
    dry_run: bool = True,
    config: str = "/etc/docker/registry/config.yml",
    timeout: float = 300.0,
) -> GcResult:
    """Run the GC inside a registry container with ``docker exec``."""
    args = ["exec", container, "registry", "garbage-collect"]
    if dry_run:
        args.append("--dry-run")
    args.append(config)
    proc = docker(*args, check=False, timeout=timeout)
    return parse_gc_output(proc.stdout + proc.stderr, proc.returncode)
