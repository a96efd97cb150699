"""The doorbell across server processes: PostgreSQL LISTEN/NOTIFY on one channel.

Every ring of this process's doorbell (rings happen after the change is
committed) is also sent as ``NOTIFY <channel>, '<origin> <name>'``; every
process holds one dedicated connection that LISTENs on the channel and rings
its own doorbell for each name it hears (skipping its own, already rung here).
The bus carries names only, never data: a woken long poll reads the database.

Two threads, each with its own connection outside the request pool: the
listener (reconnects with doubling pauses up to ``[bus] reconnect_max_seconds``
and, once back, wakes every local waiter, since rings may have been missed
while it was away) and the publisher (sends queued names in one transaction
per batch, so ringing never waits on the network). :meth:`DoorbellBus.up`
says whether the listener is connected; while it is, long polls look in the
database only every ``[bus] safety_look_seconds``.

On SQLite there is no bus: SQLite means one server process, whose doorbell
already hears every ring.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from typing import Any

from server.doorbell import Doorbell

log = logging.getLogger("helpline.server.bus")

#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; names are short, but a longer one is kept here.
MAX_PAYLOAD_BYTES = 7900
FIRST_PAUSE_SECONDS = 0.5
LISTEN_TICK_SECONDS = 0.5  # how often the listener looks up from its connection (to notice a stop)
BATCH = 500  # names sent in one transaction at most
CONNECT_TIMEOUT_SECONDS = 5


def libpq_url(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (the driver part dropped)."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class DoorbellBus:
    """Carries ``doorbell``'s rings to and from the other processes on ``channel`` of the database at ``url``."""

    def __init__(self, doorbell: Doorbell, url: str, channel: str, *, reconnect_max_seconds: float = 30.0):
        self.doorbell = doorbell
        self.url = libpq_url(url)
        self.channel = channel
        self.reconnect_max_seconds = reconnect_max_seconds
        #: Marks this process's own notifications (it has rung its own waiters already).
        self.origin = secrets.token_hex(6)
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._up = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listening: Any = None  # the listener's connection, so stop() can close it
        #: Notifications heard from other processes, and times the listener (re)connected (for tests and logs).
        self.heard = 0
        self.connects = 0

    # --- lifetime

    def start(self) -> None:
        """Start listening and publishing, and attach to the doorbell; return at once (connecting goes on behind)."""
        if self._threads:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._listen, name="helpline-bus-listen", daemon=True),
                         threading.Thread(target=self._publish, name="helpline-bus-publish", daemon=True)]
        for thread in self._threads:
            thread.start()
        self.doorbell.transport = self

    def stop(self, timeout: float = 5.0) -> None:
        """Detach from the doorbell, send what is queued, close both connections and end both threads."""
        if self.doorbell.transport is self:
            self.doorbell.transport = None
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._up.clear()

    @property
    def up(self) -> bool:
        """Whether the listener is connected (every other process's ring reaches this one)."""
        return self._up.is_set()

    def wait_up(self, timeout: float) -> bool:
        """Block until the listener is connected, at most ``timeout`` seconds; return whether it is."""
        return self._up.wait(timeout)

    # --- sending

    def publish(self, name: str) -> None:
        """Queue ``name`` for the other processes (called by the doorbell's ring; never blocks)."""
        if len(name.encode()) + len(self.origin) + 1 > MAX_PAYLOAD_BYTES:
            log.warning("a doorbell name of %d bytes is too long for NOTIFY; it rings in this process only", len(name))
            return
        self._outbox.put(name)

    def _publish(self) -> None:
        import psycopg

        connection = None
        pause = FIRST_PAUSE_SECONDS
        while True:
            first = self._outbox.get()
            names = [first]
            while len(names) < BATCH:
                try:
                    names.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            stopping = None in names
            batch = list(dict.fromkeys(n for n in names if n is not None))  # each name once per batch
            for attempt in range(2):  # a broken connection gets one fresh try; then the names are dropped
                if not batch:
                    break
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
                    with connection.transaction(), connection.cursor() as cursor:
                        cursor.executemany("SELECT pg_notify(%s, %s)",
                                           [(self.channel, f"{self.origin} {name}") for name in batch])
                    pause = FIRST_PAUSE_SECONDS
                    break
                except psycopg.Error as exc:
                    log.warning("could not send %d doorbell rings to the other server processes: %s", len(batch), exc)
                    if connection is not None:
                        connection.close()
                    connection = None
                    if attempt == 0 and self._stop.wait(pause):
                        break
                    pause = min(pause * 2, self.reconnect_max_seconds)
            if stopping:
                break
        if connection is not None:
            connection.close()

    # --- hearing

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        pause = FIRST_PAUSE_SECONDS
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                     keepalives=1, keepalives_idle=30, keepalives_interval=10,
                                     keepalives_count=3) as connection:
                    self._listening = connection
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.connects += 1
                    self._up.set()
                    pause = FIRST_PAUSE_SECONDS
                    if self.connects > 1:
                        log.info("listening for the other server processes' doorbell rings again")
                    # Whatever rang while nobody listened is unknown: every waiter looks once.
                    self.doorbell.ring_everyone_here()
                    while not self._stop.is_set():
                        for notification in connection.notifies(timeout=LISTEN_TICK_SECONDS):
                            self._heard(notification.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                was_up = self._up.is_set()
                self._up.clear()
                (log.warning if was_up else log.info)(
                    "the doorbell's listening connection to PostgreSQL is away (%s); trying again in %.1f s", exc, pause)
                if self._stop.wait(pause):
                    break
                pause = min(pause * 2, self.reconnect_max_seconds)
            finally:
                self._listening = None
        self._up.clear()

    def _heard(self, payload: str) -> None:
        origin, _, name = payload.partition(" ")
        if origin == self.origin or not name:
            return
        self.heard += 1
        self.doorbell.ring_here(name)


def doorbell_bus(doorbell: Doorbell, settings: Any, database_url: str) -> DoorbellBus | None:
    """The bus for a server on ``database_url`` with ``settings``; None on SQLite or with ``[bus] enabled = false``."""
    if not settings.bus.enabled or not database_url.startswith("postgresql"):
        return None
    return DoorbellBus(doorbell, database_url, settings.bus.channel,
                       reconnect_max_seconds=settings.bus.reconnect_max_seconds)
