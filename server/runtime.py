"""The long-lived parts of a running server (settings, database, blobs, signing key), built once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from protocol import signing
from server.blobs import BlobStore, blob_store_from_settings
from server.db import create_db_engine, session_factory, utcnow
from server.settings import ServerSettings


@dataclass
class ServerRuntime:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    signing_key: Ed25519PrivateKey
    blobs: BlobStore
    started_at: datetime

    @property
    def public_key(self) -> str:
        return signing.public_key_b64(self.signing_key)


def build_runtime(settings: ServerSettings) -> ServerRuntime:
    """Open the database, the blob store and the signing key (created on first start)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_db_engine(settings.resolved_database_url)
    blobs = blob_store_from_settings(
        settings.blob_backend,
        root=settings.resolved_blob_dir,
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        prefix=settings.s3_prefix,
    )
    key = signing.load_or_create_private_key(settings.resolved_signing_key_file)
    return ServerRuntime(settings, engine, session_factory(engine), key, blobs, utcnow())
