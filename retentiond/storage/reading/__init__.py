"""The storage reader, by phase: a registry's tree into an
:class:`~retentiond.core.inventory.Inventory` (entry points: :mod:`retentiond.storage.reader`).

Only reads; never follows a symbolic link and never leaves ``<root>/docker/registry/v2``.
Nothing under the root is trusted as a path or as a file type (the tree is written by the
registry, that is by anyone who can push): what the reader cannot trust becomes a
:class:`~retentiond.core.inventory.Problem` with its path, and the planner leaves the
repository concerned alone. Only a whole-run StorageError (the top of the tree or the blob store
unusable) or a bug ends the read.

It reads what a plan needs and nothing more: the names in the blob store's prefix directories,
every tag's ``current/link`` and every revision link (content and mtime), and every manifest
blob they name, once, even when many repositories link it. Never read: a tag's ``index/``
history, the ``_layers`` links but for ``verify``, layer and config ``data`` but for the
sizes of phase 4 or ``stat_blobs``.

====================  ========================================================================
module                what it does
====================  ========================================================================
:mod:`.tree`          opens ``v2``, ``blobs/sha256`` and ``repositories`` once, as readers
                      of the storage port (the whole run fails on a link there)
:mod:`.blob_store`    phase 1: the 256 prefix directories, into the blob table
:mod:`.catalog`       phase 2, first step: the repositories, as the registry's catalog walk
:mod:`.repositories`  phase 2: each repository, as blob ids, and its last activity
:mod:`.links`         phase 2, inside a repository: its tag, revision and layer links
:mod:`.manifests`     phase 3: every manifest named, parsed once, into the manifest table
:mod:`.sizes`         phase 4: ``data`` stat'ed for the blobs no manifest gave a size
:mod:`.pool`          the forked worker processes the phases run in
:mod:`.problems`      the problems' kinds and wording
====================  ========================================================================

What each kind of hostile entry means (details in each phase's module):

- below ``registry.root`` (which may itself be a link: the operator's choice), a link or
  anything but a directory as ``docker``, ``registry``, ``v2``, ``blobs``, ``blobs/sha256`` or
  ``repositories``: a StorageError for the whole run (:mod:`.tree`);
- a symbolic link, FIFO, socket or device inside a repository or as a manifest's ``data``: an
  UNSAFE (``GC_ABORT``) problem of that repository. Refusing the repository is not enough to
  make a GC safe: the registry's GC follows links where it reads, so no GC may run;
- one in the blob store: an UNSAFE problem of no repository (the GC's sweep would walk into a
  linked prefix and delete what it finds there);
- a directory or file that cannot be read (permission denied): an UNREADABLE problem of its
  repository (the GC, run as the registry's user, may still read it); in the blob store, a
  StorageError: without the whole blob store, what a GC reclaims cannot be known.

The phases read through the storage port (:class:`~retentiond.storage.port.StorageReader`)
and nothing else: readers scoped to a directory (:meth:`~retentiond.storage.port.StorageReader.
below`: ``blobs/sha256``, a prefix directory, a repository, its ``_manifests/tags``), from
which each path below is read in one step and an unsafe component is named relative to them;
``list`` with each entry's kind and its order in the store (phase 3 reads manifests in the
order phase 1 found their directories in), ``names`` for the blob store's prefix directories
(no object per blob), ``head`` for link files (a wrong one is quoted, whatever its size),
``read`` for manifests and configs, bounded, and ``stat`` for sizes and push times. The
filesystem backend (:mod:`retentiond.storage.filesystem`) does each in the system calls the
work needs; an object-store backend implements the same calls.

When a blob directory turns out to have no usable ``data`` (a manifest blob that will not
open, a blob of phase 4 without ``data``), the whole tree is read again with every ``data``
stat'ed in phase 1, which is what the registry's GC counts as a blob; the result is then exact
for such a tree too.
"""
