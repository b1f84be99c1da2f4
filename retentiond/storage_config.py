"""Where the registry's storage is, in the registry's own words: ``registry.storage`` and
``registry.config_file`` of the config file (``registry.root`` is the filesystem shorthand).

```yaml
registry:
  storage:                       # the registry's `storage` section, as in its config.yml
    s3: {bucket: registry, region: us-east-1, regionendpoint: http://rgw:7480,
         rootdirectory: /prod, accesskey: AKIA..., secretkey_file: s3.secret}
# or
registry:
  config_file: /etc/registry/config.yml   # storage (and redis) read from the registry's file
```

The section takes exactly one driver, ``filesystem`` or ``s3`` (``s3aws``, its other name), with
the keys and values the registry takes (distribution 2.8 and 3.x,
``registry/storage/driver/{filesystem,s3-aws}``): booleans also as the strings Go's
``strconv.ParseBool`` reads ("true", "1", "f"...), strings also as numbers. The registry's
other storage keys (``delete``, ``cache``, ``maintenance``, ``redirect``, ``tag``) and the s3
keys that only shape how it writes (``chunksize``, ``storageclass``...) are accepted and not
used; a key neither knows is a warning (the registry ignores it too). Where the registry
refuses to start (no bucket, no region without ``regionendpoint``, ``v4auth: false`` on AWS),
so does this. ``sessiontoken`` is read although the registry never reads it (it has no such
key: its static credentials are accesskey and secretkey only).

Two keys are retentiond's own, in its config only: ``secretkey_file`` (the secret key in a
file, relative to the config file, since that config is kept in git), and none of accesskey,
secretkey: boto3's default chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile,
an instance role), as the registry does then.

With ``config_file`` the registry's file is the one source of truth: its ``storage`` section
(read by the same code, problems located in that file), ``storage.cache.blobdescriptor``
(``registry.cache``) and its ``redis`` section (``addr`` in 2.8, ``addrs`` in 3.x, ``password``,
``db``: ``registry.redis_url``); retentiond's config then writes none of ``storage``, ``root``,
``cache``, ``redis_url``. The registry's ``REGISTRY_STORAGE_*`` environment overrides are not
seen. No secret read from either file is ever part of a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from retentiond.policy.files import SourceFileError, read_source_file
from retentiond.policy.text import excerpt
from retentiond.policy.yaml_positions import (
    Position,
    YamlList,
    YamlMap,
    YamlScalar,
    YamlValue,
    describe,
    load_yaml,
)
from retentiond.storage.location import Location
from retentiond.storage.s3_settings import S3Settings
from retentiond.yaml_checker import Checker, is_null, unknown_key_message

#: the filesystem driver's rootdirectory when it names none
DEFAULT_ROOT = Path("/var/lib/registry")
#: the region retentiond signs for when only regionendpoint is given (the registry 3.x then
#: signs for "<nil>", 2.8 refuses to start): stores behind an endpoint rarely check it
DEFAULT_REGION = "us-east-1"
#: the keys of the registry's ``storage`` section that are not a driver
STORAGE_OPTIONS = ("delete", "cache", "maintenance", "redirect", "tag")
#: the drivers retentiond reads (``s3aws`` is the s3 driver's other registered name)
DRIVERS = ("filesystem", "s3", "s3aws")
#: the registry's other drivers (2.8 and 3.x)
OTHER_DRIVERS = ("inmemory", "azure", "gcs", "swift", "oss")
FILESYSTEM_KEYS = ("rootdirectory",)
FILESYSTEM_IGNORED = ("maxthreads",)
S3_STRINGS = (
    "bucket",
    "region",
    "regionendpoint",
    "rootdirectory",
    "accesskey",
    "secretkey",
    "sessiontoken",
)
S3_FLAGS = {"secure": True, "skipverify": False, "v4auth": True, "forcepathstyle": False}
#: the s3 driver's keys about how it writes, or its client (2.8, 3.1 and later): not used here
S3_IGNORED = (
    "chunksize",
    "multipartcopychunksize",
    "multipartcopymaxconcurrency",
    "multipartcopythresholdsize",
    "encrypt",
    "keyid",
    "storageclass",
    "objectacl",
    "useragent",
    "usedualstack",
    "usefipsendpoint",
    "accelerate",
    "loglevel",
    "redirectendpoint",
)
SECRET_FILE = "secretkey_file"
SECRETS = ("accesskey", "secretkey", "sessiontoken")
#: what ``strconv.ParseBool`` reads, the registry's reading of a boolean written as a string
PARSE_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
#: the keys of ``registry`` that config_file speaks for
OWNED = ("storage", "root", "cache", "redis_url")
FROM_FILE_HOW = {
    "storage": "its storage section",
    "root": "its storage section",
    "cache": "storage.cache.blobdescriptor",
    "redis_url": "its redis section",
}


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """What the storage keys say; None: not said (``registry.root`` or the defaults apply)."""

    root: Path | None = None
    s3: S3Settings | None = None
    config_file: Path | None = None
    #: from config_file only: ``redis``, ``inmemory`` or ``none`` (the registry's blob cache)
    cache: str | None = None
    redis_url: str | None = None


def read_registry_storage(
    c: Checker, values: Mapping[str, YamlValue], keys: Mapping[str, Position], base: Path
) -> StorageSettings:
    """``registry.storage`` or ``registry.config_file`` of the ``registry`` section (its
    ``values`` and the positions of its ``keys``); problems go to ``c``."""
    written = {k: keys[k] for k in OWNED if k in values and not is_null(values[k])}
    file_value = values.get("config_file")
    if file_value is not None and not is_null(file_value):
        name = c.read_string(file_value, "registry.config_file")
        if name is None:
            return StorageSettings()
        path = base / name
        for key, at in written.items():
            c.problem(
                at,
                f"registry.{key}: with registry.config_file the registry's {path} is the one "
                f"source of truth ({FROM_FILE_HOW[key]}); remove registry.{key}, or remove "
                "registry.config_file to write the storage here",
            )
        return read_registry_file(c, path, file_value)
    storage = values.get("storage")
    if storage is None or is_null(storage):
        return StorageSettings()
    if "root" in written:
        c.problem(
            written["root"],
            "registry.root and registry.storage both say where the storage is: keep "
            "registry.storage and remove registry.root (its shorthand for storage: "
            "{filesystem: {rootdirectory: ...}})",
        )
    root, s3 = read_storage(c, storage, "registry.storage", base, own=True)
    _same_cache(c, storage, values.get("cache"))
    return StorageSettings(root=root, s3=s3)


def _same_cache(c: Checker, storage: YamlValue, cache: YamlValue | None) -> None:
    """A problem when ``storage.cache.blobdescriptor`` and ``registry.cache`` disagree about
    redis: a redis cache left uncleaned after a GC makes re-pushed images fail to pull."""
    kind, at = _blob_cache(storage)
    written = cache.value if isinstance(cache, YamlScalar) and cache.value else "inmemory"
    if at is None or (kind == "redis") == (written == "redis"):
        return
    c.problem(
        at,
        f"registry.storage.cache.blobdescriptor is {kind} but registry.cache is {written}: "
        + (
            "write registry.cache: redis and registry.redis_url, so that the stale keys are "
            "deleted after a GC"
            if kind == "redis"
            else f"write registry.cache: {kind}, as the registry's storage says"
        ),
    )


def read_storage(
    c: Checker, value: YamlValue, what: str, base: Path, *, own: bool
) -> tuple[Path | None, S3Settings | None]:
    """A registry ``storage`` section: the filesystem root or the bucket (both None after a
    problem). ``own``: in retentiond's config (relative paths against ``base``,
    ``secretkey_file`` allowed), else in the registry's config.yml."""
    if isinstance(value, YamlScalar) and isinstance(value.value, str):  # storage: filesystem
        driver, params, at = value.value, None, value.position
    elif isinstance(value, YamlMap):
        drivers = [e for k, e in value.entries.items() if k not in STORAGE_OPTIONS]
        if not drivers:
            c.problem(
                value,
                f"{what} names no storage driver; write filesystem: {{rootdirectory: "
                "/var/lib/registry} or s3: {bucket: ..., region: ...}",
            )
            return None, None
        if len(drivers) > 1:
            names = ", ".join(e.key for e in drivers)
            c.problem(
                drivers[1].key_position,
                f"{what} must name exactly one storage driver, not {names}; keep the one "
                "the registry uses",
            )
            return None, None
        driver, params, at = drivers[0].key, drivers[0].value, drivers[0].key_position
    else:
        c.problem(
            value, f"{what} must be a mapping, e.g. s3: {{bucket: ...}}, got {describe(value)}"
        )
        return None, None
    if driver == "filesystem":
        return _filesystem(c, params, f"{what}.filesystem", at, base, own=own), None
    if driver in ("s3", "s3aws"):
        return None, _s3(c, params, f"{what}.{driver}", at, base, own=own)
    if driver in OTHER_DRIVERS:
        message = f"{what}: the {driver} driver: retentiond reads filesystem and s3 storage"
    else:
        message = unknown_key_message(driver, what, (*DRIVERS, *STORAGE_OPTIONS))
        message += "; retentiond reads filesystem and s3 storage"
    c.problem(at, message)
    return None, None


