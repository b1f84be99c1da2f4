"""What the storage tree holds: the :class:`Inventory` the storage reader builds.

The planner and the verifier read it. Its parts are compact tables, for a registry of a million
tags: :class:`~retentiond.core.blob_table.BlobTable` (every blob and its size; a blob id for
each), :class:`~retentiond.core.manifest_table.ManifestTable` (the manifests, as records of
blob ids) and :class:`~retentiond.core.repository.Repository` (tags and revision links as
columns of blob ids and timestamps). They behave as the plain mappings and values of
:mod:`retentiond.core.values` they stand for; the planner's hot paths use blob ids. Tests
build inventories with ``tests.builders.InventoryBuilder``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from retentiond.core.blob_table import NO_ID, BlobTable
from retentiond.core.manifest_table import (
    MANIFEST_MEDIA_TYPES,
    MAX_CHILDREN,
    ManifestTable,
    PackedManifest,
    pack_manifest,
)
from retentiond.core.repository import Repository, RepositoryColumns
from retentiond.core.values import (
    ALL_MANIFEST_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_SCHEMA1,
    Manifest,
    Problem,
    ProblemKind,
)

#: re-exported for the modules that import them from here, until they import them from the
#: modules that define them (values, blob_table, manifest_table, repository)
__all__ = [
    "ALL_MANIFEST_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_CHILDREN",
    "MEDIA_DOCKER_LIST",
    "MEDIA_DOCKER_MANIFEST",
    "MEDIA_OCI_INDEX",
    "MEDIA_OCI_MANIFEST",
    "MEDIA_SCHEMA1",
    "NO_ID",
    "BlobTable",
    "Inventory",
    "Manifest",
    "ManifestTable",
    "PackedManifest",
    "Problem",
    "ProblemKind",
    "Repository",
    "RepositoryColumns",
    "pack_manifest",
]


@dataclass(frozen=True, slots=True)
class Inventory:
    """The whole tree: repositories (in name order), parsed manifests (global), blob sizes,
    problems. The manifest table and every repository refer to blobs by ids of ``blobs``."""

    root: str
    repositories: tuple[Repository, ...]
    manifests: ManifestTable
    blobs: BlobTable
    problems: tuple[Problem, ...] = ()
    #: image config ``created`` times, by config digest (read only when a policy orders by it)
    created: Mapping[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.manifests.blobs is not self.blobs:
            raise ValueError("an Inventory's manifest table must be over its blob table")
        for repo in self.repositories:
            if repo.columns.blobs is not self.blobs:
                raise ValueError(
                    f"repository {repo.name!r} of an Inventory must be over its blob table"
                )

    def repository(self, name: str) -> Repository | None:
        for repo in self.repositories:
            if repo.name == name:
                return repo
        return None

    @property
    def storage_bytes(self) -> int:
        return sum(self.blobs.values())
