"""What the registry's garbage-collect deleted, understood from its output line by line.

The GC prints (registry 2.8 and 3.x alike, to stdout) a line per repository and per marked
manifest and blob, then the summary ``N blobs marked, M blobs and K manifests eligible for
deletion``, then one ``blob eligible for deletion: sha256:<hex>`` line per unmarked blob, each
printed just before that blob's directory is deleted (with ``--dry-run`` nothing is deleted).
So after a GC that exited 0 and was not a dry run, the eligible blobs are exactly the blobs it
deleted: reading its output tells the run what went without walking the blob store. (A GC that
exits non-zero may have failed deleting the last blob it printed: trust the counts only after
an exit code 0.)

:class:`GcDeletions` is fed every line as the GC prints it (millions on a large registry) and
keeps only counts, a bounded sample and the set of 2-character blob directory prefixes, so its
memory does not grow with the output. Lines it does not recognize (marking lines, the
registry's log lines on stderr) are ignored.

Registry 3.x also deletes the ``_layers`` links its mark did not reach, printing
``<repository>: layer link eligible for deletion: <digest>`` for each after the blobs. Most are
links to blobs it just deleted; the others are links to blobs that survive because another
repository still uses them. A redis cache that still holds such a blob for that repository
would let a re-push into it skip the upload and then fail to pull, so the repositories with
such links are kept (:attr:`GcDeletions.unlinked_repositories`) for the cache to forget.
"""

from __future__ import annotations

from collections.abc import Mapping

#: the line printed for each blob the GC deletes (or would delete, with --dry-run)
ELIGIBLE_PREFIX = "blob eligible for deletion: "
#: how the summary line ends: ``N blobs marked, M blobs and K manifests eligible for deletion``
SUMMARY_SUFFIX = " manifests eligible for deletion"
#: unexpected digests kept as a sample for the report
UNEXPECTED_SAMPLE = 20
#: what follows the repository in the line 3.x prints for each ``_layers`` link it deletes
LAYER_LINK_INFIX = ": layer link eligible for deletion: "

_ELIGIBLE_LENGTH = len(ELIGIBLE_PREFIX)
_SUMMARY_ENDS = (SUMMARY_SUFFIX, SUMMARY_SUFFIX + "\n", SUMMARY_SUFFIX + "\r\n")
#: a canonical sha256 digest: ``sha256:`` and 64 hex characters
_DIGEST_LENGTH = 71
#: the names of the blob store's prefix directories: two lowercase hex characters
_PREFIXES = frozenset(f"{n:02x}" for n in range(256))


class GcDeletions:
    """The blobs a GC declared eligible for deletion, checked against ``reclaimable`` (digest
    -> size: the blobs the plan expects the GC to collect, e.g. a
    :class:`~retentiond.core.blob_table.BlobTable`).

    Feed every line with :meth:`feed`, then read:

    - ``eligible``: how many ``blob eligible for deletion`` lines were seen;
    - ``blobs`` and ``bytes``: how many of them ``reclaimable`` holds, and their total size;
    - ``unexpected_count`` and ``unexpected`` (the first 20): eligible digests ``reclaimable``
      does not hold, which the plan did not expect to be collected;
    - ``prefixes``: the 2-hex-character prefixes of every eligible sha256 digest, i.e. the blob
      store directories that may have been left empty;
    - ``summary_marked``, ``summary_eligible``, ``summary_manifests``: the numbers of the summary
      line (None until it is seen);
    - :attr:`understood`: the summary was seen and the eligible lines add up to it;
    - ``layer_links``: how many ``_layers`` links a 3.x GC declared eligible for deletion, and
      ``unlinked_repositories``: the repositories among them that lost a link to a blob
      ``reclaimable`` does not hold (a blob that survives).

    A digest printed twice is counted twice (the GC prints each once; keeping every digest seen
    to detect it would cost memory in proportion to the output).
    """

    __slots__ = (
        "_reclaimable",
        "blobs",
        "bytes",
        "eligible",
        "layer_links",
        "prefixes",
        "summary_eligible",
        "summary_manifests",
        "summary_marked",
        "unexpected",
        "unexpected_count",
        "unlinked_repositories",
    )

    def __init__(self, reclaimable: Mapping[str, int]) -> None:
        self._reclaimable = reclaimable
        self.eligible = 0
        self.blobs = 0
        self.bytes = 0
        self.unexpected_count = 0
        self.unexpected: list[str] = []
        self.prefixes: set[str] = set()
        self.summary_marked: int | None = None
        self.summary_eligible: int | None = None
        self.summary_manifests: int | None = None
        self.layer_links = 0
        self.unlinked_repositories: set[str] = set()

    def feed(self, line: str) -> None:
        """Take one line of the GC's output (with or without its line end)."""
        if not line.startswith(ELIGIBLE_PREFIX):
            if line.endswith(_SUMMARY_ENDS):
                self._summary(line)
            elif LAYER_LINK_INFIX in line:
                self._layer_link(line)
            return
        digest = line[_ELIGIBLE_LENGTH:].rstrip()
        self.eligible += 1
        prefix = digest[7:9]
        if prefix in _PREFIXES and len(digest) == _DIGEST_LENGTH and digest.startswith("sha256:"):
            self.prefixes.add(prefix)
        size = self._reclaimable.get(digest)
        if size is not None:
            self.blobs += 1
            self.bytes += size
            return
        self.unexpected_count += 1
        if len(self.unexpected) < UNEXPECTED_SAMPLE:
            self.unexpected.append(digest)

    @property
    def understood(self) -> bool:
        """True when the summary line was seen and as many eligible lines followed as it
        announced: the output was read whole and in the format expected. False after a GC that
        failed part-way, printed nothing (``--quiet``) or changed its wording."""
        return self.summary_eligible is not None and self.eligible == self.summary_eligible

    @property
    def missed(self) -> int:
        """How many blobs of ``reclaimable`` the GC did not declare eligible (when
        :attr:`understood` and no digest was printed twice)."""
        return len(self._reclaimable) - self.blobs

    def _layer_link(self, line: str) -> None:
        """``<repository>: layer link eligible for deletion: <digest>`` (3.x)."""
        repository, _, digest = line.rstrip().partition(LAYER_LINK_INFIX)
        if not repository or " " in repository or not digest.startswith("sha256:"):
            return
        self.layer_links += 1
        if digest not in self._reclaimable:
            self.unlinked_repositories.add(repository)

    def _summary(self, line: str) -> None:
        """``N blobs marked, M blobs and K manifests eligible for deletion``; another line
        ending the same way (none does) is ignored."""
        words = line.split()
        if (
            len(words) == 11
            and words[1:3] == ["blobs", "marked,"]
            and words[4:6] == ["blobs", "and"]
            and words[0].isdigit()
            and words[3].isdigit()
            and words[6].isdigit()
        ):
            self.summary_marked = int(words[0])
            self.summary_eligible = int(words[3])
            self.summary_manifests = int(words[6])