def read_registry_file(c: Checker, path: Path, at: YamlValue) -> StorageSettings:
    """Storage, cache and redis from the registry's config.yml at ``path`` (``at``: where
    retentiond's config names it); problems in the file are located in it."""
    none = StorageSettings(config_file=path)
    try:
        text = read_source_file(path, "registry config file")
    except SourceFileError as exc:
        c.problem(
            at,
            f"registry.config_file {path}: {exc}; name the registry's config.yml as this "
            "machine sees it (a relative path is relative to this config file)",
        )
        return none
    document = load_yaml(text, str(path))
    if document.problems:
        c.problems.extend(document.problems)
        return none
    sub = Checker(str(path))
    try:
        settings = _registry_file(sub, document.root, path)
    finally:
        c.problems.extend(sub.problems)
        c.warnings.extend(sub.warnings)
    return settings


def _registry_file(c: Checker, root: YamlValue | None, path: Path) -> StorageSettings:
    none = StorageSettings(config_file=path)
    if not isinstance(root, YamlMap):
        c.problem(
            root.position if root else Position(1, 1), "the registry's config must be a mapping"
        )
        return none
    entry = root.entries.get("storage")
    if entry is None or is_null(entry.value):
        c.problem(
            entry.key_position if entry else root.position,
            "the registry's config has no storage section, so the registry does not start; "
            "is it the file the registry reads?",
        )
        return none
    location, s3 = read_storage(c, entry.value, "storage", path.parent, own=False)
    if location is None and s3 is None:
        return none
    cache, cache_at = _blob_cache(entry.value)
    redis_url = None
    if cache == "redis":
        redis = root.entries.get("redis")
        redis_url = _redis_url(c, redis.value if redis else None, cache_at)
    return StorageSettings(location, s3, path, cache, redis_url)


