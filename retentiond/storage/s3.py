"""The S3 backend of the storage port (placeholder until the backend lands)."""

from __future__ import annotations

from retentiond.errors import StorageError
from retentiond.storage.port import Storage
from retentiond.storage.s3_settings import S3Settings


def open_s3_storage(settings: S3Settings) -> Storage:
    raise StorageError(f"{settings.url()}: reading S3 storage is not available in this build")
