"""Wake-ups for long polls: whoever commits a change rings its name, the waiting polls answer at once.

One class serves every long poll of the server (a PC's requests, a session's events,
grants and chat, the relay's end of a session). A poll registers before it reads,
so a ring between its read and its wait is not lost. Rings come from worker
threads (routes run there) and wake waiters on their event loops.

A ring wakes this process's waiters at once and, when a transport is attached
(``server.bus``: PostgreSQL LISTEN/NOTIFY), is passed on to the other server
processes of the deployment, whose transports ring their own doorbells with
:meth:`Doorbell.ring_here`. Without a transport (SQLite: one server process) a
ring reaches this process only, which is all there is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Transport(Protocol):
    """Carries rings to the other server processes (never blocks the caller)."""

    def publish(self, name: str) -> None: ...


class Doorbell:
    """Named bells: :meth:`ring` wakes every waiter :meth:`listening` on that name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        #: Where rings go besides this process (set by ``server.bus`` while it runs); None: this process only.
        self.transport: Transport | None = None

    def ring(self, name: str) -> None:
        """Wake everyone listening on ``name``, here and in the other server processes (safe from any thread)."""
        self.ring_here(name)
        transport = self.transport
        if transport is not None:
            transport.publish(name)

    def ring_here(self, name: str) -> None:
        """Wake everyone listening on ``name`` in this process only (the transport's delivery)."""
        with self._lock:
            waiters = list(self._waiters.get(name, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                pass

    @contextmanager
    def listening(self, name: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``name`` rings while the block runs (inside a running event loop)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(name, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(name)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[name]

    def ring_everyone_here(self) -> None:
        """Wake every waiter of this process (after the transport was away: rings may have been missed)."""
        with self._lock:
            names = list(self._waiters)
        for name in names:
            self.ring_here(name)

    def waiting(self, name: str) -> int:
        """How many are listening on ``name``."""
        with self._lock:
            return len(self._waiters.get(name, ()))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())
