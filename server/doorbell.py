"""In-process wake-ups for long polls: whoever commits a change rings its name, the waiting polls answer at once.

One class serves every long poll of the server (a PC's requests, a session's events,
grants and chat, the relay's end of a session). A poll registers before it reads,
so a ring between its read and its wait is not lost. A ring reaches the polls of
this server process only; polls also look in the database every few seconds, so a
change made by another replica reaches them too, a little later. Rings come from
worker threads (routes run there) and wake waiters on their event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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

    def waiting(self, name: str) -> int:
        """How many are listening on ``name``."""
        with self._lock:
            return len(self._waiters.get(name, ()))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())
