"""The plain values of the storage tree: manifests, tags, problems, media types.

Digests are strings of the form ``sha256:<64 hex>``. Times are timezone-aware UTC datetimes.
The compact tables (:mod:`~retentiond.core.blob_table`, :mod:`~retentiond.core.manifest_table`,
:mod:`~retentiond.core.repository`) keep these values packed and build them when asked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: The Accept header that makes the registry answer every manifest as stored.
ALL_MANIFEST_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)


class ProblemKind(enum.Enum):
    """How much a problem in the tree matters."""

    #: We could not read or trust something; the repository it belongs to is left alone.
    UNREADABLE = "unreadable"
    #: The registry's garbage collector would stop with an error on this; no GC may run.
    GC_ABORT = "gc-abort"
    #: The registry's garbage collector would delete data that a tag still needs; no GC may run.
    GC_HAZARD = "gc-hazard"
    #: An image is incomplete (a referenced blob is missing); reported, decides nothing.
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the tree we cannot trust, with the path that shows it."""

    path: str
    message: str
    kind: ProblemKind
    repository: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.kind.value}]"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest blob: what it references.

    ``blobs`` are the config and layer blobs (what the GC marks for an image manifest);
    ``children`` are the manifests a list/index references (marked, not recursed into, by the
    GC of registry 2.8).
    """

    digest: str
    media_type: str
    blobs: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    subject: str | None = None
    config: str | None = None
    platform: str | None = None
    #: the sizes the descriptors of ``blobs`` state (-1: none stated); not kept in the table
    blob_sizes: tuple[int, ...] = field(default=(), compare=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)

    @property
    def references(self) -> tuple[str, ...]:
        """Every digest the registry's GC marks when it marks this manifest."""
        return self.children + self.blobs


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag of a repository: the manifest its ``current/link`` names, and when it was
    pushed (that link's mtime)."""

    name: str
    digest: str
    pushed_at: datetime
