"""Inventories written by hand, for tests: built as the storage reader builds them.

An :class:`~retentiond.core.inventory.Inventory` has one form, the compact tables the reader
makes; :class:`InventoryBuilder` makes it from plain values::

    inventory = (
        InventoryBuilder()
        .blob(d(10), 1000)
        .manifest(image, size=100)
        .repository("app", [Tag("v1", image.digest, pushed)], {image.digest: pushed})
        .build()
    )

As the reader does, it keeps blobs and manifests by canonical ``sha256:`` digest, repositories
in name order and tags in name order; a tag or revision may name a digest with no blob.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from retentiond.core.blob_table import BlobTable
from retentiond.core.inventory import Inventory
from retentiond.core.manifest_table import ManifestTable, pack_manifest
from retentiond.core.repository import Repository, RepositoryColumns, pack_links
from retentiond.core.values import Manifest, Problem, Tag


@dataclass
class _RepositorySpec:
    tags: dict[str, tuple[str, float]] = field(default_factory=dict)
    revisions: dict[str, float] = field(default_factory=dict)
    listed_by_gc: bool = True
    last_activity: datetime | None = None
    layers: frozenset[str] | None = None
    has_nested: bool = False


class InventoryBuilder:
    """Blobs, manifests, repositories and problems, given in any order; :meth:`build` makes
    the Inventory. Every method but :meth:`build` returns the builder."""

    def __init__(self, root: str = "/r") -> None:
        self._root = root
        self._blobs: dict[str, int] = {}
        self._manifests: dict[str, Manifest] = {}
        self._unparsed: list[str] = []
        self._repositories: dict[str, _RepositorySpec] = {}
        self._problems: list[Problem] = []
        self._created: dict[str, datetime] = {}

    def blob(self, digest: str, size: int) -> InventoryBuilder:
        """A blob with data (its size set again when given twice)."""
        self._blobs[digest] = size
        return self

    def blobs(self, sizes: Mapping[str, int]) -> InventoryBuilder:
        self._blobs.update(sizes)
        return self

    def manifest(self, manifest: Manifest, size: int | None = None) -> InventoryBuilder:
        """A parsed manifest; with ``size``, its blob too (else add the blob with
        :meth:`blob`: a manifest is kept by its blob's id)."""
        if size is not None:
            self.blob(manifest.digest, size)
        self._manifests[manifest.digest] = manifest
        return self

    def unparsed_manifest(self, digest: str) -> InventoryBuilder:
        """A manifest blob that does not parse (its blob added with :meth:`blob`)."""
        self._unparsed.append(digest)
        return self

    def repository(
        self,
        name: str,
        tags: Iterable[Tag] = (),
        revisions: Mapping[str, datetime] | None = None,
        *,
        listed_by_gc: bool = True,
        last_activity: datetime | None = None,
        layers: frozenset[str] | None = None,
        has_nested: bool = False,
    ) -> InventoryBuilder:
        """A repository with these tags and revision links (more may be added with
        :meth:`tag` and :meth:`revision`)."""
        if name in self._repositories:
            raise ValueError(f"repository {name!r} is given twice")
        self._repositories[name] = _RepositorySpec(
            listed_by_gc=listed_by_gc,
            last_activity=last_activity,
            layers=layers,
            has_nested=has_nested,
        )
        for tag in tags:
            self.tag(name, tag.name, tag.digest, tag.pushed_at)
        for digest, pushed_at in (revisions or {}).items():
            self.revision(name, digest, pushed_at)
        return self

    def tag(self, repository: str, name: str, digest: str, pushed_at: datetime) -> InventoryBuilder:
        """A tag (its repository made, with the defaults of :meth:`repository`, if need be)."""
        spec = self._repositories.setdefault(repository, _RepositorySpec())
        if name in spec.tags:
            raise ValueError(f"tag {name!r} of {repository!r} is given twice")
        spec.tags[name] = (digest, pushed_at.timestamp())
        return self

    def revision(self, repository: str, digest: str, pushed_at: datetime) -> InventoryBuilder:
        """A revision link (its repository made if need be), in the order given."""
        spec = self._repositories.setdefault(repository, _RepositorySpec())
        spec.revisions[digest] = pushed_at.timestamp()
        return self

    def problem(self, problem: Problem) -> InventoryBuilder:
        self._problems.append(problem)
        return self

    def created(self, config: str, when: datetime) -> InventoryBuilder:
        """An image config's ``created`` time."""
        self._created[config] = when
        return self

    def build(self) -> Inventory:
        blobs = BlobTable.from_items(self._blobs.items())
        manifests = ManifestTable(blobs)
        parsed: list[tuple[str, Manifest | None]] = list(self._manifests.items())
        for digest, manifest in parsed + [(digest, None) for digest in self._unparsed]:
            blob_id = blobs.id_of(digest)
            if blob_id < 0:
                raise ValueError(f"manifest {digest} has no blob: add it with blob()")
            manifests.add(digest, pack_manifest(manifest, blob_id, blobs))
        repositories = tuple(
            self._repository(name, spec, blobs) for name, spec in sorted(self._repositories.items())
        )
        return Inventory(
            self._root,
            repositories,
            manifests,
            blobs,
            tuple(self._problems),
            dict(self._created),
        )

    @staticmethod
    def _repository(name: str, spec: _RepositorySpec, blobs: BlobTable) -> Repository:
        tags = [(tag, digest, when) for tag, (digest, when) in sorted(spec.tags.items())]
        columns = RepositoryColumns(blobs, *pack_links(tags, spec.revisions, blobs))
        return Repository(
            name,
            columns,
            listed_by_gc=spec.listed_by_gc,
            last_activity=spec.last_activity,
            layers=spec.layers,
            has_nested=spec.has_nested,
        )
