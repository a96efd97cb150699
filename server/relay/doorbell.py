"""Doorbells: wake the long-polls of one session in this process as soon as something for them is committed.

A long-poll registers before it reads, so a ring between its read and its wait is
not lost. Other server processes are not rung: their long-polls read the database
again every POLL_SECONDS, the fallback when a deployment runs several processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: How often a waiting long-poll reads the database anyway (changes made by another server process).
POLL_SECONDS = 1.0


class Doorbells:
    """Per-key wake-ups for coroutines; :meth:`ring` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextmanager
    def listening(self, key: str) -> Iterator[asyncio.Event]:
        """An event set when ``key`` is rung, registered for the duration of the block."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(key, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[key]

    def ring(self, key: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: nobody is waiting there any more
                pass

    def waiting(self, key: str) -> int:
        with self._lock:
            return len(self._waiters.get(key, ()))