def describe_storage(location: Location, config_file: Path | None = None) -> str:
    """``check``'s line about the storage: the backend and where, never a secret."""
    if isinstance(location, S3Settings):
        where = (
            f"at {location.endpoint_url}"
            if location.regionendpoint
            else f"in AWS region {location.region}"
        )
        text = f"s3 bucket {location.bucket} {where}"
        if location.rootdirectory:
            text += f", rootdirectory /{location.rootdirectory}"
        if location.accesskey is None:
            text += ", credentials from the AWS default chain"
    else:
        text = f"filesystem {location}"
    if config_file is not None:
        text += f" (from {config_file})"
    return f"storage: {text}"


# ---------------------------------------------------------------- drivers


def _params(c: Checker, value: YamlValue | None, what: str) -> dict[str, YamlValue] | None:
    """The keys of a driver's (or redis') mapping; null: none; None after a problem."""
    if value is None or is_null(value):
        return {}
    if not isinstance(value, YamlMap):
        c.problem(value, f"{what} must be a mapping, got {describe(value)}")
        return None
    return {k: e.value for k, e in value.entries.items()}


def _warn_unknown(
    c: Checker, value: YamlValue | None, what: str, known: tuple[str, ...], ignored: tuple[str, ...]
) -> None:
    if not isinstance(value, YamlMap):
        return
    for key, entry in value.entries.items():
        if key not in known and key not in ignored:
            c.warning(
                entry.key_position,
                unknown_key_message(key, what, known) + "; neither retentiond nor the registry "
                "reads it",
            )


def _filesystem(
    c: Checker, value: YamlValue | None, what: str, at: Position, base: Path, *, own: bool
) -> Path | None:
    params = _params(c, value, what)
    if params is None:
        return None
    _warn_unknown(c, value, what, FILESYSTEM_KEYS, FILESYSTEM_IGNORED)
    if "rootdirectory" not in params or is_null(params["rootdirectory"]):
        return DEFAULT_ROOT
    node = params["rootdirectory"]
    text = _text(c, node, f"{what}.rootdirectory")
    if text is None:
        if not _problem_recorded(c, node):
            c.problem(node, f"{what}.rootdirectory must not be empty")
        return None
    if not own and not text.startswith("/"):
        c.problem(
            node,
            f"{what}.rootdirectory {excerpt(text)} is relative: the registry reads it against "
            "its working directory, which retentiond cannot know; write the absolute path",
        )
        return None
    return base / text


