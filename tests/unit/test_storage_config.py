"""``registry.storage`` and ``registry.config_file``: the registry's storage section read as the
registry reads it (every key, the string booleans, the problems with their line and column),
the registry's own config.yml of 2.8 and of 3.x, ``secretkey_file``, one source of truth, and
the line ``check`` prints. Real files in a temporary directory; the S3 server itself is
contacted in tests/integration/test_check_storage.py."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent, indent

import pytest

from retentiond.commands.check import run_check
from retentiond.config import CacheKind, ConfigCheck, RegistryConfig, check_config
from retentiond.storage.s3_settings import S3Settings
from retentiond.storage_config import S3_IGNORED, describe_storage
from tests.unit.test_check import no_docker, write  # noqa: F401 (an autouse fixture)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
REDIS_PASSWORD = "p@ss word/1"


def checked(tmp_path: Path, registry: str, *, name: str = "retentiond.yaml") -> ConfigCheck:
    """``check_config`` of a config whose ``registry`` section is ``registry`` (indented by
    the caller as under ``registry:``)."""
    text = "registry:\n" + indent(dedent(registry), "  ") + "runtime: {kind: none}\n"
    return check_config(write(tmp_path / name, text))


def registry(tmp_path: Path, text: str) -> RegistryConfig:
    found = checked(tmp_path, text)
    assert found.problems == (), found.problems
    assert found.config is not None
    return found.config.registry


def located(found: ConfigCheck, *, warnings: bool = False) -> list[str]:
    """``FILE:LINE:COL: message`` of each problem (or warning), the file by its name."""
    items = found.warnings if warnings else found.problems
    return [f"{Path(p.file).name}:{p.line}:{p.column}: {p.message}" for p in items]


# ---------------------------------------------------------------- filesystem


def test_filesystem_rootdirectory(tmp_path: Path) -> None:
    reg = registry(tmp_path, "  storage:\n    filesystem:\n      rootdirectory: /srv/registry\n")
    assert reg.root == Path("/srv/registry")
    assert reg.s3 is None and reg.location == Path("/srv/registry")
    # relative to retentiond's config file, like registry.root
    assert registry(tmp_path, "  storage: {filesystem: {rootdirectory: data}}\n").root == (
        tmp_path / "data"
    )


@pytest.mark.parametrize(
    "storage",
    [
        "  storage: filesystem\n",  # the registry's short form: a driver without parameters
        "  storage: {filesystem: null}\n",
        "  storage: {filesystem: {maxthreads: 100}}\n",  # the registry's other key: accepted
    ],
)
def test_filesystem_without_rootdirectory_is_the_registrys_default(
    tmp_path: Path, storage: str
) -> None:
    found = checked(tmp_path, storage)
    assert found.config is not None and found.warnings == ()
    assert found.config.registry.root == Path("/var/lib/registry")


def test_the_registrys_other_storage_keys_are_accepted(tmp_path: Path) -> None:
    found = checked(
        tmp_path,
        """\
          storage:
            filesystem: {rootdirectory: /srv/registry}
            delete: {enabled: true}
            cache: {blobdescriptor: inmemory}
            maintenance: {uploadpurging: {enabled: false}, readonly: {enabled: false}}
            redirect: {disable: true}
            tag: {concurrencylimit: 8}
        """,
    )
    assert (found.problems, found.warnings) == ((), ())
    assert found.config is not None and found.config.registry.root == Path("/srv/registry")


def test_the_storage_cache_and_registry_cache_agree_about_redis(tmp_path: Path) -> None:
    storage = "  storage: {filesystem: {}, cache: {blobdescriptor: BLOB}}\n"
    found = checked(tmp_path, storage.replace("BLOB", "redis"))
    assert located(found) == [
        "retentiond.yaml:2:53: registry.storage.cache.blobdescriptor is redis but "
        "registry.cache is inmemory: write registry.cache: redis and registry.redis_url, so "
        "that the stale keys are deleted after a GC"
    ]
    redis = "  cache: redis\n  redis_url: redis://redis:6379/0\n"
    found = checked(tmp_path, storage.replace("BLOB", "inmemory") + redis)
    assert located(found) == [
        "retentiond.yaml:2:53: registry.storage.cache.blobdescriptor is inmemory but "
        "registry.cache is redis: write registry.cache: inmemory, as the registry's storage says"
    ]
    assert registry(tmp_path, storage.replace("BLOB", "redis") + redis).cache is CacheKind.REDIS
    assert registry(tmp_path, storage.replace("BLOB", "inmemory") + "  cache: none\n").cache is (
        CacheKind.NONE
    )


# ---------------------------------------------------------------- s3


def test_every_s3_key(tmp_path: Path) -> None:
    reg = registry(
        tmp_path,
        f"""\
          storage:
            s3:
              bucket: registry
              region: eu-west-1
              regionendpoint: http://rgw:7480
              rootdirectory: /prod/eu/
              accesskey: AKIAEXAMPLE
              secretkey: {SECRET}
              sessiontoken: token
              secure: false
              skipverify: true
              v4auth: true
              forcepathstyle: true
        """,
    )
    assert reg.s3 == S3Settings(
        bucket="registry",
        region="eu-west-1",
        regionendpoint="http://rgw:7480",
        rootdirectory="prod/eu",
        accesskey="AKIAEXAMPLE",
        secretkey=SECRET,
        sessiontoken="token",
        secure=False,
        skipverify=True,
        v4auth=True,
        forcepathstyle=True,
    )
    assert reg.location is reg.s3
    assert SECRET not in repr(reg)


def test_s3_defaults_are_the_registrys(tmp_path: Path) -> None:
    reg = registry(tmp_path, "  storage: {s3: {bucket: b, region: us-west-2}}\n")
    assert reg.s3 == S3Settings(bucket="b", region="us-west-2")
    assert reg.s3.secure and reg.s3.v4auth and not reg.s3.skipverify
    assert not reg.s3.forcepathstyle
    assert reg.s3.accesskey is None and reg.s3.secretkey is None  # the AWS default chain
    # behind an endpoint the region may be left out (3.x): retentiond signs for us-east-1
    reg = registry(tmp_path, "  storage: {s3: {bucket: b, regionendpoint: 'minio:9000'}}\n")
    assert reg.s3 is not None and reg.s3.region == "us-east-1"
    assert reg.s3.endpoint_url == "https://minio:9000"
    # the driver's other name
    assert registry(tmp_path, "  storage: {s3aws: {bucket: b, region: us-east-1}}\n").s3 == (
        S3Settings(bucket="b", region="us-east-1")
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("'true'", True),
        ("'false'", False),
        ("'1'", True),
        ("'0'", False),
        ("'T'", True),
        ("'FALSE'", False),
        ("True", True),
        ("no", False),
        ("null", True),
    ],
)
def test_booleans_as_the_registry_reads_them(tmp_path: Path, written: str, expected: bool) -> None:
    """Go's strconv.ParseBool for a string, YAML 1.1's booleans for the rest (yes/no), the
    default (secure: true) for null."""
    reg = registry(tmp_path, f"  storage: {{s3: {{bucket: b, region: r, secure: {written}}}}}\n")
    assert reg.s3 is not None and reg.s3.secure is expected


def test_numbers_are_read_as_the_registry_prints_them(tmp_path: Path) -> None:
    reg = registry(
        tmp_path, "  storage: {s3: {bucket: 2024, region: r, accesskey: 123, secretkey: 456}}\n"
    )
    assert reg.s3 is not None
    assert (reg.s3.bucket, reg.s3.accesskey, reg.s3.secretkey) == ("2024", "123", "456")


def test_the_registrys_other_s3_keys_are_accepted_and_unknown_ones_are_warnings(
    tmp_path: Path,
) -> None:
    others = "".join(f"      {key}: x\n" for key in S3_IGNORED)
    found = checked(
        tmp_path,
        f"  storage:\n    s3:\n      bucket: b\n      region: r\n{others}"
        "      bukcet: typo\n      colour: blue\n",
    )
    assert found.problems == ()
    n = 6 + len(S3_IGNORED)
    assert located(found, warnings=True) == [
        f"retentiond.yaml:{n}:7: unknown key 'bukcet' in registry.storage.s3; did you mean "
        "'bucket'?; neither retentiond nor the registry reads it",
        f"retentiond.yaml:{n + 1}:7: unknown key 'colour' in registry.storage.s3; expected one "
        "of: bucket, region, regionendpoint, rootdirectory, accesskey, secretkey, sessiontoken,"
        " secure, skipverify, v4auth, forcepathstyle, secretkey_file; neither retentiond nor "
        "the registry reads it",
    ]


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        (
            "{s3: {region: r}}",
            "2:13: registry.storage.s3.bucket is required: the bucket's name",
        ),
        ("{s3: null}", "2:13: registry.storage.s3.bucket is required"),
        ("{s3: {bucket: '', region: r}}", "2:26: registry.storage.s3.bucket is required"),
        (
            "{s3: {bucket: b}}",
            "2:13: registry.storage.s3.region is required without regionendpoint (AWS): "
            "e.g. region: us-east-1",
        ),
        (
            "{s3: {bucket: b, region: r, secure: 'yes'}}",
            "2:48: registry.storage.s3.secure must be true or false, got 'yes'",
        ),
        (
            "{s3: {bucket: b, region: r, v4auth: 1}}",
            "2:48: registry.storage.s3.v4auth must be true or false, got 1",
        ),
        (
            "{s3: {bucket: [a, b], region: r}}",
            "2:26: registry.storage.s3.bucket must be a string, got a list",
        ),
        (
            "{s3: {bucket: b, region: r, v4auth: false}}",
            "2:48: registry.storage.s3.v4auth: false: AWS S3 takes only v4 signatures (the "
            "registry refuses it too); remove v4auth",
        ),
        (
            "{s3: {bucket: b, regionendpoint: 'ftp://x'}}",
            "2:45: registry.storage.s3.regionendpoint must be the endpoint's URL or host[:port],"
            " e.g. http://rgw:7480 or minio.example.com:9000; got 'ftp://x'",
        ),
        (
            "{s3: {bucket: b, regionendpoint: 'http://rgw:port'}}",
            "2:45: registry.storage.s3.regionendpoint must be the endpoint's URL",
        ),
        (
            "{s3: {bucket: b, regionendpoint: 'http://key:secret@rgw:7480'}}",
            "2:45: registry.storage.s3.regionendpoint must be the endpoint's URL or host[:port],"
            " e.g. http://rgw:7480 or minio.example.com:9000; got a URL with credentials",
        ),
        (
            "{s3: {bucket: b, region: r, secretkey: 1.5}}",
            "2:51: registry.storage.s3.secretkey must be a string, got a value that is not a "
            "string; quote it",
        ),
        (
            "{s3: [bucket]}",
            "2:17: registry.storage.s3 must be a mapping, got a list",
        ),
        (
            "{s3: {bucket: b, region: r}, filesystem: {rootdirectory: /x}}",
            "2:41: registry.storage must name exactly one storage driver, not s3, filesystem; "
            "keep the one the registry uses",
        ),
        (
            "{delete: {enabled: true}}",
            "2:12: registry.storage names no storage driver; write filesystem: {rootdirectory:"
            " /var/lib/registry} or s3: {bucket: ..., region: ...}",
        ),
        (
            "{inmemory: null}",
            "2:13: registry.storage: the inmemory driver: retentiond reads filesystem and s3 "
            "storage",
        ),
        ("azure", "2:12: registry.storage: the azure driver: retentiond reads filesystem and s3"),
        ("{gcs: {bucket: b}}", "2:13: registry.storage: the gcs driver: retentiond reads"),
        (
            "{filesytem: {rootdirectory: /x}}",
            "2:13: unknown key 'filesytem' in registry.storage; did you mean 'filesystem'?; "
            "retentiond reads filesystem and s3 storage",
        ),
        ("5", "2:12: registry.storage must be a mapping, e.g. s3: {bucket: ...}, got 5"),
        (
            "{filesystem: {rootdirectory: ''}}",
            "2:41: registry.storage.filesystem.rootdirectory must not be empty",
        ),
    ],
)
def test_storage_problems_are_located(tmp_path: Path, storage: str, expected: str) -> None:
    found = checked(tmp_path, f"  storage: {storage}\n")
    assert found.config is None
    messages = located(found)
    assert any(m.startswith(f"retentiond.yaml:{expected}") for m in messages), messages
    assert len(messages) == (2 if storage == "{s3: null}" else 1), messages  # + region


def test_root_and_storage_together_is_a_problem(tmp_path: Path) -> None:
    found = checked(
        tmp_path, "  root: /srv/registry\n  storage: {filesystem: {rootdirectory: /srv/r}}\n"
    )
    assert located(found) == [
        "retentiond.yaml:2:3: registry.root and registry.storage both say where the storage is:"
        " keep registry.storage and remove registry.root (its shorthand for storage: "
        "{filesystem: {rootdirectory: ...}})"
    ]


# ---------------------------------------------------------------- credentials


def test_secretkey_file(tmp_path: Path) -> None:
    write(tmp_path / "secrets/s3.secret", f"{SECRET}\n")
    reg = registry(
        tmp_path,
        "  storage:\n    s3:\n      bucket: b\n      region: r\n      accesskey: AK\n"
        "      secretkey_file: secrets/s3.secret\n",
    )
    assert reg.s3 is not None and (reg.s3.accesskey, reg.s3.secretkey) == ("AK", SECRET)


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (
            "accesskey: AK",
            "2:51: registry.storage.s3.accesskey without its secret key: write secretkey_file "
            "(a file holding it) or secretkey, or remove accesskey to use the AWS default chain"
            " (environment, profile, instance role)",
        ),
        (
            "accesskey: AK, secretkey: x, secretkey_file: s3.secret",
            "2:85: registry.storage.s3: secretkey and secretkey_file both given; keep "
            "secretkey_file",
        ),
        (
            "accesskey: AK, secretkey_file: missing",
            "2:71: registry.storage.s3.secretkey_file {tmp}/missing: cannot read secret key file: "
            "No such file or directory; fix the path or its permissions",
        ),
        (
            "accesskey: AK, secretkey_file: empty",
            "2:71: registry.storage.s3.secretkey_file {tmp}/empty must hold the secret key "
            "alone, on one line",
        ),
        (
            "accesskey: AK, secretkey: [x]",
            "2:66: registry.storage.s3.secretkey must be a string, got a value that is not a "
            "string",
        ),
    ],
)
def test_credential_problems(tmp_path: Path, credentials: str, expected: str) -> None:
    write(tmp_path / "s3.secret", f"{SECRET}\n")
    write(tmp_path / "empty", "\n")
    found = checked(tmp_path, f"  storage: {{s3: {{bucket: b, region: r, {credentials}}}}}\n")
    assert found.config is None
    messages = located(found)
    wanted = f"retentiond.yaml:{expected}".replace("{tmp}", str(tmp_path))
    assert messages == [wanted] or (messages[0].startswith(wanted) and len(messages) == 1)
    assert all(SECRET not in m for m in messages)


def test_a_secret_key_without_accesskey_is_a_warning(tmp_path: Path) -> None:
    found = checked(tmp_path, f"  storage: {{s3: {{bucket: b, region: r, secretkey: {SECRET}}}}}\n")
    assert found.config is not None and found.config.registry.s3 is not None
    assert found.config.registry.s3.secretkey is None
    assert located(found, warnings=True) == [
        "retentiond.yaml:2:51: registry.storage.s3: a secret key without accesskey is ignored "
        "(the registry ignores it too); the AWS default chain gives the credentials"
    ]


# ---------------------------------------------------------------- the registry's config file

REGISTRY_2_8 = f"""\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: redis
  s3:
    accesskey: AKIAEXAMPLE
    secretkey: {SECRET}
    region: us-east-1
    regionendpoint: http://rgw:7480
    bucket: registry
    rootdirectory: /prod
    secure: "false"
    chunksize: 10485760
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
redis:
  addr: redis:6379
  password: "{REDIS_PASSWORD}"
  db: 2
  pool:
    maxidle: 16
