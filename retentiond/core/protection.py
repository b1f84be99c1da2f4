"""In-use protection (``protect:``): the images no policy may delete. Pure: no I/O.

The readers (:mod:`retentiond.protection`) turn containers on Docker hosts and lines of files
into :class:`ProtectedReference` values; :class:`Protection` indexes them by repository, and
the planner (:func:`retentiond.core.plan.make_plan`) keeps, whatever the policies say:

- every tag named by a protected ``repo:tag`` reference;
- every tag whose manifest is a protected digest, or an index (manifest list) that reaches one
  through its children, recursively;
- every protected manifest with a revision link (it is never unlinked), with what it reaches.

A reference protects its repository path whatever host it names (``registry.example.com/app``
and ``127.0.0.1:5000/app`` both protect ``app``): a registry is reached under many names
(localhost, a DNS name, a load balancer), and a digest is the content itself, so the only
"wrong" match is the same image in the same repository, which is worth keeping anyway. A
reference without a host whose path has one component also protects ``library/<name>`` (how
Docker names Docker Hub's official images). A bare ``sha256:<hex>`` protects that digest in
every repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from retentiond.core.manifest_table import ManifestTable
from retentiond.core.values import Tag

#: prefixes Kubernetes puts before an image id (dockershim: ``docker-pullable://``)
_ID_PREFIXES = ("docker-pullable://", "docker://")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+(?::[0-9]+)?|\[[0-9a-fA-F:.]+\](?::[0-9]+)?"
)


class BadReference(ValueError):
    """A line that is not an image reference; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    """``[host/]path[:tag][@digest]``, or a bare digest (``path`` None: every repository)."""

    host: str | None
    path: str | None
    tag: str | None
    digest: str | None

    @property
    def repositories(self) -> tuple[str, ...]:
        """The repository names of this registry it protects (none: every repository)."""
        if self.path is None:
            return ()
        if self.host is None and "/" not in self.path:
            return (self.path, f"library/{self.path}")
        return (self.path,)

    def __str__(self) -> str:
        text = "/".join(p for p in (self.host, self.path) if p) or ""
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}" if text else self.digest
        return text


def parse_reference(text: str) -> ImageReference:
    """An image reference as Docker, a deploy job or ``kubectl`` writes it: ``host/repo:tag``,
    ``host/repo@sha256:<hex>`` (also with a tag before the digest), ``docker-pullable://...``,
    a name alone (tag ``latest``, as Docker reads it), or a bare ``sha256:<hex>``.
    BadReference says what is wrong."""
    ref = text.strip()
    for prefix in _ID_PREFIXES:
        ref = ref.removeprefix(prefix)
    if not ref:
        raise BadReference("empty reference")
    if _DIGEST.fullmatch(ref):
        return ImageReference(None, None, None, ref)
    name, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise BadReference(
            f"{digest[:80]!r} is not a digest; write sha256: and 64 lowercase hex digits"
        )
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise BadReference(f"{tag[:80]!r} is not a tag")
    host = None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST.fullmatch(first):
            raise BadReference(f"{first[:80]!r} is not a registry host")
        host, name = first, rest
    if not name or not all(_COMPONENT.fullmatch(c) for c in name.split("/")):
        raise BadReference(
            f"{name[:80]!r} is not a repository name (lowercase letters, digits and . _ - "
            "separated by /)"
        )
    if tag is None and not at:
        tag = "latest"  # as Docker and Kubernetes read a name alone
    return ImageReference(host, name, tag if not at else None, digest if at else None)


@dataclass(frozen=True, slots=True)
class ProtectedReference:
    """A reference and why it is protected, e.g. ``in use by container web on unix://...``."""

    reference: ImageReference
    reason: str


@dataclass(frozen=True, slots=True)
class RepositoryProtection:
    """What is protected in one repository: digest -> reason, tag name -> reason."""

    digests: Mapping[str, str]
    tags: Mapping[str, str]

    def match(
        self, tags: Sequence[Tag], revisions: Mapping[str, object], manifests: ManifestTable
    ) -> tuple[dict[str, str], dict[str, str]]:
        """``(tag name -> reason, revision digest -> reason)``: the tags to keep (named, on a
        protected digest, or on an index reaching one) and the revisions never to unlink."""
        digests = self.digests
        roots = {d: why for d, why in digests.items() if d in revisions}
        kept: dict[str, str] = {}
        for tag in tags:
            why = self.tags.get(tag.name) or digests.get(tag.digest)
            if why is None and digests and tag.digest in manifests.parents:
                why = _reached_reason(tag.digest, digests, manifests)
            if why is not None:
                kept[tag.name] = why
        return kept, roots


def _reached_reason(index: str, digests: Mapping[str, str], manifests: ManifestTable) -> str | None:
    """The reason of the first protected digest among what ``index`` reaches, or None."""
    seen: set[str] = set()
    stack = list(manifests.children_of(index))
    while stack:
        digest = stack.pop()
        if digest in seen:
            continue
        seen.add(digest)
        why = digests.get(digest)
        if why is not None:
            return why
        stack.extend(manifests.children_of(digest))
    return None


@dataclass(frozen=True, slots=True)
class ProtectionSource:
    """One source of ``protect:`` as read: a Docker host or a file, how many references it
    gave, and why it could not be read (None when it was)."""

    kind: str  # "docker" | "file"
    source: str
    references: int = 0
    error: str | None = None


class Protection:
    """The protected references of every source, by repository; ``sources`` says what was
    read. Not :attr:`available` when a source could not be read: then no maintenance deletes
    anything (the plan is still made, with what could be read, and shows the problem)."""

    def __init__(
        self,
        references: Iterable[ProtectedReference] = (),
        sources: Sequence[ProtectionSource] = (),
    ) -> None:
        self.sources = tuple(sources)
        self._digests: dict[str, dict[str, str]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        #: bare digests: protected in every repository
        self.everywhere: dict[str, str] = {}
        count = 0
        for protected in references:
            count += 1
            ref, why = protected.reference, protected.reason
            if ref.path is None:
                if ref.digest is not None:
                    self.everywhere.setdefault(ref.digest, why)
                continue
            for repository in ref.repositories:
                if ref.digest is not None:
                    self._digests.setdefault(repository, {}).setdefault(ref.digest, why)
                elif ref.tag is not None:
                    self._tags.setdefault(repository, {}).setdefault(ref.tag, why)
        self.references = count

    @property
    def enabled(self) -> bool:
        """True when ``protect:`` names any source."""
        return bool(self.sources)

    @property
    def problems(self) -> tuple[str, ...]:
        """Why sources could not be read, one line each."""
        return tuple(f"{s.kind} {s.source}: {s.error}" for s in self.sources if s.error is not None)

    @property
    def available(self) -> bool:
        """True when every source was read."""
        return not self.problems

    def for_repository(self, name: str) -> RepositoryProtection | None:
        """What is protected in repository ``name``; None when nothing could be."""
        digests = self._digests.get(name)
        tags = self._tags.get(name)
        if digests is None and tags is None and not self.everywhere:
            return None
        if self.everywhere:
            digests = {**self.everywhere, **(digests or {})}
        return RepositoryProtection(digests or {}, tags or {})

    def named_repositories(self) -> frozenset[str]:
        """The repositories named by a reference (bare digests aside)."""
        return frozenset(self._digests) | frozenset(self._tags)


NO_PROTECTION = Protection()