def _s3(
    c: Checker, value: YamlValue | None, what: str, at: Position, base: Path, *, own: bool
) -> S3Settings | None:
    before = len(c.problems)
    params = _params(c, value, what)
    if params is None:
        return None
    known = (*S3_STRINGS, *S3_FLAGS, *((SECRET_FILE,) if own else ()))
    _warn_unknown(c, value, what, known, S3_IGNORED)
    strings = {
        key: _text(c, params[key], f"{what}.{key}", secret=key in SECRETS)
        for key in S3_STRINGS
        if key in params
    }
    flags = {
        key: _flag(c, params[key], f"{what}.{key}", default) if key in params else default
        for key, default in S3_FLAGS.items()
    }
    bucket, region, endpoint = (strings.get(k) for k in ("bucket", "region", "regionendpoint"))
    if bucket is None and not _problem_recorded(c, params.get("bucket")):
        c.problem(params.get("bucket") or at, f"{what}.bucket is required: the bucket's name")
    if region is None and endpoint is None and not _problem_recorded(c, params.get("region")):
        c.problem(
            params.get("region") or at,
            f"{what}.region is required without regionendpoint (AWS): e.g. region: us-east-1",
        )
    if endpoint is not None:
        _check_endpoint(c, params["regionendpoint"], f"{what}.regionendpoint", endpoint)
    if flags["v4auth"] is False and (endpoint is None or "s3.amazonaws.com" in endpoint):
        c.problem(
            params["v4auth"],
            f"{what}.v4auth: false: AWS S3 takes only v4 signatures (the registry refuses it "
            "too); remove v4auth",
        )
    secret = strings.get("secretkey")
    if own and SECRET_FILE in params and not is_null(params[SECRET_FILE]):
        node = params[SECRET_FILE]
        if secret is not None:
            c.problem(node, f"{what}: secretkey and {SECRET_FILE} both given; keep {SECRET_FILE}")
        secret = _secret_file(c, node, f"{what}.{SECRET_FILE}", base)
    access = strings.get("accesskey")
    unreadable = any(_problem_recorded(c, params.get(k)) for k in ("secretkey", SECRET_FILE))
    if access is not None and secret is None and not unreadable:
        c.problem(
            params["accesskey"],
            f"{what}.accesskey without its secret key: write "
            + (f"{SECRET_FILE} (a file holding it) or secretkey" if own else "secretkey")
            + ", or remove accesskey to use the AWS default chain (environment, profile, "
            "instance role)",
        )
    if access is None and secret is not None:
        c.warning(
            params.get("secretkey") or params[SECRET_FILE],
            f"{what}: a secret key without accesskey is ignored (the registry ignores it too); "
            "the AWS default chain gives the credentials",
        )
        secret = None
    if len(c.problems) > before or bucket is None:
        return None
    return S3Settings(
        bucket=bucket,
        region=region or DEFAULT_REGION,
        regionendpoint=endpoint,
        rootdirectory=(strings.get("rootdirectory") or "").strip("/"),
        accesskey=access,
        secretkey=secret,
        sessiontoken=strings.get("sessiontoken") if access is not None else None,
        secure=flags["secure"],
        skipverify=flags["skipverify"],
        v4auth=flags["v4auth"],
        forcepathstyle=flags["forcepathstyle"],
    )


def _problem_recorded(c: Checker, node: YamlValue | None) -> bool:
    """True when a problem is already recorded at ``node`` (no second one for it)."""
    if node is None:
        return False
    at = node.position
    return any(p.file == c.file and (p.line, p.column) == (at.line, at.column) for p in c.problems)


def _text(c: Checker, value: YamlValue, what: str, *, secret: bool = False) -> str | None:
    """A string as the registry reads it (``fmt.Sprint``: a whole number is its digits);
    null or empty: None. A secret's value is never quoted."""
    raw = value.value if isinstance(value, YamlScalar) else None
    if raw is None and isinstance(value, YamlScalar):
        return None
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    got = "a value that is not a string" if secret else describe(value)
    hint = "; quote it" if isinstance(value, YamlScalar) else ""
    c.problem(value, f"{what} must be a string, got {got}{hint}")
    return None


