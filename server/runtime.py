"""The long-lived parts of a running server (settings, database, blobs, signing key), built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from protocol import signing
from server.blobs import BlobStore, blob_store
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
    #: Where services and dependencies take the time from (an aware UTC datetime); tests set their own.
    clock: Callable[[], datetime] = field(default=utcnow)

    @property
    def public_key(self) -> str:
        return signing.public_key_b64(self.signing_key)


def build_runtime(settings: ServerSettings, *, clock: Callable[[], datetime] = utcnow) -> ServerRuntime:
    """Open the database, the blob store and the signing key (created on first start); tell time by ``clock``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_db_engine(settings.resolved_database_url)
    blobs = blob_store(settings.blobs)
    key = signing.load_or_create_private_key(settings.resolved_signing_key_file)
    return ServerRuntime(settings, engine, session_factory(engine), key, blobs, clock(), clock)
