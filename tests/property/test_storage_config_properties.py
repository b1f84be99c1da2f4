"""Any ``storage`` section, in retentiond's config or in the registry's config.yml named by
``registry.config_file``, loads or raises ConfigError: never another exception, and no secret
written in it (secretkey, redis.password) is ever part of a message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from retentiond.config import load_config
from retentiond.errors import ConfigError
from retentiond.storage_config import DRIVERS, OTHER_DRIVERS, S3_FLAGS, S3_IGNORED, S3_STRINGS
from tests.property.profiles import scaled, scratch
from tests.property.test_loader_properties import SCALARS

SECRET = "SECRET-0123456789"
KEYS = st.sampled_from(
    (
        *(*DRIVERS, *OTHER_DRIVERS, *S3_STRINGS, *S3_FLAGS, *S3_IGNORED, "secretkey_file"),
        *("cache", "blobdescriptor", "delete", "addr", "addrs", "password", "db", "tls"),
    )
)
VALUES = st.recursive(
    st.one_of(SCALARS, st.sampled_from(("redis", "inmemory", "true", "F", "a:6379"))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=20,
)
S3_SECTIONS = st.fixed_dictionaries(
    {},
    optional={k: VALUES for k in (*S3_STRINGS, *S3_FLAGS, "secretkey_file", "chunksize")},
).map(lambda s3: {**s3, "secretkey": SECRET})
STORAGE = st.one_of(
    VALUES,
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.builds(lambda s3, cache: {"s3": s3, "cache": cache}, S3_SECTIONS, VALUES),
)
REDIS = st.one_of(
    VALUES, st.dictionaries(KEYS, VALUES, max_size=5).map(lambda r: {**r, "password": SECRET})
)


def load(files: dict[str, Any]) -> None:
    with scratch() as tmp:
        for name, doc in files.items():
            (Path(tmp) / name).write_text(yaml.safe_dump(doc, allow_unicode=True))
        try:
            load_config(Path(tmp) / "retentiond.yaml")
        except ConfigError as exc:
            assert SECRET not in str(exc)


@settings(max_examples=scaled(300))
@given(storage=STORAGE)
def test_any_storage_section_loads_or_raises_config_error(storage: Any) -> None:
    load({"retentiond.yaml": {"registry": {"storage": storage}, "runtime": {"kind": "none"}}})


@settings(max_examples=scaled(300))
@given(storage=STORAGE, redis=REDIS)
def test_any_registry_config_file_loads_or_raises_config_error(storage: Any, redis: Any) -> None:
    load(
        {
            "retentiond.yaml": {"registry": {"config_file": "config.yml"}},
            "config.yml": {"version": 0.1, "storage": storage, "redis": redis},
        }
    )