def _flag(c: Checker, value: YamlValue, what: str, default: bool) -> bool:
    """A boolean as the registry reads it: true/false, or a string ``strconv.ParseBool`` reads."""
    raw = value.value if isinstance(value, YamlScalar) else None
    if raw is None and isinstance(value, YamlScalar):
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw in PARSE_BOOL:
        return PARSE_BOOL[raw]
    c.problem(value, f"{what} must be true or false, got {describe(value)}")
    return default


def _check_endpoint(c: Checker, node: YamlValue, what: str, endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("", "http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.username is not None
    ):
        got = "a URL with credentials" if parts and parts.username else excerpt(endpoint)
        c.problem(
            node,
            f"{what} must be the endpoint's URL or host[:port], e.g. http://rgw:7480 or "
            f"minio.example.com:9000; got {got}",
        )


def _secret_file(c: Checker, node: YamlValue, what: str, base: Path) -> str | None:
    name = c.read_string(node, what)
    if name is None:
        return None
    path = base / name
    try:
        text = read_source_file(path, "secret key file")
    except SourceFileError as exc:
        c.problem(node, f"{what} {path}: {exc}; fix the path or its permissions")
        return None
    secret = text.rstrip("\r\n")
    if not secret.strip() or "\n" in secret:
        c.problem(node, f"{what} {path} must hold the secret key alone, on one line")
        return None
    return secret


# ---------------------------------------------------------------- the registry's cache and redis


def _blob_cache(storage: YamlValue) -> tuple[str, YamlValue | Position | None]:
    """The registry's blob descriptor cache (``storage.cache.blobdescriptor``, or its old name
    ``layerinfo``): ``redis``, ``inmemory`` or ``none`` (absent or another value: the registry
    caches nothing), and where it is written."""
    cache = storage.entries.get("cache") if isinstance(storage, YamlMap) else None
    if cache is None or not isinstance(cache.value, YamlMap):
        return "none", None
    for key in ("blobdescriptor", "layerinfo"):
        entry = cache.value.entries.get(key)
        if entry is not None:
            kind = entry.value.value if isinstance(entry.value, YamlScalar) else None
            known = isinstance(kind, str) and kind in ("redis", "inmemory")
            return (str(kind) if known else "none"), entry.value
    return "none", None


def _redis_url(
    c: Checker, redis: YamlValue | None, cache_at: YamlValue | Position | None
) -> str | None:
    """``redis://[user:password@]host:port/db`` from the registry's ``redis`` section (2.8:
    ``addr``; 3.x: ``addrs``, a list); problems when there is no single server."""
    at = cache_at if cache_at is not None else Position(1, 1)
    params = _params(c, redis, "redis")
    if params is None:
        return None
    address_node = params.get("addrs") or params.get("addr")
    if "addr" in params and "addrs" in params:
        c.problem(params["addrs"], "redis: write addr (2.8) or addrs (3.x), not both")
        return None
    addresses: list[str] = []
    if isinstance(address_node, YamlList):
        addresses = [t for item in address_node.items if (t := _text(c, item, "redis.addrs"))]
    elif address_node is not None and (text := _text(c, address_node, "redis.addr")):
        addresses = [text]
    if not addresses:
        c.problem(
            address_node or at,
            "storage.cache.blobdescriptor: redis needs the redis server: redis.addr (2.8) or "
            "redis.addrs (3.x), e.g. addr: redis:6379",
        )
        return None
    if len(addresses) > 1 or not is_null(params.get("mastername")):
        c.problem(
            address_node or at,
            "redis: retentiond cleans the cache on one redis server, not a cluster or a "
            "sentinel group; give the registry one server",
        )
        return None
    password = (
        _text(c, params["password"], "redis.password", secret=True)
        if "password" in params
        else None
    )
    username = _text(c, params["username"], "redis.username") if "username" in params else None
    db = 0
    if "db" in params and not is_null(params["db"]):
        raw = params["db"].value if isinstance(params["db"], YamlScalar) else None
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            db = raw
        else:
            c.problem(
                params["db"], f"redis.db must be a whole number, got {describe(params['db'])}"
            )
            return None
    tls = params.get("tls")
    scheme = "redis"
    if isinstance(tls, YamlMap) and tls.entries:
        scheme = "rediss"
        c.warning(
            tls,
            "redis.tls: retentiond connects with TLS, verifying the server against this "
            "machine's CAs, without a client certificate",
        )
    host = addresses[0] if addresses[0].rpartition(":")[2].isdigit() else f"{addresses[0]}:6379"
    user = quote(username or "", safe="")
    login = f"{user}:{quote(password, safe='')}@" if password else f"{user}@" if user else ""
    return f"{scheme}://{login}{host}/{db}"
