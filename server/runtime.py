"""The long-lived parts of a running server (settings, database, blobs, signing and escrow keys), built once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from protocol import signing
from server.blobs import BlobStore, blob_store
from server.doorbell import Doorbell
from server.db import CLOCK_INFO, DEFAULT_POOL_SIZE, create_db_engine, read_sessions, utcnow, write_sessions
from server.escrow import SESSION_INFO as ESCROW_INFO
from server.escrow import EscrowKey, EscrowContext
from server.settings import ServerSettings

T = TypeVar("T")


class RequestSlots:
    """Admission for request sessions: at most ``size`` at once, the rest wait without a thread.

    ``size`` is the pool size, so a request that holds a slot always finds a
    connection, and one waiting for a slot holds neither a connection nor a
    worker thread. That breaks the cycle of requests holding connections while
    they wait for threads held by requests waiting for connections.
    """

    def __init__(self, size: int):
        self.size = size
        self._semaphore: anyio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:  # made on first use, inside the server's event loop
            self._semaphore = anyio.Semaphore(self.size)
        async with self._semaphore:
            yield


class PasswordChecks:
    """Where password hashing runs: at most ``size`` at once, on worker threads, holding nothing else.

    Hashing is slow on purpose; bounding it keeps CPUs for other requests during
    a flood of failed logins, and the waiting checks hold no database connection
    or request slot (server.api.auth runs them between its database phases).
    """

    def __init__(self, size: int):
        self.size = size
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, check: Callable[..., T], *args: object) -> T:
        """``check(*args)`` on a worker thread, once one of the ``size`` places is free."""
        if self._limiter is None:  # made on first use, inside the server's event loop
            self._limiter = anyio.CapacityLimiter(self.size)
        return await anyio.to_thread.run_sync(check, *args, limiter=self._limiter)


@dataclass
class ServerRuntime:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]  # write sessions (see server.db)
    signing_key: Ed25519PrivateKey
    blobs: BlobStore
    started_at: datetime
    #: Where services and dependencies take the time from (an aware UTC datetime); tests set their own.
    clock: Callable[[], datetime] = field(default=utcnow)
    read_sessions: sessionmaker[Session] | None = None
    request_slots: RequestSlots = field(default_factory=lambda: RequestSlots(DEFAULT_POOL_SIZE))
    password_checks: PasswordChecks = field(default_factory=lambda: PasswordChecks(1))
    #: The escrow key (derived from the signing key), snapshot settings and blobs, also carried by every session.
    escrow: EscrowContext = field(init=False)
    #: Wakes long polls (a PC waiting for requests, an engineer following one) when something changes.
    doorbell: Doorbell = field(default_factory=Doorbell)
    #: Admission of PCs' request polls (the signature check and its nonce write): a fleet's polls take at most
    #: half the request slots, queueing here holding nothing, so engineers' requests and the looks that deliver
    #: requests never wait behind thousands of polls being admitted.
    poll_admissions: RequestSlots | None = None

    def __post_init__(self) -> None:
        if self.poll_admissions is None:
            self.poll_admissions = RequestSlots(max(1, self.request_slots.size // 2))
        if self.read_sessions is None:
            self.read_sessions = read_sessions(self.engine)
        # Every session of this runtime carries its escrow context (server.escrow), so work
        # that holds only a session (the prune job, the snapshot upload check) can open escrowed passwords.
        self.escrow = EscrowContext(EscrowKey(self.signing_key), self.settings.snapshots, self.blobs)
        for sessions in (self.sessions, self.read_sessions):
            sessions.kw.setdefault("info", {})[ESCROW_INFO] = self.escrow
            sessions.kw["info"][CLOCK_INFO] = self.clock  # and its clock (tests move it), for seams given only a session

    @property
    def public_key(self) -> str:
        return signing.public_key_b64(self.signing_key)


def build_runtime(settings: ServerSettings, *, clock: Callable[[], datetime] = utcnow) -> ServerRuntime:
    """Open the database, the blob store and the signing key (created on first start); tell time by ``clock``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_db_engine(
        settings.resolved_database_url, pool_size=settings.database_pool_size, max_overflow=settings.database_pool_overflow
    )
    blobs = blob_store(settings.blobs)
    key = signing.load_or_create_private_key(settings.resolved_signing_key_file)
    return ServerRuntime(
        settings, engine, write_sessions(engine), key, blobs, clock(), clock,
        read_sessions=read_sessions(engine), request_slots=RequestSlots(settings.database_pool_size),
        password_checks=PasswordChecks(settings.password_check_threads),
    )
