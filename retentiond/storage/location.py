"""Where a registry's storage is: a directory on this machine (``registry.root``) or a bucket
(:class:`~retentiond.storage.s3_settings.S3Settings`). Every function that reads or changes the
storage takes a :data:`Location` and opens the backend of the port
(:mod:`retentiond.storage.port`) that serves it."""

from __future__ import annotations

from pathlib import Path

from retentiond.storage.s3_settings import S3Settings

#: a filesystem rootdirectory, or a bucket and prefix
Location = Path | S3Settings


def as_location(where: Path | str | S3Settings) -> Location:
    """``where`` as a Location (a ``str`` is a filesystem path)."""
    return Path(where) if isinstance(where, str) else where


def describe(location: Location) -> str:
    """The location for messages: the directory, or ``s3://bucket/rootdirectory``."""
    return location.url() if isinstance(location, S3Settings) else str(location)


def backend_name(location: Location) -> str:
    """``filesystem`` or ``s3``: the registry's name of the storage driver."""
    return "s3" if isinstance(location, S3Settings) else "filesystem"


def location_of(location: Location, path: str) -> str:
    """Where ``path`` (relative to the rootdirectory: ``docker/registry/v2/...``,
    ``retentiond-quarantine/...``) is, for messages: a filesystem path or an ``s3://`` URL."""
    if isinstance(location, S3Settings):
        return location.url(path)
    return str(location / path) if path else str(location)
