"""Parse manifest blobs the way registry 2.8's garbage collector does, to know what each marks.

The registry decides a manifest's kind from ``schemaVersion`` and ``mediaType``; an OCI document
without ``mediaType`` is an index when it has ``manifests``, else an image manifest. Anything it
could not unmarshal makes its GC abort, so :class:`ManifestError` here means "GC would abort",
unless its ``gc_aborts`` is False: then only retentiond cannot hold what the GC reads.

The JSON is read as Go's ``encoding/json`` reads it into the registry's structs (each row checked
against Debian's docker-registry 2.8.2 with ``garbage-collect --dry-run``; the kind is the
:class:`~retentiond.core.inventory.ProblemKind` the reader gives a manifest a revision link
names, in a repository the GC walks):

=====================================  ==============================  ==========================
the blob                               registry 2.8's GC               here
=====================================  ==============================  ==========================
nested up to 10,000 deep               reads it                        reads it (past the C
                                                                       decoder's recursion limit
                                                                       without recursion)
nested deeper                          aborts: "exceeded max depth"    ManifestError: GC_ABORT
a descriptor ``size`` >= 2**63 or      aborts: "cannot unmarshal       ManifestError: GC_ABORT
< -2**63, a fraction or exponent       number ... of type int64"
(``1.5``, ``1e1``, ``11.0``), a
string or a bool
a negative ``size`` (an int64)         reads it                        reads it; no size stated
``size: null``                         reads it (0)                    reads it; no size stated
``NaN``, ``Infinity`` anywhere         aborts: "invalid character"     ManifestError: GC_ABORT
a huge number in a field it ignores    reads it                        reads it
(``1e999999``, 5,000 digits)
invalid UTF-8 inside a string          reads it (as U+FFFD)            reads it (as U+FFFD)
a BOM, UTF-16                          aborts: "invalid character"     ManifestError: GC_ABORT
a key twice                            the last one wins               the last one wins
a key in other case (``LAYERS``,       the same field (Go matches      the same field
``Kelvin sign`` for k, ``ſ`` for s)    keys case-insensitively)
``mediaType: null``                    ""                              ""
a descriptor's ``mediaType``,          aborts: "cannot unmarshal ...   ManifestError: GC_ABORT
``annotations`` (strings, null         of type string"
values are ""), ``urls`` (strings),
``platform`` (an object of strings;
``os.features``, an index child's
``features``: strings) or an OCI
manifest's ``annotations`` of another
JSON type
an index of more than 65,535           reads it                        ManifestError with
manifests                                                              ``gc_aborts`` False:
                                                                       UNREADABLE (a record
                                                                       counts children in 16
                                                                       bits)
=====================================  ==============================  ==========================

Not the GC's reading: null descriptors and digests (the GC reads them as "" and goes on; here
they are ManifestErrors, so the repository is refused and the GC blocked, the safe side), and
schema 1 manifests' signatures (not checked here).

Reading is fast for the usual manifest: one C decode, then a subset test of each object's keys
against the field names (only keys that are not exactly a field name are case-folded). The
rare document the C decoder cannot take (nested past Python's recursion limit, or an integer of
more than 4,300 digits) is read again by an iterative decoder, with Go's nesting limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from retentiond.core.inventory import (
    MAX_CHILDREN,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_SCHEMA1,
    Manifest,
)

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
#: Go's encoding/json refuses a document nested deeper than this (its scanner's maxNestingDepth)
GO_MAX_DEPTH = 10_000
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class ManifestError(ValueError):
    """The blob is not a manifest retentiond can read.

    ``gc_aborts``: the registry's GC cannot read it either, and aborts when it reads it (True);
    False when the GC reads it but retentiond cannot hold it (then the repository is refused,
    but no GC is blocked: see the module's table)."""

    def __init__(self, message: str, *, gc_aborts: bool = True) -> None:
        super().__init__(message)
        self.gc_aborts = gc_aborts


def is_digest(value: object) -> bool:
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


# -- JSON as Go reads it -------------------------------------------------------------------------


class _Huge(float):
    """An integer too long for Python to convert (more than 4,300 digits): no int64 either."""


def _not_json(constant: str) -> Any:
    raise ManifestError(f"not JSON: {constant} is not a JSON value")


#: the field names of the registry's manifest structs that this module reads, by their Go
#: case folding (Go matches object keys to fields case-insensitively)
_READ_FIELDS = (
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "digest",
    "size",
    "fsLayers",
    "blobSum",
    "annotations",
    "urls",
    "platform",
    "architecture",
    "os",
    "os.version",
    "os.features",
    "variant",
    "features",
)
#: a descriptor with nothing but these is checked inline (see _descriptors)
_PLAIN_DESCRIPTOR = frozenset(("mediaType", "digest", "size"))
_PLAIN_INDEX_CHILD = frozenset(("mediaType", "digest", "size", "platform"))
_PLAIN_PLATFORM = frozenset(("architecture", "os", "variant", "os.version"))


def _plain_platform(platform: object) -> bool:
    """An index child's usual platform: strings under the usual keys."""
    return (
        type(platform) is dict
        and platform.keys() <= _PLAIN_PLATFORM
        and all(type(value) is str for value in platform.values())
    )


def _go_fold(key: str) -> str:
    """``key`` as Go's case-insensitive field match sees it: the Kelvin sign folds to k (by
    ``lower``), the long s to s."""
    return key.replace("\u017f", "s").lower()


_FOLDED = {_go_fold(name): name for name in _READ_FIELDS}
#: keys that need no folding: the fields read, and the other fields of the registry's structs
_EXACT_KEYS = frozenset(
    (
        *_READ_FIELDS,
        *("subject", "artifactType", "data", "name", "tag", "history", "signatures"),
    )
)


class _FoldedKey(Exception):
    """An object has a key that is a field read here in another case: read it again, folded."""


def _go_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with the keys that fold to a field read here under that field's name; as in
    Go, the last of those keys wins."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out[_FOLDED.get(_go_fold(key), key)] = value
    return out


def _check_keys(obj: dict[str, Any]) -> None:
    """Raise :class:`_FoldedKey` when a key of ``obj`` is a field read here in another case."""
    if obj.keys() <= _EXACT_KEYS:
        return
    for key in obj.keys() - _EXACT_KEYS:
        if _go_fold(key) in _FOLDED:
            raise _FoldedKey(key)


_DECODER = json.JSONDecoder(parse_constant=_not_json)
_FOLDING_DECODER = json.JSONDecoder(parse_constant=_not_json, object_pairs_hook=_go_object)


def load_json(data: bytes, *, fold_keys: bool = False) -> Any:
    """``data`` as Go's ``encoding/json`` reads it (see the module's table); ``fold_keys``: with
    the keys that fold to a field read here renamed to it (the last one wins).

    Raises :class:`ManifestError` for anything Go refuses, never RecursionError or
    OverflowError."""
    # Go reads UTF-8 only, and invalid UTF-8 inside a string as U+FFFD; outside a string the
    # U+FFFD is a syntax error, as Go's invalid byte is
    text = data.decode("utf-8", "replace")
    decoder = _FOLDING_DECODER if fold_keys else _DECODER
    try:
        return decoder.decode(text)
    except RecursionError:  # nested deeper than the C decoder goes: read it without recursion
        pass
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not JSON: {exc}") from exc
    except ManifestError:
        raise
    except ValueError:  # an integer of more than 4,300 digits
        pass
    return _decode_iteratively(text)


_WS = r"[ \t\n\r]*"
_STRING_RE = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
#: one token, or a run of them that deep documents are made of: ``[[[``, ``]]]``, an object's
#: opening with its first key, a comma with the key after it (a step per level, not three)
_TOKEN = re.compile(
    _WS + "(?:"
    rf"(\[(?:{_WS}\[)*)"  # 1: arrays opening
    rf"|(\{{)(?:{_WS}({_STRING_RE}){_WS}:)?"  # 2: an object opening, 3: its first key
    rf"|(\](?:{_WS}\])*)"  # 4: arrays closing
    rf"|(\}}(?:{_WS}\}})*)"  # 5: objects closing
    rf"|(,)(?:{_WS}({_STRING_RE}){_WS}:)?"  # 6: a comma, 7: the key after it
    r"|(:)"  # 8
    rf"|({_STRING_RE})"  # 9
    r"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"  # 10
    r"|(true|false|null)"  # 11
    rf"|((?:\{{{_WS}{_STRING_RE}{_WS}:{_WS})+)"  # 12: objects opening, each with its first key
    ")"
)
_KEY_IN_RUN = re.compile(_STRING_RE)
_LITERALS = {"true": True, "false": False, "null": None}
#: what the iterative decoder expects next
_VALUE, _VALUE_OR_END, _KEY, _KEY_OR_END, _COLON_NEXT, _COMMA_OR_END, _DONE = range(7)


def _number(token: str) -> int | float:
    if "." in token or "e" in token or "E" in token:
        return float(token)  # a huge exponent is inf, as harmless as Go's skipping it
    return int(token) if len(token) <= 40 else _Huge("inf")


def _string(token: str) -> str:
    """A string token's value (without escapes, what is between its quotes)."""
    return token[1:-1] if "\\" not in token else str(json.loads(token))


def _key(token: str) -> str:
    key = _string(token)
    return _FOLDED.get(_go_fold(key), key)


class _Builder:
    """The state of :func:`_decode_iteratively`: the open containers, what comes next."""

    def __init__(self) -> None:
        self.stack: list[list[Any] | dict[str, Any]] = []
        self.keys: list[str] = []  # per open container: the key of the value that comes next
        self.root: Any = None
        self.expect = _VALUE

    @property
    def wants_value(self) -> bool:
        return self.expect in (_VALUE, _VALUE_OR_END)

    def add(self, value: Any) -> None:
        """Put ``value`` where it belongs."""
        if not self.stack:
            self.root = value
            self.expect = _DONE
            return
        top = self.stack[-1]
        if isinstance(top, list):
            top.append(value)
        else:
            top[self.keys[-1]] = value
        self.expect = _COMMA_OR_END

    def open(
        self, containers: list[list[Any] | dict[str, Any]], at: int, keys: Sequence[str] = ()
    ) -> None:
        """Open ``containers``, each inside the one before; with ``keys`` (string tokens, one
        per container), each object's first key."""
        if len(self.stack) + len(containers) > GO_MAX_DEPTH:
            raise ManifestError(
                f"nested more than {GO_MAX_DEPTH} deep (at offset {at}); the registry's JSON "
                "decoder refuses it too"
            )
        for i, container in enumerate(containers):
            self.add(container)
            self.stack.append(container)
            self.keys.append(_key(keys[i]) if keys else "")
        if keys:
            self.expect = _VALUE
        else:
            self.expect = _VALUE_OR_END if isinstance(containers[-1], list) else _KEY_OR_END

    def close(self, count: int, kind: type) -> bool:
        """Close ``count`` containers of ``kind``; False when those are not what is open."""
        if self.expect not in (_VALUE_OR_END, _KEY_OR_END, _COMMA_OR_END):
            return False
        closing = self.stack[-count:]
        if len(closing) != count or any(type(c) is not kind for c in closing):
            return False
        del self.stack[-count:]
        del self.keys[-count:]
        self.expect = _COMMA_OR_END if self.stack else _DONE
        return True

    def key(self, token: str | None) -> None:
        """A key read (``token``), or one to come (None)."""
        if token is None:
            self.expect = _KEY
        else:
            self.keys[-1] = _key(token)
            self.expect = _VALUE


def _decode_iteratively(text: str) -> Any:
    """Decode JSON with a stack of its own instead of recursion, nested up to Go's limit; keys
    are folded as with ``load_json(fold_keys=True)``. Slower than the C decoder (a Python
    step per token, or per run of brackets): only for what that one cannot take."""
    built = _Builder()
    at = 0
    while True:
        match = _TOKEN.match(text, at)
        if match is None:
            if built.expect == _DONE and not text[at:].strip(" \t\n\r"):
                return built.root
            raise ManifestError(f"not JSON: unexpected character at offset {at}")
        if not _step(built, match):
            token = match.group(0).strip(" \t\n\r")[:40]
            raise ManifestError(f"not JSON: unexpected {token!r} at offset {at}")
        at = match.end()


def _step(built: _Builder, match: re.Match[str]) -> bool:
    """Take one token (or run); False when it cannot come here."""
    group = match.group
    if group(12) is not None:  # {"a": {"b": ...: objects opening, each with its first key
        if not built.wants_value:
            return False
        keys = _KEY_IN_RUN.findall(group(12))
        built.open([{} for _ in keys], match.start(), keys)
        return True
    if group(1) is not None or group(2) is not None:  # opening
        if not built.wants_value:
            return False
        runs = group(1)
        count = runs.count("[") if runs is not None else 0
        built.open([[] for _ in range(count)] if count else [{}], match.start())
        if group(3) is not None:
            built.key(group(3))
        return True
    if group(4) is not None:
        return built.close(group(4).count("]"), list)
    if group(5) is not None:
        return built.close(group(5).count("}"), dict)
    if group(6) is not None:  # a comma, with the key after it when one follows
        if built.expect != _COMMA_OR_END or not built.stack:
            return False
        if isinstance(built.stack[-1], list):
            built.expect = _VALUE
            return group(7) is None
        built.key(group(7))
        return True
    if group(8) is not None:
        if built.expect != _COLON_NEXT:
            return False
        built.expect = _VALUE
        return True
    if group(9) is not None and built.expect in (_KEY, _KEY_OR_END):
        built.keys[-1] = _key(group(9))
        built.expect = _COLON_NEXT
        return True
    if not built.wants_value:
        return False
    if group(9) is not None:
        built.add(_string(group(9)))
    elif group(10) is not None:
        built.add(_number(group(10)))
    else:
        built.add(_LITERALS[group(11)])
    return True


# -- manifests -----------------------------------------------------------------------------------


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    _check_keys(value)
    return value


def _descriptor_list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"'{key}' is not a list")
    return value


