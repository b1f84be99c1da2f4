"""The registry's storage layout: every path retentiond reads, moves or removes is built here.

The distribution registry keeps everything below ``<rootdirectory>/docker/registry/v2`` (on a
disk) or ``<rootdirectory>/docker/registry/v2/`` as a key prefix (on object storage)::

    blobs/sha256/<first two hex>/<hex>/data                       a blob's bytes
    repositories/<name>/_manifests/tags/<tag>/current/link        what a tag points at
    repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link   its history
    repositories/<name>/_manifests/revisions/sha256/<hex>/link    a manifest in the repository
    repositories/<name>/_layers/sha256/<hex>/link                 a blob the repository may serve
    repositories/<name>/_uploads/<uuid>/...                       an upload in progress

Paths here are relative and joined with ``/``: to ``v2`` (functions without a suffix), or to
one repository's directory (``in_repository`` functions, for readers holding that directory
open). Nothing else in retentiond spells one of these names; what is *not* a layout (the
quarantine of a run, below the root but outside ``v2``) is here too, so that every path below
the root has one author. No function checks its arguments: callers validate names first
(:mod:`retentiond.core.names`, :func:`retentiond.storage.removal_list.removal_problem`).
"""

from __future__ import annotations

#: ``v2`` relative to the registry's rootdirectory, as path components and joined
V2_PARTS = ("docker", "registry", "v2")
V2 = "/".join(V2_PARTS)

#: below ``v2``
BLOB_STORE = "blobs/sha256"
REPOSITORIES = "repositories"

#: a repository's three parts, and what each holds below it
MANIFESTS = "_manifests"
LAYERS = "_layers"
UPLOADS = "_uploads"
PARTS = (MANIFESTS, LAYERS, UPLOADS)

#: below a repository's directory
TAGS = f"{MANIFESTS}/tags"
REVISIONS = f"{MANIFESTS}/revisions/sha256"
LAYER_LINKS = f"{LAYERS}/sha256"

#: below a tag's directory, and the name of every link file
CURRENT_LINK = "current/link"
TAG_INDEX = "index/sha256"
LINK = "link"
DATA = "data"

#: below the rootdirectory, beside ``docker``: where runs keep what they moved out of ``v2``
QUARANTINE = "retentiond-quarantine"
#: in the quarantine: the file written and removed to check that it is writable
WRITE_PROBE = ".write-probe"
#: in a run's quarantine: where retentiond before 0.x listed the run's removals (never read)
LEGACY_LISTING = "removals.json"
#: in the quarantine, beside the runs' directories (no run id has this shape): where the
#: ``_layers`` links being dropped wait while their blob is looked at again
LAYER_LINKS_HELD = "layer-links"

#: below the rootdirectory of a bucket (S3 only): a record for each directory whose tag links
#: a run put back (:meth:`~retentiond.storage.s3.S3Storage.restore`), named
#: ``<its path below v2>/<held>@<unique>``: the readers do not take the push time of a tag
#: link written since from a listing
RESTORED_LINKS = "retentiond-restored"

DIGEST_PREFIX = "sha256:"


def hex_of(digest: str) -> str:
    """``sha256:<hex>`` -> ``<hex>`` (the layout names blobs and links by the hex alone)."""
    return digest.partition(":")[2]


def digest_of(hexpart: str) -> str:
    return DIGEST_PREFIX + hexpart


# -- the blob store (relative to v2 unless said) -------------------------------------------------


def blob_prefix(hexpart: str) -> str:
    """The blob store's directory of a blob, relative to ``blobs/sha256``: its first two hex."""
    return hexpart[:2]


def blob_prefix_dir(prefix: str) -> str:
    return f"{BLOB_STORE}/{prefix}"


def blob_data_in_store(hexpart: str) -> str:
    """A blob's ``data`` relative to ``blobs/sha256``."""
    return f"{hexpart[:2]}/{hexpart}/{DATA}"


def blob_data(hexpart: str) -> str:
    return f"{BLOB_STORE}/{blob_data_in_store(hexpart)}"


def blob_dir(hexpart: str) -> str:
    return f"{BLOB_STORE}/{hexpart[:2]}/{hexpart}"


# -- repositories (relative to v2) ---------------------------------------------------------------


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def repository_part(name: str, part: str) -> str:
    return f"{REPOSITORIES}/{name}/{part}"


def tag_dir(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/{TAGS}/{tag}"


def tag_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/{CURRENT_LINK}"


def revisions_dir(name: str) -> str:
    """The directory of a repository's revision links (one directory per manifest)."""
    return f"{REPOSITORIES}/{name}/{REVISIONS}"


def revision_dir(name: str, digest: str) -> str:
    return f"{REPOSITORIES}/{name}/{REVISIONS}/{hex_of(digest)}"


def revision_link(name: str, digest: str) -> str:
    return f"{revision_dir(name, digest)}/{LINK}"


def layer_links_dir(name: str) -> str:
    """The directory of a repository's ``_layers`` links (one directory per blob)."""
    return f"{REPOSITORIES}/{name}/{LAYER_LINKS}"


def layer_link_dir(name: str, digest: str) -> str:
    """The directory of one ``_layers`` link (it holds the ``link`` file alone)."""
    return f"{REPOSITORIES}/{name}/{LAYER_LINKS}/{hex_of(digest)}"


def layer_link(name: str, digest: str) -> str:
    return f"{REPOSITORIES}/{name}/{LAYER_LINKS}/{hex_of(digest)}/{LINK}"


# -- inside one repository's directory -----------------------------------------------------------


def in_repository_tag_link(tag: str) -> str:
    return f"{TAGS}/{tag}/{CURRENT_LINK}"


def in_repository_revision_link(hexpart: str) -> str:
    return f"{REVISIONS}/{hexpart}/{LINK}"


def in_repository_layer_link(hexpart: str) -> str:
    return f"{LAYER_LINKS}/{hexpart}/{LINK}"


# -- below the rootdirectory, outside v2 ---------------------------------------------------------


def quarantine(run_id: str) -> str:
    """Where a run's removals are held, relative to the rootdirectory (same filesystem as
    ``v2``, so a move is a rename)."""
    return f"{QUARANTINE}/{run_id}"


def held_name(index: int) -> str:
    """The name under which a run holds its removal number ``index``: seven digits, so that
    the run's directory lists in removal order."""
    return f"{index:07d}"


def held(run_id: str, index: int) -> str:
    """A held removal, relative to the quarantine (:class:`~retentiond.storage.port.StorageWriter`'s
    quarantine paths)."""
    return f"{run_id}/{held_name(index)}"


def held_layer_link(index: int) -> str:
    """A ``_layers`` link being dropped, relative to the quarantine."""
    return f"{LAYER_LINKS_HELD}/{held_name(index)}"


def in_quarantine(path: str) -> str:
    """A quarantine path (``""``, ``<run_id>``, ``<run_id>/<held>``) relative to the
    rootdirectory."""
    return f"{QUARANTINE}/{path}" if path else QUARANTINE
