"""Helpers for integration tests against a real registry in Docker: Debian's 2.8.2 or
distribution v3.1.1 (``VERSIONS``; every helper that starts a registry or runs a GC takes
``version``, default 2.8.2).

Nothing here is a mock: containers, pushes, pulls and garbage collections are real. See
``registry`` (start/stop containers), ``images`` (push images with docker and skopeo, pull
them back), ``gc`` (run the registry's own garbage collector) and ``tree`` (read and edit the
storage tree directly). The most used names are re-exported here.
"""

from tests.harness.gc import GcResult, gc_dry_run, gc_in_container, gc_run, registry_bin
from tests.harness.images import (
    OciImage,
    OciIndex,
    docker_pull_ok,
    make_oci_image,
    make_oci_index,
    pull_ok,
    push_docker_image,
    push_oci,
    push_oci_image,
    push_oci_index,
    tag_alias,
)
from tests.harness.registry import (
    VERSIONS,
    RunningRegistry,
    registry_image,
    restart_registry,
    start_registry,
    stop_registry,
)
from tests.harness.tree import copy_tree, set_pushed_at, tag_digest, tag_link

__all__ = [
    "VERSIONS",
    "GcResult",
    "OciImage",
    "OciIndex",
    "RunningRegistry",
    "copy_tree",
    "docker_pull_ok",
    "gc_dry_run",
    "gc_in_container",
    "gc_run",
    "make_oci_image",
    "make_oci_index",
    "pull_ok",
    "push_docker_image",
    "push_oci",
    "push_oci_image",
    "push_oci_index",
    "registry_bin",
    "registry_image",
    "restart_registry",
    "set_pushed_at",
    "start_registry",
    "stop_registry",
    "tag_alias",
    "tag_digest",
    "tag_link",
]