health:
  storagedriver:
    enabled: true
"""

REGISTRY_3 = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: redis
  filesystem:
    rootdirectory: /var/lib/registry
  tag:
    concurrencylimit: 5
http:
  addr: :5000
redis:
  addrs: [redis.internal:6380]
  username: registry
  password: s3cret
  db: 0
  dialtimeout: 10ms
  pool:
    maxidle: 16
"""


def test_config_file_of_a_2_8_registry(tmp_path: Path) -> None:
    path = write(tmp_path / "registry/config.yml", REGISTRY_2_8)
    reg = registry(tmp_path, "  config_file: registry/config.yml\n")
    assert reg.config_file == path
    assert reg.s3 == S3Settings(
        bucket="registry",
        region="us-east-1",
        regionendpoint="http://rgw:7480",
        rootdirectory="prod",
        accesskey="AKIAEXAMPLE",
        secretkey=SECRET,
        secure=False,
    )
    assert reg.cache is CacheKind.REDIS
    assert reg.redis_url == "redis://:p%40ss%20word%2F1@redis:6379/2"


def test_config_file_of_a_3_registry(tmp_path: Path) -> None:
    write(tmp_path / "config.yml", REGISTRY_3)
    reg = registry(tmp_path, f"  config_file: {tmp_path}/config.yml\n")
    assert reg.s3 is None and reg.location == Path("/var/lib/registry")
    assert reg.cache is CacheKind.REDIS
    assert reg.redis_url == "redis://registry:s3cret@redis.internal:6380/0"


