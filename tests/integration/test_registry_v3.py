"""distribution v3.1.1's own behaviours, through `retentiond apply` against a real v3.1.1
registry container (``retentiond-test/registry:3.1.1``), checked with real pulls and pushes.

What v3 does differently from 2.8 (docs: registry-internals.md, "distribution v3"):

- its GC deletes the ``_layers`` links of the digests it did not mark (#4344): the ``link``
  files, leaving their directories empty, which retentiond's post-GC link cleanup removes;
- ``tags/list`` in 3.1.0-3.1.1 can drop a tag whose name extends another's (#4891; S3 driver
  only, so not seen here: retentiond must not rely on the list anyway);
- its redis options are go-redis's (``redis.addrs: [...]``);
- ``DELETE /v2/<name>/manifests/<tag>`` untags (#3427): retentiond never uses it;
- it cannot read schema1 manifests (#4358).

Every test here runs on 3.1.1 only: ``registry_version`` is overridden for the module, so the
shared ``registry``, ``docker_ready`` and ``redis`` fixtures give a 3.1.1 registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.gc import gc_run
from tests.harness.images import (
    OciImage,
    canonical_json,
    make_oci_image,
    pull_error,
    pull_ok,
    push_oci,
    sha256_digest,
    tag_alias,
)
from tests.harness.proc import docker
from tests.harness.redis import RunningRedis
from tests.harness.registry import (
    RunningRegistry,
    restart_registry,
    start_registry,
    stop_registry,
)
from tests.harness.tree import (
    blob_data,
    blob_exists,
    data_bytes,
    layer_link_dir,
    list_tags,
    remove_tag,
    revision_dir,
    set_pushed_at,
    tag_digest,
    tag_dir,
    unlink_manifest,
    v2,
)

pytestmark = pytest.mark.registry
REPO_ROOT = Path(__file__).resolve().parents[2]
V3 = "3.1.1"


@pytest.fixture
def registry_version() -> str:
    """Every test of this module runs on distribution v3.1.1."""
    return V3


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


# --------------------------------------------------------------------------------------------
# retentiond as an operator runs it


@dataclass
class Setup:
    registry: RunningRegistry
    config: Path
    state: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "retentiond", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
            env={**os.environ},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"retentiond {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def apply(self) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "--yes")

    def plan(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("plan", "--json").stdout)
        return doc

    def last_record(self) -> dict[str, Any]:
        lines = (self.state / "runs.jsonl").read_text().splitlines()
        record: dict[str, Any] = json.loads(lines[-1])
        return record


def make_setup(
    reg: RunningRegistry,
    tmp_path: Path,
    policy: str,
    *,
    cache: str = "inmemory",
    redis_url: str | None = None,
) -> Setup:
    """A retentiond config for ``reg`` (docker runtime, readonly GC, JSON logs) and ``policy``.
    ``runtime.registry_config`` is v3's path, written out: these tests are about v3's
    behaviours, not about finding its config."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(textwrap.dedent(policy))
    config = tmp_path / "retentiond.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        registry:
          root: {reg.root}
          url: {reg.url}
          cache: {cache}
          redis_url: {redis_url or "null"}
        runtime:
          kind: docker
          container: {reg.name}
          registry_config: {reg.config_path}
          gc_mode: readonly
        policies: [policies/]
        safety:
          untagged_min_age: 1h
        state_dir: {tmp_path / "state"}
        log:
          format: json
        """)
    )
    return Setup(reg, config, tmp_path / "state")


def log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` retentiond wrote on stderr."""
    out = []
    for line in stderr.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            out.append(doc)
    return out


def layer_link_dirs(root: Path, repo: str) -> set[str]:
    """The digests ``repo`` has a ``_layers/sha256/<hex>/`` directory for."""
    base = v2(root) / "repositories" / repo / "_layers" / "sha256"
    return {f"sha256:{p.name}" for p in base.iterdir()} if base.is_dir() else set()


def layer_links(root: Path, repo: str) -> set[str]:
    """The digests ``repo`` has a ``_layers`` link (the ``link`` file) for."""
    return {
        d for d in layer_link_dirs(root, repo) if (layer_link_dir(root, repo, d) / "link").is_file()
    }


