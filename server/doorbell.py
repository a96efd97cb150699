"""In-process wake-ups for long polls: whoever changes a PC's requests rings, the waiting polls answer at once.

A ring reaches the polls of this server process only; polls also look in the
database every few seconds (``[snapshots] request_poll_seconds``), so a change
made by another replica reaches them too, a little later. Rings come from worker
threads (routes run there) and wake waiters on their event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Doorbell:
    """Named bells: :meth:`ring` wakes every waiter :meth:`listening` on that name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def ring(self, name: str) -> None:
        """Wake everyone listening on ``name`` (safe from any thread)."""
        with self._lock:
            waiters = list(self._waiters.get(name, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                pass

    @asynccontextmanager
    async def listening(self, name: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``name`` rings while the block runs; clear it before each look."""
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

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())
