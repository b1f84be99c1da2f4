"""Where a registry's storage is in an S3-compatible object store, in the registry's own words.

The fields are the keys of the registry's ``storage.s3`` section (distribution 2.8 and 3.x,
``registry/storage/driver/s3-aws``) that say where the objects are and how to reach them;
:mod:`retentiond.storage_config` reads them from retentiond's config or from the registry's
config.yml, and :mod:`retentiond.storage.s3` connects with them. The registry's keys that only
shape how it writes (``chunksize``, ``storageclass``, ``encrypt``...) are accepted there and not
kept here: retentiond writes no blob.

Keys are ``<rootdirectory>/docker/registry/v2/...`` (``rootdirectory`` without its leading and
trailing ``/``, as the driver strips them), and retentiond's quarantine is
``<rootdirectory>/retentiond-quarantine/...`` in the same bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    region: str = "us-east-1"
    #: the endpoint URL of a non-AWS store (MinIO, Ceph RGW, R2...); None: AWS for ``region``
    regionendpoint: str | None = None
    #: the key prefix of the tree, without leading or trailing ``/`` (``""``: the bucket's top)
    rootdirectory: str = ""
    #: None (with ``secretkey`` None): the AWS default chain (environment, profile, instance role)
    accesskey: str | None = None
    secretkey: str | None = field(default=None, repr=False)
    sessiontoken: str | None = field(default=None, repr=False)
    #: https (True) or http to ``regionendpoint`` when it names no scheme
    secure: bool = True
    #: skip TLS verification (the registry's ``skipverify``)
    skipverify: bool = False
    #: Signature Version 4 (True) or 2
    v4auth: bool = True
    #: path-style addressing (``https://endpoint/bucket/key``); the registry 2.8 driver uses it
    #: whenever ``regionendpoint`` is set, 3.x only with ``forcepathstyle: true``
    forcepathstyle: bool = False

    def key(self, path: str) -> str:
        """The object key of ``path``, relative to ``rootdirectory`` (``docker/registry/v2/...``
        or ``retentiond-quarantine/...``)."""
        return f"{self.rootdirectory}/{path}" if self.rootdirectory else path

    def url(self, path: str = "") -> str:
        """``s3://bucket/<key>``, for messages."""
        return (
            f"s3://{self.bucket}/{self.key(path)}"
            if path
            else f"s3://{self.bucket}/{self.rootdirectory}"
        )

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as a URL (the scheme from ``secure`` when ``regionendpoint`` has none)."""
        if self.regionendpoint is None:
            return None
        if "://" in self.regionendpoint:
            return self.regionendpoint
        return f"{'https' if self.secure else 'http'}://{self.regionendpoint}"
