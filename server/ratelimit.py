"""Fixed-window counters of failed attempts, kept in the database, and who a client is for them.

Counting in the database (not in process memory) means the limits hold across
server restarts and across replicas behind a load balancer.

Limits here never lock out people other than the one failing: a count that
refuses outright belongs to one client address (or one address and one
username); counts over many addresses only *slow* the clients that have
failed before (a short Retry-After), so a flood of failures cannot keep a
client without failures from its one right attempt. See docs/threat-model.md.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from protocol import times
from protocol.errors import RateLimitedError
from server.models import RateLimitWindow


class RetryAfter(RateLimitedError):
    def __init__(self, message: str, retry_after: int, hint: str | None = None):
        super().__init__(message, hint=hint or f"Wait {times.duration(retry_after)} before trying again.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Source:
    """Where an attempt comes from, as the limits count it.

    ``address`` is one IPv4 address or one IPv6 /64 (a single host gets a
    whole /64, so counting single IPv6 addresses would count nothing).
    ``network`` is the IPv6 /48 around it, a site's usual allocation, holding
    65,536 /64s an attacker could rotate through; IPv4 addresses cost real
    money each, so for IPv4 it is None and each address stands alone.
    """

    address: str
    network: str | None


def source_of(ip: str | None) -> Source:
    """The :class:`Source` of client address ``ip`` (IPv4-mapped IPv6 counts as IPv4; anything else as itself)."""
    try:
        parsed = ipaddress.ip_address((ip or "").split("%", 1)[0])
    except ValueError:
        return Source(f"other:{(ip or 'unknown')[:64]}", None)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, ipaddress.IPv4Address):
        return Source(str(parsed), None)
    return Source(str(ipaddress.ip_network(f"{parsed}/64", strict=False)),
                  str(ipaddress.ip_network(f"{parsed}/48", strict=False)))


def _current(session: Session, key: str, window_seconds: int, now: datetime) -> RateLimitWindow | None:
    row = session.get(RateLimitWindow, key, populate_existing=True)
    if row is None:
        return None
    if now - row.window_start >= timedelta(seconds=window_seconds):
        return None
    return row


def count(session: Session, key: str, window_seconds: int, *, now: datetime) -> int:
    """Failures counted for ``key`` in the window that holds ``now`` (0 once the window has passed)."""
    row = _current(session, key, window_seconds, now)
    return row.count if row is not None else 0


def seconds_left(session: Session, key: str, window_seconds: int, *, now: datetime) -> int:
    """Whole seconds until the window of ``key`` that holds ``now`` is over (at least 1)."""
    row = _current(session, key, window_seconds, now)
    if row is None:
        return 1
    return max(1, math.ceil(window_seconds - (now - row.window_start).total_seconds()))


def check(session: Session, key: str, limit: int, window_seconds: int, what: str, *, now: datetime) -> None:
    """Raise RetryAfter if ``key`` has used up its ``limit`` failures in the window that holds ``now``."""
    if count(session, key, window_seconds, now=now) >= limit:
        raise RetryAfter(f"Too many failed {what} attempts.", seconds_left(session, key, window_seconds, now=now))


def hit(session: Session, key: str, window_seconds: int, *, now: datetime) -> int:
    """Count one failure (or an attempt not yet known to succeed) for ``key`` at ``now``; return the window's count.

    One statement (an upsert computing the count in the database), so that
    concurrent requests never lose a count, and on SQLite it takes the write
    lock: checks made on the returned count are made with every earlier count in.
    """
    table = RateLimitWindow.__table__
    cutoff = now - timedelta(seconds=window_seconds)
    expired = table.c.window_start <= cutoff
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect]
    statement = insert(table).values(key=key, window_start=now, count=1)
    statement = statement.on_conflict_do_update(index_elements=[table.c.key], set_={
        "count": case((expired, 1), else_=table.c.count + 1),
        "window_start": case((expired, now), else_=table.c.window_start),
    }).returning(table.c.count)
    return int(session.execute(statement).scalar_one())


def give_back(session: Session, key: str, window_seconds: int, *, now: datetime) -> None:
    """Take back one count of ``key`` made by :func:`hit` for an attempt that then succeeded."""
    table = RateLimitWindow.__table__
    session.execute(update(table).where(
        table.c.key == key, table.c.count > 0, table.c.window_start > now - timedelta(seconds=window_seconds),
    ).values(count=table.c.count - 1))