@pytest.mark.parametrize(
    ("storage", "cache"),
    [
        ("storage: {filesystem: {}, cache: {blobdescriptor: inmemory}}", CacheKind.INMEMORY),
        ("storage: {filesystem: {}, cache: {layerinfo: inmemory}}", CacheKind.INMEMORY),
        ("storage: {filesystem: {}}", CacheKind.NONE),
        ("storage: {filesystem: {}, cache: {blobdescriptor: other}}", CacheKind.NONE),
    ],
)
def test_config_file_cache(tmp_path: Path, storage: str, cache: CacheKind) -> None:
    write(tmp_path / "config.yml", f"{storage}\nredis: {{addr: 'unused:6379'}}\n")
    reg = registry(tmp_path, "  config_file: config.yml\n")
    assert (reg.cache, reg.redis_url) == (cache, None)


def test_redis_addr_without_port_and_tls(tmp_path: Path) -> None:
    write(
        tmp_path / "config.yml",
        "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n"
        "redis: {addrs: [redis], tls: {rootcas: [/etc/ca.pem]}}\n",
    )
    found = checked(tmp_path, "  config_file: config.yml\n")
    assert found.config is not None
    assert found.config.registry.redis_url == "rediss://redis:6379/0"
    assert located(found, warnings=True) == [
        "config.yml:2:30: redis.tls: retentiond connects with TLS, verifying the server "
        "against this machine's CAs, without a client certificate"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "storage:\n  s3:\n    region: r\n    secretkey: SECRET\n",
            "config.yml:2:3: storage.s3.bucket is required: the bucket's name",
        ),
        (
            "storage:\n  filesystem:\n    rootdirectory: data\n",
            "config.yml:3:20: storage.filesystem.rootdirectory 'data' is relative: the registry "
            "reads it against its working directory, which retentiond cannot know; write the "
            "absolute path",
        ),
        (
            "version: 0.1\nhttp: {addr: ':5000'}\n",
            "config.yml:1:1: the registry's config has no storage section, so the registry does"
            " not start; is it the file the registry reads?",
        ),
        ("- storage\n", "config.yml:1:1: the registry's config must be a mapping"),
        ("storage: {swift: {}}\n", "config.yml:1:11: storage: the swift driver: retentiond"),
        (
            "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n",
            "config.yml:1:51: storage.cache.blobdescriptor: redis needs the redis server: "
            "redis.addr (2.8) or redis.addrs (3.x), e.g. addr: redis:6379",
        ),
        (
            "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n"
            "redis: {addrs: [a:6379, b:6379]}\n",
            "config.yml:2:16: redis: retentiond cleans the cache on one redis server, not a "
            "cluster or a sentinel group; give the registry one server",
        ),
        (
            "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n"
            "redis: {addrs: [a:6379], mastername: m}\n",
            "config.yml:2:16: redis: retentiond cleans the cache on one redis server",
        ),
        (
            "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n"
            "redis: {addr: 'a:6379', addrs: [a:6379]}\n",
            "config.yml:2:32: redis: write addr (2.8) or addrs (3.x), not both",
        ),
        (
            "storage: {filesystem: {}, cache: {blobdescriptor: redis}}\n"
            "redis: {addr: 'a:6379', db: two}\n",
            "config.yml:2:29: redis.db must be a whole number, got 'two'",
        ),
        ("storage: {filesystem: {}\n", "config.yml:2:1: "),
    ],
)
def test_problems_in_the_registrys_file_point_into_it(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path / "config.yml", text)
    found = checked(tmp_path, "  config_file: config.yml\n")
    assert found.config is None
    messages = located(found)
    assert any(m.startswith(expected) for m in messages), messages
    assert all(str(tmp_path / "config.yml") == p.file for p in found.problems)
    assert all("SECRET" not in m for m in messages)


