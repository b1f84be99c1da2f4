"""Run a registry's own garbage collector (Debian's docker-registry 2.8.2 or distribution
v3.1.1) on a storage tree.

``gc_dry_run`` / ``gc_run`` run that version's registry binary as a plain host process (2.8.2:
``/usr/bin/docker-registry``; 3.1.1: the binary scripts/build-registry-image.sh builds from the
vendored tarball, see ``registry_bin``) with a temporary config whose filesystem root is the
tree given, so a *copy* of a registry's tree can be collected while the registry keeps running
on the original. ``gc_in_container`` runs the registry inside a running registry container
(``docker exec``), as retentiond does.

Both versions print the same marking lines, summary and ``blob eligible for deletion:`` lines;
3.1.1 also prints each repository's name on a line of its own and, after the blobs,
``<repo>: layer link eligible for deletion: <digest>`` for every ``_layers`` link of an unmarked
digest (which its GC deletes, #4344). ``GcResult`` parses both: the fields other than
``layer_links`` and ``output`` mean the same on both versions (``comparable``).

``--delete-untagged`` is never used: on 2.8 it breaks multi-arch images.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.proc import docker, run
from tests.harness.registry import (
    CONTAINER_CONFIGS,
    DEFAULT_VERSION,
    RunningRegistry,
    check_version,
)

#: The registry binary on this host, per version (env overrides).
REGISTRY_BINS = {
    "2.8.2": os.environ.get("RETENTIOND_TEST_REGISTRY_BIN", "/usr/bin/docker-registry"),
    "3.1.1": os.environ.get(
        "RETENTIOND_TEST_REGISTRY3_BIN", "/var/cache/retentiond-test/bin/registry-3.1.1"
    ),
}
#: Debian's docker-registry 2.8.2 (the default version).
REGISTRY_BIN = REGISTRY_BINS[DEFAULT_VERSION]

_SUMMARY = re.compile(
    r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion$", re.M
)
_ELIGIBLE = re.compile(r"^blob eligible for deletion: (sha256:[0-9a-f]{64})\s*$", re.M)
_MARKING = re.compile(r": marking (?:manifest|blob) (sha256:[0-9a-f]{64})", re.M)
_LAYER_LINK = re.compile(
    r"^(\S+): layer link eligible for deletion: (sha256:[0-9a-f]{64})\s*$", re.M
)


def registry_bin(version: str = DEFAULT_VERSION) -> str:
    """The host binary of that registry version: 2.8.2 ``$RETENTIOND_TEST_REGISTRY_BIN`` or
    ``/usr/bin/docker-registry``; 3.1.1 ``$RETENTIOND_TEST_REGISTRY3_BIN`` or
    ``/var/cache/retentiond-test/bin/registry-3.1.1`` (the symlink the build script keeps)."""
    return REGISTRY_BINS[check_version(version)]


@dataclass(frozen=True)
class GcResult:
    """What a GC run printed, parsed. ``marked``/``blobs_eligible``/``manifests_eligible`` come
    from the summary line (0 when it is missing, e.g. on failure); ``eligible`` from the
    ``blob eligible for deletion:`` lines; ``marked_digests`` from ``marking ...`` lines;
    ``layer_links`` ((repository, digest) pairs) from 3.x's ``layer link eligible for
    deletion:`` lines (always empty on 2.8, whose GC leaves those links alone)."""

    eligible: set[str]
    marked: int
    blobs_eligible: int
    manifests_eligible: int
    returncode: int
    output: str
    marked_digests: set[str] = field(default_factory=set)
    layer_links: set[tuple[str, str]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def empty_registry(self) -> bool:
        """GC of a tree that never received a push (no ``repositories/``): exit 1,
        ``Path not found``. Not an error for retentiond."""
        return self.returncode != 0 and "Path not found" in self.output

    @property
    def comparable(self) -> tuple[bool, frozenset[str], int, int, int, frozenset[str]]:
        """What both versions' GCs must agree on for the same tree: success, the eligible
        blobs, the summary's numbers and the marked digests."""
        return (
            self.ok,
            frozenset(self.eligible),
            self.marked,
            self.blobs_eligible,
            self.manifests_eligible,
            frozenset(self.marked_digests),
        )


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
        layer_links={(repo, digest) for repo, digest in _LAYER_LINK.findall(output)},
    )


def gc_config(root: Path) -> str:
    """A minimal registry config whose filesystem rootdirectory is ``root`` (the same keys
    for 2.8 and 3.x)."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {Path(root).resolve()}\n"
        "  delete:\n    enabled: true\n"
    )


def _gc(root: Path, dry_run: bool, timeout: float, version: str) -> GcResult:
    with tempfile.TemporaryDirectory(prefix="retentiond-gc-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(gc_config(root))
        cmd = [registry_bin(version), "garbage-collect"]
        if dry_run:
            cmd.append("--dry-run")
        cmd.append(str(config))
        proc = run(cmd, check=False, timeout=timeout)
    return parse_gc_output(proc.stdout + proc.stderr, proc.returncode)


def gc_dry_run(root: Path, *, version: str = DEFAULT_VERSION, timeout: float = 300.0) -> GcResult:
    """``registry garbage-collect --dry-run`` of ``version`` on the tree at ``root`` (which
    contains ``docker/registry/v2``). Failures (exit 1) are returned, not raised."""
    return _gc(root, True, timeout, version)


def gc_run(root: Path, *, version: str = DEFAULT_VERSION, timeout: float = 300.0) -> GcResult:
    """A real GC (deletes unmarked blobs; 3.x also their ``_layers`` links) of ``version`` on
    ``root``; never ``--delete-untagged``. Only on a tree no running registry writes to (a
    copy, or a stopped/read-only registry)."""
    return _gc(root, False, timeout, version)


def gc_in_container(
    container: str | RunningRegistry,
    *,
    dry_run: bool = True,
    config: str | None = None,
    version: str = DEFAULT_VERSION,
    timeout: float = 300.0,
) -> GcResult:
    """Run the GC inside a registry container with ``docker exec``. ``container`` is a name or
    a ``RunningRegistry`` (whose version then chooses the config); ``config`` defaults to the
    version's config path in its image."""
    if isinstance(container, RunningRegistry):
        name, version = container.name, container.version
    else:
        name = container
    args = ["exec", name, "registry", "garbage-collect"]
    if dry_run:
        args.append("--dry-run")
    args.append(config or CONTAINER_CONFIGS[check_version(version)])
    proc = docker(*args, check=False, timeout=timeout)
    return parse_gc_output(proc.stdout + proc.stderr, proc.returncode)
