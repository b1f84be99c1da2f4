"""Repository and tag names as the registry accepts them (pure; no I/O).

A repository name, as registry 2.8's garbage collector checks each repository directory it walks
(``reference.WithName``, then the storage driver's path check): at most 255 characters, then
``[DOMAIN/]COMPONENT[/COMPONENT...]`` where a COMPONENT is lowercase letters and digits in runs
joined by one ``.``, one ``_``, ``__`` or any number of ``-``, and the optional DOMAIN (only
before a ``/``) is host name labels (letters of either case, digits, inner ``-``) joined by
``.``. The filesystem driver then refuses any path component with a character other than
``A-Za-z0-9._-``, so the ``:port`` and ``[ipv6]`` forms the reference grammar allows abort it too.

What Debian's docker-registry 2.8.2 ``garbage-collect --dry-run`` does, on a tree with one
repository of each name (tests/integration/test_hostile_cli.py checks the first two):

==========================  ============================================================
``UPPER``, ``sp ace``,      aborts the whole GC: "failed to mark: filesystem: failed to
``a..b``, ``a.-b``,         parse repo name UPPER: invalid reference format" (even when
``a___b``, ``-a/b``,        other repositories are valid: nothing is collected)
``a/B``, ``é``, ``.x``,
``x\\ny``, ``ok/app\\t``
256 characters              aborts: "repository name must not be more than 255 characters"
``host:5000/app``           aborts: "invalid path" (the storage driver)
``Ok/app``, ``Host-1.Ex/a`` marks it (an upper-case first component is a domain)
``a--b``, ``a__b``, ``0``   marks it
``_x``, ``x/_y``            not a repository to it (directories starting with ``_`` are
                            skipped): its blobs are unmarked (the reader's walk skips them
                            too; that is not this module's concern)
==========================  ============================================================

A tag, as the registry's router matches it in ``/v2/<name>/manifests/<tag>``:
``[\\w][\\w.-]{0,127}`` with Go's ASCII ``\\w``. The GC of 2.8 never reads tags (without
``--delete-untagged``), so a tag outside this grammar blocks no GC; it is a tag no client can
pull or push again.

The checks are written without backtracking-prone patterns (each component is matched on its
own after the length check), so a hostile name costs time linear in its length.
"""

from __future__ import annotations

import re

#: ``reference.NameTotalLengthMax``
MAX_REPOSITORY_NAME = 255
#: the longest tag the reference grammar allows
MAX_TAG = 128

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
#: what the registry's storage driver accepts in a path component
_DRIVER_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` for a line of text output: each control, unprintable or lone surrogate
    character (a file name that is not UTF-8) escaped as Python writes it (``\\n``,
    ``\\x1b``, ``\\udcff``), and each backslash doubled so that an escape cannot be
    forged; cut at ``limit`` characters when given."""
    if not text.isprintable() or "\\" in text:
        text = "".join(
            c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
            for c in text
        )
    if limit is not None and len(text) > limit:
        return text[:limit] + "..."
    return text


def repository_name_problem(name: str) -> str | None:
    """What makes the registry's garbage collector fail to parse ``name`` (it then aborts the
    whole collection), or None when it can. ``name`` is the repository's path under
    ``repositories/``, components joined by ``/``. The message does not repeat the name."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_REPOSITORY_NAME:
        return f"{size} bytes long; the registry allows {MAX_REPOSITORY_NAME}"
    components = name.split("/")
    bad = next((c for c in components if _DRIVER_COMPONENT.fullmatch(c) is None), None)
    if bad is not None:
        return f"component '{printable(bad, 300)}' has characters other than A-Z a-z 0-9 . _ -"
    domain_ok = len(components) > 1 and _DOMAIN.fullmatch(components[0]) is not None
    for i, component in enumerate(components):
        if i == 0 and domain_ok:
            continue
        if _PATH_COMPONENT.fullmatch(component) is None:
            return (
                f"component '{component}' is not lowercase letters and digits separated by "
                "one '.', '_' or '__' or by dashes"
            )
    return None


def tag_name_problem(name: str) -> str | None:
    """Why ``name`` is not a tag the registry can serve (no client can pull it), or None. The
    message does not repeat the name."""
    if _TAG.fullmatch(name) is not None:
        return None
    if len(name) > MAX_TAG:
        return f"{len(name)} characters long; the registry serves tags of at most {MAX_TAG}"
    return (
        "not letters, digits, '_', '.' and '-' starting with a letter, digit or '_'; the "
        "registry cannot serve it"
    )