def test_a_missing_config_file_is_a_problem_with_its_path(tmp_path: Path) -> None:
    found = checked(tmp_path, "  config_file: nowhere/config.yml\n")
    assert located(found) == [
        f"retentiond.yaml:2:16: registry.config_file {tmp_path}/nowhere/config.yml: cannot "
        "read registry config file: No such file or directory; name the registry's config.yml"
        " as this machine sees it (a relative path is relative to this config file)"
    ]


@pytest.mark.parametrize(
    ("line", "how"),
    [
        ("storage: {filesystem: {rootdirectory: /x}}", "its storage section"),
        ("root: /srv/registry", "its storage section"),
        ("cache: redis", "storage.cache.blobdescriptor"),
        ("redis_url: redis://redis:6379/0", "its redis section"),
    ],
)
def test_one_source_of_truth(tmp_path: Path, line: str, how: str) -> None:
    path = write(tmp_path / "config.yml", REGISTRY_3)
    found = checked(tmp_path, f"  config_file: config.yml\n  {line}\n")
    key = line.partition(":")[0]
    assert located(found) == [
        f"retentiond.yaml:3:3: registry.{key}: with registry.config_file the registry's {path}"
        f" is the one source of truth ({how}); remove registry.{key}, or remove "
        "registry.config_file to write the storage here"
    ]


