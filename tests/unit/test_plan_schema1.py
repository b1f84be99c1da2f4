"""The plan names the tags whose manifest is schema1, which distribution v3 cannot serve: in
each repository's summary, in ``plan --json`` (``summary.schema1_tags``, ``schema1_tags``) and
in the text output. Always, whatever the registry's version (the plan does not know it)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retentiond.commands.plan import write_plan_json
from retentiond.core.plan import make_plan
from retentiond.core.values import MEDIA_DOCKER_MANIFEST, MEDIA_SCHEMA1, Manifest, Tag
from retentiond.policy.model import KeepRules, Policy, Safety
from retentiond.policy.selectors import Selector
from retentiond.render import plan_json, plan_table
from retentiond.storage.reader import read_inventory
from tests.builders import InventoryBuilder
from tests.harness.tree import blob_data, layer_link_dir, repo_dir, revision_dir, tag_dir

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def keep_last(n: int, repos: str = "**") -> Policy:
    return Policy(
        name="p",
        repositories=Selector.parse([repos]),
        tags=Selector.parse(["*"]),
        keep=KeepRules(last=n),
    )


def test_schema1_tags_are_named_per_repository() -> None:
    old = NOW - timedelta(days=30)
    inventory = (
        InventoryBuilder()
        .manifest(Manifest(d(1), MEDIA_SCHEMA1, blobs=(d(10),)), size=300)
        .manifest(Manifest(d(2), MEDIA_SCHEMA1, blobs=(d(10), d(11))), size=300)
        .manifest(Manifest(d(3), MEDIA_DOCKER_MANIFEST, blobs=(d(12),), config=d(12)), size=300)
        .blobs({d(10): 10, d(11): 11, d(12): 12})
        .repository(
            "legacy/app",
            [
                Tag("1.0", d(1), old),
                Tag("1.1", d(2), old),
                Tag("2.0", d(3), NOW),
                Tag("x", d(2), old),
            ],
            {d(1): old, d(2): old, d(3): NOW},
        )
        .repository("modern/app", [Tag("latest", d(3), NOW)], {d(3): NOW})
        .build()
    )
    plan = make_plan(inventory, [keep_last(1)], Safety(), NOW)

    by_name = {r.name: r for r in plan.per_repository}
    assert by_name["legacy/app"].schema1_tags == ("1.0", "1.1", "x")
    assert by_name["modern/app"].schema1_tags == ()
    # reported whether the plan deletes them or not
    assert sorted(t.tag for t in plan.tags_deleted) == ["1.0", "1.1", "x"]

    doc = plan_json(plan)
    assert doc["summary"]["schema1_tags"] == 3
    assert doc["schema1_tags"] == [{"repository": "legacy/app", "tags": ["1.0", "1.1", "x"]}]
    assert plan_json(plan, Selector.parse(["modern/**"]))["schema1_tags"] == []
    out = io.StringIO()
    write_plan_json(plan, None, out)
    assert json.loads(out.getvalue()) == doc

    text = plan_table(plan, verbose=False).splitlines()
    assert "schema1 legacy/app: 3 tags (1.0, 1.1, x)" in text
    assert text[-1] == (
        "3 tags point at schema1 manifests, which registry:3 (distribution v3) cannot serve: "
        "push them again as schema2 or OCI (e.g. skopeo copy --format v2s2) before moving to "
        "registry:3"
    )
    assert not any(
        "schema1" in line for line in plan_table(plan, Selector.parse(["modern/**"])).splitlines()
    )


def test_without_schema1_nothing_is_said() -> None:
    inventory = (
        InventoryBuilder()
        .manifest(Manifest(d(3), MEDIA_DOCKER_MANIFEST, blobs=(d(12),), config=d(12)), size=300)
        .blob(d(12), 12)
        .repository("app", [Tag("latest", d(3), NOW)], {d(3): NOW})
        .build()
    )
    plan = make_plan(inventory, [keep_last(1)], Safety(), NOW)
    doc = plan_json(plan)
    assert doc["summary"]["schema1_tags"] == 0 and doc["schema1_tags"] == []
    assert "schema1" not in plan_table(plan)


def _blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_data(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _link(directory: Path, digest: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "link").write_text(digest)


def test_a_schema1_manifest_on_disk_is_reported(tmp_path: Path) -> None:
    """As registry 2.x stored a push of a schema1 image (its signature left out: nothing
    checks it), read by the storage reader; many tags, so the text names five."""
    root = tmp_path / "registry"
    layer = _blob(root, b"a layer of an image from 2016" * 10)
    v1 = json.dumps({"id": "ab" * 32, "created": "2016-01-01T00:00:00Z"})
    manifest = json.dumps(
        {
            "schemaVersion": 1,
            "name": "legacy/app",
            "tag": "t0",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": layer}],
            "history": [{"v1Compatibility": v1}],
        },
        indent=3,
    ).encode()
    digest = _blob(root, manifest)
    _link(layer_link_dir(root, "legacy/app", layer), layer)
    _link(revision_dir(root, "legacy/app", digest), digest)
    for n in range(7):
        _link(tag_dir(root, "legacy/app", f"t{n}") / "current", digest)
        _link(tag_dir(root, "legacy/app", f"t{n}") / "index/sha256" / digest[7:], digest)
    assert repo_dir(root, "legacy/app").is_dir()

    inventory = read_inventory(root)
    assert inventory.manifests[digest].media_type == MEDIA_SCHEMA1
    plan = make_plan(inventory, [keep_last(100)], Safety(), NOW)

    assert plan_json(plan)["schema1_tags"] == [
        {"repository": "legacy/app", "tags": [f"t{n}" for n in range(7)]}
    ]
    assert "schema1 legacy/app: 7 tags (t0, t1, t2, t3, t4 and 2 more)" in plan_table(plan)


def test_on_v3_a_schema1_revision_left_linked_blocks_the_gc() -> None:
    """v3's GC aborts when it marks a schema1 manifest: with ``gc_reads_schema1=False`` (the
    runtime found a v3 registry) every schema1 revision the plan leaves linked is a GC_ABORT
    problem, so a maintenance refuses before it removes anything; one the plan unlinks is not
    (it is gone before the GC runs). On 2.8 (the default) nothing is blocked."""
    old = NOW - timedelta(days=30)
    inventory = (
        InventoryBuilder()
        .manifest(Manifest(d(1), MEDIA_SCHEMA1, blobs=(d(10),)), size=300)
        .manifest(Manifest(d(2), MEDIA_SCHEMA1, blobs=(d(11),)), size=300)
        .manifest(Manifest(d(3), MEDIA_DOCKER_MANIFEST, blobs=(d(12),), config=d(12)), size=300)
        .blobs({d(10): 10, d(11): 11, d(12): 12})
        .repository(
            "legacy/app",
            [Tag("1.0", d(1), old), Tag("2.0", d(3), NOW)],
            {d(1): old, d(3): NOW},
        )
        .repository("kept/app", [Tag("1.0", d(2), NOW)], {d(2): NOW})
        .build()
    )
    on_v2 = make_plan(inventory, [keep_last(1)], Safety(), NOW)
    assert not on_v2.gc_blocked

    on_v3 = make_plan(inventory, [keep_last(1)], Safety(), NOW, gc_reads_schema1=False)
    assert on_v3.gc_blocked
    blocking = [p for p in on_v3.problems if p.kind.value == "gc-abort"]
    assert [(p.repository, d(2) in p.message) for p in blocking] == [("kept/app", True)]
    assert "schema1" in blocking[0].message
    assert blocking[0].path.endswith(
        f"/repositories/kept/app/_manifests/revisions/sha256/{d(2)[7:]}/link"
    )
    # the plan itself is the same: only the GC is blocked
    assert [t.tag for t in on_v3.tags_deleted] == [t.tag for t in on_v2.tags_deleted]
