"""A run's cleaning against a real registry: the ``_layers`` links the GC left dangling are
dropped once the registry takes pushes again (``layer_link_candidates`` from the inventory the
run planned on, ``drop_dangling_layer_links``), the emptied prefix directories and namespaces
go inside the window (``clean_touched``), and images pushed again pull. On 2.8.2 and 3.1.1:
3.x's GC drops those links itself (#4344), so the cleaning then finds none left."""

from __future__ import annotations

from pathlib import Path

import pytest

from retentiond.core.layer_links import layer_link_candidates
from retentiond.storage.cleanup import clean_touched, drop_dangling_layer_links
from retentiond.storage.reader import read_inventory
from tests.harness.gc import gc_dry_run, gc_run
from tests.harness.images import OciImage, make_oci_image, pull_ok, push_oci
from tests.harness.registry import RunningRegistry, restart_registry
from tests.harness.tree import layer_link_dir, remove_tag, repo_dir, unlink_manifest

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]
READ_ONLY = {"REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled": true}'}
SHARED = b"a layer both images have"


def remove_image(root: Path, repo: str, tag: str, image: OciImage) -> None:
    remove_tag(root, repo, tag)
    unlink_manifest(root, repo, image.digest)


def collect(registry: RunningRegistry) -> set[str]:
    """What a run does between its removals and its cleaning: the registry read-only, the
    GC, the registry read-write again (a restart, which clears its blob descriptor cache).
    Returns the digests the GC deleted, as its dry-run named them."""
    dry = gc_dry_run(registry.root, version=registry.version)
    restart_registry(registry, env=READ_ONLY)
    done = gc_run(registry.root, version=registry.version)
    assert done.ok, done.output
    assert done.layer_links == dry.layer_links
    restart_registry(registry, env={})
    return set(dry.eligible)


def setup(registry: RunningRegistry) -> tuple[OciImage, OciImage]:
    """team/app keeps ``new`` and loses ``old``; team/web and ns/gone/web had ``old`` alone."""
    old = make_oci_image([SHARED, b"old's own layer"], seed="old")
    new = make_oci_image([SHARED, b"new's own layer"], seed="new")
    push_oci(registry, "team/app", "old", old)
    push_oci(registry, "team/app", "new", new)
    push_oci(registry, "team/web", "old", old)
    push_oci(registry, "ns/gone/web", "old", old)
    return old, new


def test_dangling_links_are_dropped_and_images_pushed_again_pull(
    registry: RunningRegistry,
) -> None:
    old, new = setup(registry)
    root = registry.root
    inventory = read_inventory(root)  # what the run planned on
    remove_image(root, "team/app", "old", old)
    remove_image(root, "team/web", "old", old)
    gone_repo = repo_dir(root, "ns/gone/web")
    gone_repo.rename(root / "held-away")  # a repository removed whole, as a run moves it
    deleted = collect(registry)
    assert deleted == {old.digest, old.config_digest, old.layer_digests[1]}
    prefixes = {digest[7:9] for digest in deleted}
    cleaned = clean_touched(root, prefixes=prefixes, removed_repositories=["ns/gone/web"])
    assert cleaned.namespace_dirs == 2  # ns/gone, ns
    assert not (root / "docker/registry/v2/repositories/ns").exists()
    store = root / "docker/registry/v2/blobs/sha256"
    assert all(any((store / p).iterdir()) for p in prefixes if (store / p).is_dir())

    reclaimable = dict.fromkeys(deleted, 0)
    candidates = list(layer_link_candidates(inventory, reclaimable))
    assert ("team/app", new.config_digest) not in candidates
    if registry.version != "2.8.2":
        # 3.x's GC deleted these links itself (#4344): their `link` files, not the
        # directories, which the cleaning drops as it drops 2.8's dangling links
        for repo in ("team/app", "team/web"):
            for digest in (old.config_digest, old.layer_digests[1]):
                assert layer_link_dir(root, repo, digest).is_dir()
                assert not (layer_link_dir(root, repo, digest) / "link").exists()
    assert drop_dangling_layer_links(root, candidates) == 4  # config + own layer, two repos
    for repo in ("team/app", "team/web"):
        assert not layer_link_dir(root, repo, old.config_digest).exists()
        assert not layer_link_dir(root, repo, old.layer_digests[1]).exists()
        assert layer_link_dir(root, repo, old.layer_digests[0]).exists()  # SHARED
    assert pull_ok(registry, "team/app", "new")

    push_oci(registry, "team/app", "old", old)
    push_oci(registry, "team/web", "old", old)
    assert pull_ok(registry, "team/app", "old")
    assert pull_ok(registry, "team/web", "old")


def test_a_push_before_the_links_are_dropped_keeps_them(registry: RunningRegistry) -> None:
    old, _ = setup(registry)
    root = registry.root
    inventory = read_inventory(root)
    remove_image(root, "team/app", "old", old)
    remove_image(root, "team/web", "old", old)
    deleted = collect(registry)
    push_oci(registry, "team/app", "old", old)  # the registry takes pushes again
    candidates = layer_link_candidates(inventory, dict.fromkeys(deleted, 0))
    assert drop_dangling_layer_links(root, candidates) == 0
    assert layer_link_dir(root, "team/app", old.config_digest).exists()
    assert pull_ok(registry, "team/app", "old")