def get_json(reg: RunningRegistry, path: str) -> tuple[dict[str, Any], str | None]:
    """``GET path`` on the registry: the JSON body and the ``Link`` header."""
    with urllib.request.urlopen(f"{reg.url}{path}", timeout=10) as response:
        doc: dict[str, Any] = json.load(response)
        return doc, response.headers.get("Link")


def listed_tags(reg: RunningRegistry, repo: str, page: int | None = None) -> list[str]:
    """The tags ``GET /v2/<repo>/tags/list`` names, following ``Link`` (``?n=page``)."""
    path: str | None = f"/v2/{repo}/tags/list" + (f"?n={page}" if page else "")
    tags: list[str] = []
    while path:
        doc, link = get_json(reg, path)
        tags += doc.get("tags") or []
        path = link.split(";")[0].strip().strip("<>") if link else None
    return tags


SHARED = b"a layer both images hold" * 100
KEPT = make_oci_image([SHARED, b"the kept image's own layer" * 100], seed="kept")
OLD = make_oci_image([SHARED, b"the deleted image's own layer" * 100], seed="old")
#: what a GC deletes once OLD is untagged: its manifest, config and own layer
GONE = OLD.blob_digests - KEPT.blob_digests

#: what retentiond logs when it did not understand the GC's output
WALKED = "the GC's output was not understood; cleaning walks the whole tree"

KEEP_LATEST = """
    policies:
      - name: app
        repositories: [app]
        keep: {tags: [latest]}
"""


def push_and_pull(reg: RunningRegistry, repo: str, tag: str, image: OciImage) -> None:
    push_oci(reg, repo, tag, image)
    assert pull_ok(reg, repo, tag)


# --------------------------------------------------------------------------------------------
# 1. v3's GC removes the _layers links of the digests it did not mark
#
# Seen on 3.1.1: only the `link` file goes, the `<hex>/` directory stays, empty. retentiond's
# drop after the window (drop_dangling_layer_links) takes those directories for dangling
# links and removes them, so its `layer_links` count is the number of links v3 already
# dropped, not 0; nothing else is left for it to do, and nothing goes wrong.


def test_gc_drops_the_layer_links_itself_and_the_cleanup_only_tidies(
    registry: RunningRegistry, tmp_path: Path, registry_root_copy: Callable[[Path], Path]
) -> None:
    push_oci(registry, "app", "latest", KEPT)
    push_oci(registry, "app", "old", OLD)
    set_pushed_at(registry.root, "app", "old", ago(3))
    # the links of the blobs the GC will delete (config and own layer: a manifest pushed with
    # PUT has a revision link, not a _layers one)
    doomed = layer_links(registry.root, "app") & GONE
    assert doomed == GONE - {OLD.digest}

    # What v3's GC does on its own, on a copy untagged by hand: it deletes the `link` file of
    # every _layers link of a digest it did not mark (#4344) and prints it, but leaves the
    # link's directory, empty (Vacuum.RemoveLayer deletes <hex>/link, not <hex>/).
    copy = registry_root_copy(registry.root)
    remove_tag(copy, "app", "old")
    unlink_manifest(copy, "app", OLD.digest)
    gc = gc_run(copy, version=V3)
    assert gc.ok and gc.eligible == GONE, gc.output
    assert gc.layer_links == {("app", d) for d in doomed}, gc.output
    assert layer_links(copy, "app") & GONE == set()
    assert layer_link_dirs(copy, "app") & GONE == doomed

    setup = make_setup(registry, tmp_path, KEEP_LATEST)
    planned = setup.plan()["summary"]["bytes_reclaimed"]
    before = data_bytes(registry.root)

    result = setup.apply()

    record = setup.last_record()
    assert record["status"] == "ok", record
    assert record["errors"] == [] and record["broken"] == [], record
    assert record["gc_ran"] is True
    assert planned > 0
    assert record["bytes_reclaimed"] == planned == before - data_bytes(registry.root)
    assert record["blobs_deleted"] == len(GONE)
    assert not any(blob_exists(registry.root, d) for d in GONE)
    # the GC's output (with its layer-link lines) was understood: no walk of the whole tree
    assert not log_events(result.stderr, WALKED), result.stderr
    assert record["cleaned"].get("layer_links", 0) == 0
    # retentiond's drop after the run found no link left to drop; what it counts are the
    # empty directories v3's GC left, which it removes (with no error)
    cleaned = log_events(result.stderr, "tidied after the run")
    assert [e["layer_links"] for e in cleaned] == [len(doomed)], result.stderr
    assert layer_link_dirs(registry.root, "app") == KEPT.blob_digests - {KEPT.digest}
    assert layer_links(registry.root, "app") == KEPT.blob_digests - {KEPT.digest}
    assert pull_ok(registry, "app", "latest")
    assert not pull_ok(registry, "app", "old")
    # a re-push of the collected image makes its links again and pulls
    push_oci(registry, "app", "old", OLD)
    assert pull_ok(registry, "app", "old")