def _subject(doc: dict[str, Any]) -> str | None:
    subject = doc.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        return str(subject["digest"])
    return None


def _descriptor(desc: object, where: str, *, in_index: bool = False) -> tuple[str, int]:
    """A descriptor's digest and stated size (-1: none), checked as Go unmarshals it into a
    ``distribution.Descriptor`` (``in_index``: a ``manifestlist.ManifestDescriptor``)."""
    obj = _object(desc, where)
    digest = obj.get("digest")
    if not isinstance(digest, str):
        raise ManifestError(f"{where} has no digest string")
    _string_or_null(obj, "mediaType", where)
    _string_map(obj.get("annotations"), f"{where}.annotations")
    _string_list(obj.get("urls"), f"{where}.urls")
    _platform(obj.get("platform"), f"{where}.platform", in_index)
    size = obj.get("size")
    if size is None:
        return digest, -1
    if type(size) is not int or not INT64_MIN <= size <= INT64_MAX:
        shown = "an integer past 2**63" if isinstance(size, _Huge) else repr(size)[:40]
        raise ManifestError(
            f"{where}.size is {shown}, not a 64-bit integer; the registry cannot read it"
        )
    return digest, size if size >= 0 else -1


def _not_readable(where: str, what: str) -> ManifestError:
    return ManifestError(f"{where} is not {what}; the registry cannot read it")


