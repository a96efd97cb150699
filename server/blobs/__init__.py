"""Blob storage for bundles, session recordings, snapshot data and other files, behind one interface.

:class:`BlobStore` (``store``) is what the server codes against; :class:`LocalBlobStore`
(``local``) keeps blobs in a directory (the single-machine default) and
:class:`S3BlobStore` (``s3``) in an S3-compatible bucket. :func:`blob_store` builds
the one that :class:`~server.settings.BlobSettings` describes. Keys and the folders
blobs are filed under are ruled in ``keys``.

Every store streams (memory stays bounded whatever the blob size), computes the
sha256 and size while writing, and replaces a blob atomically: a reader sees the
old blob or the new one, never a half-written one. Errors are
:class:`~protocol.errors.HelplineError` subclasses, never prints or exits.
"""

from __future__ import annotations

from protocol.errors import ConfigError
from server.blobs.keys import (
    ATTACHMENTS,
    BUNDLES,
    FOLDERS,
    MAX_KEY_LENGTH,
    MAX_SEGMENT_LENGTH,
    RECORDINGS,
    SNAPSHOTS,
    UPLOADS,
    key_under,
    validate_key,
    validate_prefix,
)
from server.blobs.local import LocalBlobStore
from server.blobs.s3 import S3BlobStore
from server.blobs.store import CHUNK_SIZE, MAX_RANGE_LENGTH, BlobInfo, BlobStore
from server.settings import BlobSettings

__all__ = [
    "ATTACHMENTS", "BUNDLES", "CHUNK_SIZE", "FOLDERS", "MAX_KEY_LENGTH", "MAX_RANGE_LENGTH", "MAX_SEGMENT_LENGTH", "RECORDINGS",
    "SNAPSHOTS", "UPLOADS", "BlobInfo", "BlobSettings", "BlobStore", "LocalBlobStore", "S3BlobStore", "blob_store",
    "key_under", "validate_key", "validate_prefix",
]


def blob_store(settings: BlobSettings) -> BlobStore:
    """Return the blob store ``settings`` describe: backend "local" (needs ``dir``) or "s3" (needs ``s3_bucket``).

    Raise ConfigError if what the backend needs is missing or invalid.
    """
    if settings.backend == "local":
        if settings.dir is None or not str(settings.dir):
            raise ConfigError("local blob storage needs a directory", hint="set blobs.dir")
        return LocalBlobStore(settings.dir)
    if settings.backend == "s3":
        if not settings.s3_bucket:
            raise ConfigError("S3 blob storage needs a bucket name", hint="set blobs.s3_bucket")
        return S3BlobStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key=settings.s3_access_key or None,
            secret_key=settings.s3_secret_key or None,
            prefix=settings.s3_prefix,
        )
    raise ConfigError(f"unknown blob storage backend {settings.backend!r}", hint="use 'local' or 's3'")