# --------------------------------------------------------------------------------------------
# 2. tags/list and a tag whose name extends another's (distribution#4891)


def test_tags_extending_another_are_kept_and_verified(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    images = {
        tag: make_oci_image([f"release {tag}".encode() * 50], seed=tag)
        for tag in ("0.1.2", "0.1.20", "0.1.21", "0.1.200")
    }
    for tag, image in images.items():
        push_oci(registry, "app", tag, image)
    for tag in ("0.1.21", "0.1.200"):  # older than the kept ones (the newest tag survives)
        set_pushed_at(registry.root, "app", tag, ago(3))
    # #4891 is in the S3 driver's Walk (distribution#4898: "the filesystem and inmemory
    # drivers ... don't use this skip mechanism"): on this filesystem-backed 3.1.1 tags/list
    # names every tag, whole and page by page. Observed here; retentiond must not rely on it
    # anyway (its verification asks a deleted tag that extends a listed one itself).
    assert listed_tags(registry, "app") == sorted(images)
    assert listed_tags(registry, "app", page=1) == sorted(images)
    assert get_json(registry, "/v2/app/tags/list?n=1&last=0.1.2")[0]["tags"] == ["0.1.20"]
    setup = make_setup(
        registry,
        tmp_path,
        """
        policies:
          - name: app
            repositories: [app]
            keep: {tags: ["0.1.2", "0.1.20"]}
        """,
    )
    plan = setup.plan()
    deleted = sorted(t["tag"] for t in plan["tags"])
    assert deleted == ["0.1.200", "0.1.21"]

    setup.apply()

    record = setup.last_record()
    assert record["status"] == "ok" and record["broken"] == [] and record["errors"] == [], record
    assert record["removed"]["tags"] == 2
    for tag in ("0.1.2", "0.1.20"):
        assert pull_ok(registry, "app", tag), tag
        assert tag_digest(registry.root, "app", tag) == images[tag].digest
    for tag in ("0.1.21", "0.1.200"):
        assert not pull_ok(registry, "app", tag), tag
    assert list_tags(registry.root, "app") == ["0.1.2", "0.1.20"]
    assert listed_tags(registry, "app") == ["0.1.2", "0.1.20"]
    assert setup.run("verify").returncode == 0


# --------------------------------------------------------------------------------------------
# 3. the redis blob descriptor cache, configured with v3's go-redis options


@pytest.fixture
def cached_registry(
    docker_ready: None, redis: RunningRedis, tmp_path: Path
) -> Iterator[RunningRegistry]:
    """A 3.1.1 registry whose blob descriptor cache is ``redis``: v3's ``redis.addrs`` (a
    list, go-redis's ``UniversalOptions``), set through the container's environment, which v3
    parses as YAML into the config field (``REGISTRY_REDIS_ADDR``, 2.8's key, would leave
    redis unconfigured and make v3 panic: "redis configuration required")."""
    env = {
        "REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis",
        "REGISTRY_REDIS_ADDRS": f"[{redis.addr}]",
    }
    reg = start_registry(tmp_path / "registry", env=env, version=V3)
    try:
        yield reg
    finally:
        logs = docker("logs", "--tail", "20", reg.name, check=False)
        print(f"--- last log lines of {reg.name} ({reg.url}, root {reg.root}) ---")
        print((logs.stdout + logs.stderr).strip())
        stop_registry(reg)


def cached(redis: RunningRedis, repo: str, digests: set[str]) -> set[str]:
    """The keys redis holds for ``digests``: global and in ``repo``."""
    keys = {f"blobs::{d}" for d in digests} | {f"repository::{repo}::blobs::{d}" for d in digests}
    return keys & redis.keys()


def test_redis_addrs_cache_is_forgotten_so_a_repush_pulls(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    reg = cached_registry
    push_and_pull(reg, "app", "latest", KEPT)
    push_and_pull(reg, "app", "old", OLD)
    set_pushed_at(reg.root, "app", "old", ago(2))
    # v3 really uses that redis, with 2.8's keys
    assert {f"blobs::{d}" for d in GONE} <= redis.keys()
    assert cached(redis, "app", GONE - {OLD.digest}) >= {
        f"repository::app::blobs::{d}" for d in GONE - {OLD.digest}
    }
    setup = make_setup(reg, tmp_path, KEEP_LATEST, cache="redis", redis_url=redis.url)

    result = setup.apply()

    record = setup.last_record()
    assert record["status"] == "ok" and record["errors"] == [], record
    assert not any(blob_exists(reg.root, d) for d in GONE)  # the GC ran
    assert cached(redis, "app", GONE) == set()
    assert cached(redis, "app", KEPT.blob_digests)  # the kept image's entries stay
    assert log_events(result.stderr, "redis cache cleaned")
    assert pull_ok(reg, "app", "latest")
    assert not pull_ok(reg, "app", "old")

    push_oci(reg, "app", "old", OLD)  # the stale-cache trap: "blob already exists"
    assert pull_error(reg, "app", "old") is None
    assert all(blob_exists(reg.root, d) for d in GONE)
    restart_registry(reg, env={})  # no cache: what storage alone holds
    assert pull_error(reg, "app", "old") is None
    assert pull_error(reg, "app", "latest") is None


def test_a_link_v3s_gc_drops_of_a_kept_blob_is_forgotten_too(
    redis: RunningRedis, cached_registry: RunningRegistry, tmp_path: Path
) -> None:
    """v3's GC sweeps each repository's ``_layers`` links as it walks the repositories (in
    name order), against the digests marked so far: ``app`` (walked first) loses its link of
    SHARED, which only ``base/os`` (walked after) still references, although the blob stays.
    A re-push of OLD into ``app`` must upload SHARED again (make the link), not trust redis:
    retentiond reads the GC's layer-link lines and forgets what redis holds for ``app``."""
    reg = cached_registry
    own = make_oci_image([b"app's kept image" * 100], seed="app-latest")
    push_and_pull(reg, "app", "latest", own)
    push_and_pull(reg, "app", "old", OLD)
    push_and_pull(reg, "base/os", "1", KEPT)  # holds SHARED
    set_pushed_at(reg.root, "app", "old", ago(2))
    shared = next(d for d in OLD.layer_digests if d in KEPT.layer_digests)
    assert {f"repository::app::blobs::{shared}"} <= redis.keys()
    setup = make_setup(reg, tmp_path, KEEP_LATEST, cache="redis", redis_url=redis.url)

    setup.apply()

    record = setup.last_record()
    assert record["status"] == "ok" and record["errors"] == [], record
    assert blob_exists(reg.root, shared)  # base/os keeps it ...
    assert shared not in layer_links(reg.root, "app")  # ... v3 took app's link
    assert pull_ok(reg, "app", "latest") and pull_ok(reg, "base/os", "1")

    push_oci(reg, "app", "old", OLD)
    assert pull_error(reg, "app", "old") is None  # passes: redis still says "linked"
    restart_registry(reg, env={})  # what storage alone holds
    assert pull_error(reg, "app", "old") is None  # fails: SHARED is not linked in app


# --------------------------------------------------------------------------------------------
# 4. DELETE by tag exists on v3 (it untags only); retentiond does not use it


def test_deleting_a_tag_keeps_its_alias_pullable(registry: RunningRegistry, tmp_path: Path) -> None:
    push_oci(registry, "app", "v1", OLD)
    digest = tag_alias(registry, "app", "v1", "stable")
    set_pushed_at(registry.root, "app", "v1", ago(3))
    setup = make_setup(
        registry,
        tmp_path,
        """
        policies:
          - name: app
            repositories: [app]
            keep: {tags: [stable]}
            untagged: delete
        """,
    )
    plan = setup.plan()
    assert [(t["repository"], t["tag"]) for t in plan["tags"]] == [("app", "v1")]
    assert plan["summary"]["bytes_reclaimed"] == 0

    setup.apply()

    record = setup.last_record()
    assert record["status"] == "ok" and record["broken"] == [] and record["errors"] == [], record
    assert record["removed"]["tags"] == 1 and record["removed"]["manifests"] == 0
    assert not pull_ok(registry, "app", "v1")
    assert pull_ok(registry, "app", "stable") and pull_ok(registry, "app", digest)
    assert all(blob_exists(registry.root, d) for d in OLD.blob_digests)
    assert list_tags(registry.root, "app") == ["stable"]


# --------------------------------------------------------------------------------------------
# 5. schema1 manifests, which v3 cannot read (#4358)


def write_link(path: Path, digest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)


def write_blob(root: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    blob_data(root, digest).parent.mkdir(parents=True, exist_ok=True)
    blob_data(root, digest).write_bytes(data)
    return digest


def write_schema1(root: Path, repo: str, tag: str) -> tuple[str, str]:
    """A schema1 image (``schemaVersion: 1``, one ``fsLayers`` blob), written into the tree as
    registry 2.x stored a push of one: blobs, ``_layers`` link, revision link, tag. No client
    here pushes schema1 any more and v3 refuses it; the signature is left out (neither
    retentiond nor 2.8's GC checks it). Returns (manifest digest, layer digest)."""
    layer = write_blob(root, f"schema1 layer of {repo}:{tag}".encode() * 20)
    v1 = {"id": sha256_digest(repo.encode())[7:], "created": "2016-01-01T00:00:00Z"}
    manifest = {
        "schemaVersion": 1,
        "name": repo,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer}],
        "history": [{"v1Compatibility": json.dumps(v1)}],
    }
    digest = write_blob(root, canonical_json(manifest))
    write_link(layer_link_dir(root, repo, layer) / "link", layer)
    write_link(revision_dir(root, repo, digest) / "link", digest)
    write_link(tag_dir(root, repo, tag) / "current" / "link", digest)
    write_link(tag_dir(root, repo, tag) / "index" / "sha256" / digest[7:] / "link", digest)
    return digest, layer


def schema1_setup(registry: RunningRegistry, tmp_path: Path) -> tuple[Setup, str, str]:
    """``app:latest`` (kept), ``app:old`` (deleted by the policy) and ``legacy/app:1.0``, a
    schema1 image no policy applies to. Returns the setup and the schema1 digests."""
    push_oci(registry, "app", "latest", KEPT)
    push_oci(registry, "app", "old", OLD)
    set_pushed_at(registry.root, "app", "old", ago(3))
    digest, layer = write_schema1(registry.root, "legacy/app", "1.0")
    # what v3 makes of it: the tag is listed, its manifest cannot be served
    assert listed_tags(registry, "legacy/app") == ["1.0"]
    assert pull_error(registry, "legacy/app", "1.0") is not None
    return make_setup(registry, tmp_path, KEEP_LATEST), digest, layer


def test_schema1_tags_are_reported_by_plan(registry: RunningRegistry, tmp_path: Path) -> None:
    setup, _, _ = schema1_setup(registry, tmp_path)

    plan = setup.plan()

    assert plan["summary"]["schema1_tags"] == 1, plan
    assert plan["schema1_tags"] == [{"repository": "legacy/app", "tags": ["1.0"]}], plan
    assert sorted(t["tag"] for t in plan["tags"]) == ["old"]
    assert plan["problems"] == [] and plan["refused"] == [], plan
    text = setup.run("plan").stdout
    assert "schema1 legacy/app: 1 tag (1.0)" in text, text


def test_apply_with_a_schema1_manifest_on_v3_refuses_before_removing(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    """No maintenance can succeed on v3 while a schema1 manifest is linked: its GC aborts when
    it marks one. apply must say so before it removes anything (as for any tree the GC would
    abort on), not after."""
    setup, digest, layer = schema1_setup(registry, tmp_path)

    result = setup.run("apply", "--yes", check=False)

    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output  # never an internal error
    assert pull_ok(registry, "app", "latest")  # the registry is back, read-write
    assert blob_exists(registry.root, digest) and blob_exists(registry.root, layer)
    assert tag_digest(registry.root, "legacy/app", "1.0") == digest
    assert "schema1" in output, output  # named as the cause, with legacy/app
    assert "legacy/app" in output, output
    assert pull_ok(registry, "app", "old"), output  # nothing was removed
