"""The long-lived parts of a running server (settings, database, blobs, signing and escrow keys), built once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from typing import TypeVar

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from protocol import signing
from server.blobs import BlobStore, blob_store
from server.bus import DoorbellBus, doorbell_bus
from server.doorbell import Doorbell
from server.db import CLOCK_INFO, DEFAULT_POOL_SIZE, create_db_engine, read_sessions, utcnow, write_sessions
from server.escrow import SESSION_INFO as ESCROW_INFO
from server.escrow import EscrowContext
from server.fleet.clones import FLEET_INFO
from server.keys import KeyRing
from server.webhooks import SETTINGS_INFO as WEBHOOK_SETTINGS_INFO
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
    #: The signing keys (current, retired, hand-overs), kept in files and re-read when another process rotates.
    keys: KeyRing
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
    #: Carries the doorbell's rings between server processes (PostgreSQL LISTEN/NOTIFY); None on SQLite.
    #: Started and stopped with the app (server.app's lifespan).
    bus: DoorbellBus | None = None
    #: Admission of PCs' request polls (the signature check and its nonce write): a fleet's polls take at most
    #: half the request slots, queueing here holding nothing, so engineers' requests and the looks that deliver
    #: requests never wait behind thousands of polls being admitted.
    poll_admissions: RequestSlots | None = None

    def look_every(self, fallback: float) -> float:
        """How often a waiting long poll looks in the database besides its doorbell.

        Every change rings a doorbell once committed. When this process hears
        every ring — SQLite (one server process) or the bus connected — a look is
        only a safety net for a lost notification (``[bus] safety_look_seconds``);
        otherwise (a bus that is off or away) ``fallback`` seconds, to catch other
        processes' changes.
        """
        single_process = self.engine.dialect.name == "sqlite"
        if single_process or (self.bus is not None and self.bus.up):
            return self.settings.bus.safety_look_seconds
        return fallback

    def __post_init__(self) -> None:
        if self.poll_admissions is None:
            self.poll_admissions = RequestSlots(max(1, self.request_slots.size // 2))
        if self.read_sessions is None:
            self.read_sessions = read_sessions(self.engine)
        # Every session of this runtime carries its escrow context (server.escrow), so work
        # that holds only a session (the prune job, the snapshot upload check) can open escrowed passwords.
        assert self.keys.escrow_key is not None
        self.escrow = EscrowContext(self.keys.escrow_key, self.settings.snapshots, self.blobs)
        for sessions in (self.sessions, self.read_sessions):
            sessions.kw.setdefault("info", {})[ESCROW_INFO] = self.escrow
            sessions.kw["info"][CLOCK_INFO] = self.clock  # and its clock (tests move it), for seams given only a session
            sessions.kw["info"][WEBHOOK_SETTINGS_INFO] = self.settings  # and its settings (links in webhook payloads)
            sessions.kw["info"][FLEET_INFO] = self.settings.fleet  # and the fleet settings (server.fleet.clones)

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The key the server signs with now (after a rotation, the new one)."""
        return self.keys.current

    @cached_property
    def advertise_url(self) -> str:
        """How the other server processes reach this one (``[bus] advertise_url``, else the bind address)."""
        return self.settings.resolved_advertise_url

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
    keys = KeyRing.open(settings.resolved_signing_key_file)
    runtime = ServerRuntime(
        settings, engine, write_sessions(engine), keys, blobs, clock(), clock,
        read_sessions=read_sessions(engine), request_slots=RequestSlots(settings.database_pool_size),
        password_checks=PasswordChecks(settings.password_check_threads),
    )
    runtime.bus = doorbell_bus(runtime.doorbell, settings, settings.resolved_database_url)
    return runtime