# ---------------------------------------------------------------- what check prints


def test_check_names_the_backend_and_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "registry/config.yml", REGISTRY_2_8)
    config = write(
        tmp_path / "retentiond.yaml",
        "registry: {config_file: registry/config.yml}\nruntime: {kind: none}\n",
    )
    write(tmp_path / "policies/p.yaml", "policies:\n  - {name: p, repositories: x, keep: {}}\n")
    assert run_check(config, []) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"ok: config {config}, 1 policy in 1 file",
        f"storage: s3 bucket registry at http://rgw:7480, rootdirectory /prod (from {path})",
    ]
    # check contacts what it can: the bucket of this example does not exist here, which is a
    # warning naming the endpoint (exit 0: check also runs where the store is not reachable)
    assert err.startswith("warning: cannot reach the S3 endpoint http://rgw:7480"), err
    for secret in (SECRET, REDIS_PASSWORD, "p%40ss"):
        assert secret not in out + err


def test_describe_storage() -> None:
    assert describe_storage(Path("/var/lib/registry")) == "storage: filesystem /var/lib/registry"
    aws = S3Settings(bucket="images", region="eu-central-1")
    assert describe_storage(aws) == (
        "storage: s3 bucket images in AWS region eu-central-1, credentials from the AWS "
        "default chain"
    )
    minio = S3Settings(
        bucket="b", regionendpoint="minio:9000", secure=False, accesskey="AK", secretkey=SECRET
    )
    assert describe_storage(minio, Path("/etc/registry/config.yml")) == (
        "storage: s3 bucket b at http://minio:9000 (from /etc/registry/config.yml)"
    )
