"""Write the seed corpus of the fuzz targets under ``fuzz/corpus/`` (committed; run again after
changing what it writes), from the repository's root: ``python -m fuzz.make_corpus``.

- ``manifest/``: real manifests and configs as the tests push them (``tests.harness.images``:
  an OCI image, an OCI index, an artifact with a ``subject``), a Docker schema2 manifest and
  manifest list as ``docker push`` writes them, a schema1 manifest, an image config.
- ``policy/``: the example policies of ``policies/`` and a few files using anchors and merge
  keys.
- ``config/``: ``deploy/retentiond.yaml`` and a minimal config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.harness.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    make_oci_image,
    make_oci_index,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def manifests() -> dict[str, bytes]:
    image = make_oci_image([b"shared\n", b"own\n"], config_created="2026-01-02T03:04:05.123456789Z")
    index = make_oci_index(seed="corpus")
    signature = make_oci_image(
        [b"signature\n"],
        subject=image.descriptor(),
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    layer = {"mediaType": DOCKER_LAYER, "size": 1024, "digest": "sha256:" + "1" * 64}
    docker = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": 1469, "digest": "sha256:" + "2" * 64},
        "layers": [layer, {**layer, "digest": "sha256:" + "3" * 64}],
    }
    docker_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "size": 528,
                "digest": "sha256:" + "4" * 64,
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
            }
        ],
    }
    schema1 = {
        "schemaVersion": 1,
        "name": "library/app",
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": "sha256:" + "5" * 64}],
        "history": [{"v1Compatibility": "{}"}],
    }
    return {
        "oci-image.json": image.manifest,
        "oci-config.json": image.blobs[image.config_digest],
        "oci-index.json": index.manifest,
        "oci-artifact.json": signature.manifest,
        "docker-manifest.json": json.dumps(docker, indent=3).encode(),
        "docker-list.json": json.dumps(docker_list, indent=3).encode(),
        "schema1.json": json.dumps(schema1, indent=3).encode(),
    }


POLICIES = {
    "anchors.yaml": b"""\
policies:
  - &base
    name: merged
    repositories: ["ci/**", "!ci/base"]
    tags: ["pr-*", "re:^v\\\\d+$"]
    keep: &keep {last: 3, within: 14d}
    untagged: delete
  - <<: *base
    name: flow
    repositories: ['**']
    keep: {tags: [latest, main], semver: 2, <<: *keep}
    order_by: created
    allow_empty: true
    allow_mass_delete: false
""",
    "minimal.yaml": b"policies:\n  - name: a\n    repositories: ['**']\n    keep: {}\n",
}
CONFIG = b"""\
registry:
  root: registry
  url: http://127.0.0.1:5000
runtime: {kind: none}
policies: [policies/]
schedule: {plan_every: 15m, window: "0 3 * * SUN", window_length: 2h, timezone: UTC}
safety: {max_delete_ratio: 0.8, untagged_min_age: 1h, grace: 0s}
metrics: {listen: "127.0.0.1:9480"}
state_dir: state
log: {format: json, level: info}
protect: {docker_hosts: ["unix:///var/run/docker.sock", "tcp://build-1:2375"], files: [images.txt]}
"""


def write(directory: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name, data in sorted(files.items()):
        (directory / name).write_bytes(data)


def main() -> None:
    corpus = HERE / "corpus"
    write(corpus / "manifest", manifests())
    policies = {p.name: p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))}
    write(corpus / "policy", {**policies, **POLICIES})
    deployed = (ROOT / "deploy" / "retentiond.yaml").read_bytes()
    write(corpus / "config", {"deploy-retentiond.yaml": deployed, "minimal.yaml": CONFIG})


if __name__ == "__main__":
    main()