def _string_or_null(obj: dict[str, Any], key: str, where: str) -> None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _not_readable(f"{where}.{key}", "a string")


def _string_map(value: object, where: str) -> None:
    """Go's ``map[string]string`` (null values are "")."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        v is None or isinstance(v, str) for v in value.values()
    ):
        raise _not_readable(where, "an object of strings")


def _string_list(value: object, where: str) -> None:
    """Go's ``[]string`` (null elements are "")."""
    if value is None:
        return
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise _not_readable(where, "a list of strings")


def _platform(value: object, where: str, in_index: bool) -> None:
    """An OCI ``Platform`` (a descriptor's), or a ``manifestlist.PlatformSpec`` (``in_index``,
    which also has ``features``)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _not_readable(where, "an object")
    _check_keys(value)
    for key in ("architecture", "os", "os.version", "variant"):
        _string_or_null(value, key, where)
    _string_list(value.get("os.features"), f"{where}.os.features")
    if in_index:
        _string_list(value.get("features"), f"{where}.features")


def _descriptors(
    key: str, descriptors: list[Any], *, in_index: bool = False
) -> tuple[list[str], list[int]]:
    """The digests and stated sizes of ``descriptors`` (the error names the first bad one)."""
    digests: list[str] = []
    sizes: list[int] = []
    exact = _PLAIN_INDEX_CHILD if in_index else _PLAIN_DESCRIPTOR
    low, high = INT64_MIN, INT64_MAX
    for desc in descriptors:
        # the usual descriptor, checked inline (a function call each costs more than this)
        if type(desc) is dict and desc.keys() <= exact:
            digest, size, media_type = desc.get("digest"), desc.get("size"), desc.get("mediaType")
            platform = desc.get("platform")
            if (
                type(digest) is str
                and (media_type is None or type(media_type) is str)
                and type(size) is int
                and low <= size <= high
                and (platform is None or _plain_platform(platform))
            ):
                digests.append(digest)
                sizes.append(size if size >= 0 else -1)
                continue
        digest, size = _descriptor(desc, f"{key}[{len(digests)}]", in_index=in_index)
        digests.append(digest)
        sizes.append(size)
    return digests, sizes


def _image(digest: str, media_type: str, doc: dict[str, Any]) -> Manifest:
    if media_type == MEDIA_OCI_MANIFEST:  # a Docker image manifest has no annotations field
        _string_map(doc.get("annotations"), "annotations")
    config = doc.get("config")
    layers, sizes = _descriptors("layers", _descriptor_list(doc, "layers"))
    config_digest = ""
    if config is not None:
        config_digest, config_size = _descriptor(config, "config")
        if config_digest:
            layers.insert(0, config_digest)
            sizes.insert(0, config_size)
    return Manifest(
        digest=digest,
        media_type=media_type,
        blobs=tuple(layers),
        subject=_subject(doc),
        config=config_digest or None,
        blob_sizes=tuple(sizes),
    )


def _index(digest: str, media_type: str, doc: dict[str, Any]) -> Manifest:
    children, _ = _descriptors("manifests", _descriptor_list(doc, "manifests"), in_index=True)
    if len(children) > MAX_CHILDREN:
        raise ManifestError(
            f"an index of {len(children)} manifests; retentiond reads at most {MAX_CHILDREN}",
            gc_aborts=False,
        )
    return Manifest(
        digest=digest, media_type=media_type, children=tuple(children), subject=_subject(doc)
    )


def _schema1(digest: str, doc: dict[str, Any]) -> Manifest:
    layers: list[str] = []
    for i, layer in enumerate(_descriptor_list(doc, "fsLayers")):
        if isinstance(layer, dict):
            _check_keys(layer)
        if not isinstance(layer, dict) or not isinstance(layer.get("blobSum"), str):
            raise ManifestError(f"fsLayers[{i}] has no blobSum")
        layers.append(str(layer["blobSum"]))
    return Manifest(digest=digest, media_type=MEDIA_SCHEMA1, blobs=tuple(layers))


def parse_manifest(digest: str, data: bytes) -> Manifest:
    """Parse a manifest blob; raise :class:`ManifestError` where registry 2.8 would fail (see
    the module's table), and for nothing else but :class:`ManifestError`."""
    try:
        return _parse(digest, load_json(data))
    except _FoldedKey:  # a field's key in another case (Go reads it as the field): fold them
        return _parse(digest, load_json(data, fold_keys=True))


def _parse(digest: str, doc: Any) -> Manifest:
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    _check_keys(doc)
    version = doc.get("schemaVersion")
    media_type = doc.get("mediaType")
    if media_type is None:
        media_type = ""
    if type(version) is not int:
        shown = "too large" if isinstance(version, _Huge) else repr(version)[:40]
        raise ManifestError(f"schemaVersion is {shown}, not an integer")
    if not isinstance(media_type, str):
        raise ManifestError("mediaType is not a string")
    if version == 1:
        return _schema1(digest, doc)
    if version != 2:
        raise ManifestError(f"unrecognized manifest schema version {str(version)[:40]}")
    if media_type in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST):
        return _image(digest, media_type, doc)
    if media_type in (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX):
        return _index(digest, media_type, doc)
    if media_type == "":
        if doc.get("manifests") is not None:
            return _index(digest, MEDIA_OCI_INDEX, doc)
        return _image(digest, MEDIA_OCI_MANIFEST, doc)
    raise ManifestError(f"unrecognized manifest content type {media_type[:200]!r}")


def parse_created(data: bytes) -> datetime | None:
    """The ``created`` time of an image config blob, or None when absent or unreadable."""
    try:
        doc = load_json(data)
    except ManifestError:
        return None
    created = doc.get("created") if isinstance(doc, dict) else None
    return parse_rfc3339(created) if isinstance(created, str) else None


_FRACTION = re.compile(r"\.(\d+)")


def parse_rfc3339(text: str) -> datetime | None:
    """Parse Go's RFC 3339 times (nanoseconds, ``Z``) into aware UTC datetimes; None when
    ``text`` is not one, or is one a datetime cannot hold (year 1, an hour east of UTC)."""
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text.strip(), count=1)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
