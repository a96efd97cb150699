"""Fixed-window counters of failed attempts, kept in the database.

Counting in the database (not in process memory) means the limits hold across
server restarts and across replicas behind a load balancer.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from protocol import times
from protocol.errors import RateLimitedError
from server.models import RateLimitWindow


class RetryAfter(RateLimitedError):
    def __init__(self, message: str, retry_after: int, hint: str | None = None):
        super().__init__(message, hint=hint or f"Wait {times.duration(retry_after)} before trying again.")
        self.retry_after = retry_after


def _current(session: Session, key: str, window_seconds: int, now: datetime) -> RateLimitWindow | None:
    row = session.get(RateLimitWindow, key)
    if row is None:
        return None
    if now - row.window_start >= timedelta(seconds=window_seconds):
        return None
    return row


def check(session: Session, key: str, limit: int, window_seconds: int, what: str, *, now: datetime) -> None:
    """Raise RetryAfter if ``key`` has used up its ``limit`` failures in the window that holds ``now``."""
    row = _current(session, key, window_seconds, now)
    if row is not None and row.count >= limit:
        left = window_seconds - (now - row.window_start).total_seconds()
        raise RetryAfter(f"Too many failed {what} attempts.", max(1, math.ceil(left)))


def hit(session: Session, key: str, window_seconds: int, *, now: datetime) -> int:
    """Count one failure for ``key`` at ``now``; return the count in the current window."""
    row = session.get(RateLimitWindow, key)
    if row is None:
        row = RateLimitWindow(key=key, window_start=now, count=0)
        session.add(row)
    elif now - row.window_start >= timedelta(seconds=window_seconds):
        row.window_start = now
        row.count = 0
    row.count += 1
    session.flush()
    return row.count
