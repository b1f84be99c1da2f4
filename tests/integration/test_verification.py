"""`verify_run` against a real registry (2.8.2 and 3.1.1) with real pushes: what a run's
verification reports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from retentiond.registry import RegistryClient
from retentiond.verification import AHEAD, verify_run
from tests.harness.images import OciImage, make_oci_image, make_oci_index, push_oci
from tests.harness.registry import RunningRegistry, restart_registry
from tests.harness.tree import blob_data, layer_link_dir, remove_tag

pytestmark = [pytest.mark.registry, pytest.mark.both_registries]


def never(repository: str, tag: str) -> bool:
    raise AssertionError(f"reappeared asked for {repository}:{tag}, which answered 404")


def test_kept_images_verified_each_digest_asked_once(registry: RunningRegistry) -> None:
    first = push_oci(registry, "team/app", "v1", make_oci_image([b"base", b"one"], seed="1"))
    second = push_oci(registry, "team/app", "v2", make_oci_image([b"base", b"two"], seed="2"))
    index = make_oci_index(seed="multi")
    push_oci(registry, "team/app", "multi", index)
    kept = [
        ("team/app", "v1", first),
        ("team/app", "v2", second),
        ("team/app", "multi", index.digest),
    ]

    with RegistryClient(registry.url) as client:
        result = verify_run(client, iter(kept), iter([]), reappeared=never)

    assert result.broken == []
    # v1: GET + config + 2 layers; v2: GET + config + its own layer (base asked once);
    # multi: GET + per child (GET + config + layer)
    assert result.requests == 4 + 3 + 1 + 2 * 3
    assert result.seconds > 0


def test_missing_blob_reported_as_before(registry: RunningRegistry) -> None:
    image = make_oci_image([b"base", b"gone"], seed="1")
    push_oci(registry, "team/app", "v1", image)
    push_oci(registry, "team/app", "v2", make_oci_image([b"base"], seed="2"))
    missing = image.layer_digests[1]
    blob_data(registry.root, missing).unlink()
    restart_registry(registry)  # as a run does before it verifies: nothing cached
    kept = [("team/app", "v1", image.digest)]

    with RegistryClient(registry.url) as client:
        result = verify_run(client, kept, [], reappeared=never)

    assert result.broken == [f"team/app:v1: blob {missing} of {image.digest} answered 404"]


def test_deleted_tags(registry: RunningRegistry) -> None:
    for tag in ("still", "again", "gone"):
        push_oci(registry, "team/app", tag, make_oci_image([tag.encode()], seed=tag))
    remove_tag(registry.root, "team/app", "gone")
    asked: list[tuple[str, str]] = []

    def reappeared(repository: str, tag: str) -> bool:
        asked.append((repository, tag))
        return tag == "again"  # pushed again since the run

    deleted = [("team/app", "still"), ("team/app", "again"), ("team/app", "gone")]
    deleted += [("team/app", "never-was"), ("other/app", "never-was")]
    with RegistryClient(registry.url) as client:
        result = verify_run(client, [], deleted, reappeared=reappeared)

    assert result.broken == ["team/app:still was deleted but answers 200"]
    assert asked == [("team/app", "still"), ("team/app", "again")]
    # one tag list per repository, then HEAD for each tag it still lists
    assert result.requests == 2 + 2


def test_parallel_gives_the_serial_result(registry: RunningRegistry) -> None:
    kept: list[tuple[str, str, str]] = []
    deleted: list[tuple[str, str]] = []
    images: dict[tuple[str, str], OciImage] = {}
    for r in range(4):
        repository = f"team/app{r}"
        for t in range(5):
            image = make_oci_image([b"shared base", f"{r}/{t}".encode()], seed=f"{r}/{t}")
            push_oci(registry, repository, f"v{t}", image)
            images[repository, f"v{t}"] = image
            kept.append((repository, f"v{t}", image.digest))
        index = make_oci_index(seed=f"multi{r}")
        push_oci(registry, repository, "multi", index)
        kept.append((repository, "multi", index.digest))
        deleted += [(repository, "old"), (repository, "v1")]  # v1 still answers: reported
    # broken: a layer of app1:v2 (its data), the shared base in app2 only (its link: every
    # tag of app2 reports it, none of the others), a tag expected at another digest
    blob_data(registry.root, images["team/app1", "v2"].layer_digests[1]).unlink()
    shutil.rmtree(
        layer_link_dir(registry.root, "team/app2", images["team/app2", "v0"].layer_digests[0])
    )
    kept[3] = (kept[3][0], kept[3][1], images["team/app0", "v4"].digest)
    restart_registry(registry)

    def results(workers: int) -> list[str]:
        with RegistryClient(registry.url) as client:
            return verify_run(
                client, iter(kept), iter(deleted), reappeared=lambda r, t: False, workers=workers
            ).broken

    base = images["team/app2", "v0"].layer_digests[0]
    serial = [
        f"team/app0:v3: manifest v3 answered with digest {images['team/app0', 'v3'].digest}, "
        f"expected {images['team/app0', 'v4'].digest}",
        f"team/app1:v2: blob {images['team/app1', 'v2'].layer_digests[1]} of "
        f"{images['team/app1', 'v2'].digest} answered 404",
        *(
            f"team/app2:v{t}: blob {base} of {images['team/app2', f'v{t}'].digest} answered 404"
            for t in range(5)
        ),
        *(f"team/app{r}:v1 was deleted but answers 200" for r in range(4)),
    ]
    assert len(serial) == 11
    assert results(1) == serial
    assert results(16) == serial


def test_reads_its_input_a_bounded_window_ahead(registry: RunningRegistry) -> None:
    push_oci(registry, "team/app", "v1", make_oci_image([b"one"], seed="1"))
    drawn = 0
    leads: list[int] = []

    def deleted() -> Iterator[tuple[str, str]]:
        nonlocal drawn
        for n in range(600):  # one tag a step: the repository changes at every tag
            drawn += 1
            yield ("team/app", "v1") if n % 2 == 0 else ("team/none", "v1")

    def reappeared(repository: str, tag: str) -> bool:
        leads.append(drawn - 2 * len(leads))  # called in input order, for team/app's only
        return True

    with RegistryClient(registry.url) as client:
        result = verify_run(client, [], deleted(), reappeared=reappeared, workers=4)

    assert result.broken == []
    assert len(leads) == 300
    assert max(leads) <= 4 * AHEAD + 2


def test_a_corrupt_index_naming_itself_is_a_problem_not_a_hang(
    registry: RunningRegistry,
) -> None:
    index = make_oci_index(seed="multi")
    push_oci(registry, "team/app", "multi", index)
    child = index.child_digests[0]
    blob_data(registry.root, child).write_bytes(index.manifest)  # the child reads as the index
    restart_registry(registry)

    with RegistryClient(registry.url) as client:
        result = verify_run(client, [("team/app", "multi", index.digest)], [], reappeared=never)

    assert result.broken == [
        f"team/app:multi: manifest {child} names {child}, a manifest above it, as its child"
    ]
