"""Refusals that leave a trace: the one way a failed request still writes something.

A refused login, enrollment or pairing code must be counted (rate limits) and
audited, yet nothing else the request did may be kept. A service keeps such a
trace with :func:`keep_trace` (or :func:`refusal` for the usual counters plus an
audit event) and then raises; whoever owns the session ends a failed request with
:func:`roll_back`, which rolls the request's work back and then writes the kept
traces in a transaction of their own. The request dependency
(:func:`server.api.deps.get_session`) does that for every route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from protocol.errors import HelplineError
from server import ratelimit
from server.audit import Actor, record
from server.db import is_read_only, transaction

Trace = Callable[[Session], None]
E = TypeVar("E", bound=HelplineError)

_TRACES = "helpline.traces"


def keep_trace(session: Session, write: Trace) -> None:
    """Write ``write(session)`` now, and again on its own if the request's work is rolled back.

    ``write`` must only use plain values (not rows of this session), since it may
    run after a rollback. A read session cannot write now: its traces are written
    by :func:`roll_back` alone, through the server's write sessions.
    """
    if not is_read_only(session):
        write(session)
    session.info.setdefault(_TRACES, []).append(write)


def refusal(
    session: Session, error: E, *, actor: Actor, action: str, target_type: str, target_id: Any,
    counted: Iterable[tuple[str, int]] = (), now: datetime, **details: Any,
) -> E:
    """Keep the trace of refusing with ``error`` and return ``error`` for the caller to raise.

    The trace is one failure for each (rate-limit key, window seconds) in
    ``counted`` at ``now``, and the audit event ``action`` with ``details``.
    """
    counted = tuple(counted)
    target = str(target_id)

    def write(traced: Session) -> None:
        for key, window_seconds in counted:
            ratelimit.hit(traced, key, window_seconds, now=now)
        record(traced, actor, action, target_type, target, **details)

    keep_trace(session, write)
    return error


def rate_limited(
    session: Session, error: E, *, actor: Actor, action: str, target_type: str, target_id: Any, key: str,
    window_seconds: int, now: datetime, **details: Any,
) -> E:
    """Keep the trace of refusing with ``error`` because rate-limit ``key`` is used up; return ``error``.

    Refusals are counted per key and client address under ``refused:<key>@<address>``
    in the same window, and the first of each is audited as ``action`` (with
    ``key`` and the count's name): every refused client is on record, and a
    flood of refused attempts does not write one audit event each.
    """
    target = str(target_id)
    refused_key = f"refused:{key}@{ratelimit.source_of(actor.ip).address}"[:200]

    def write(traced: Session) -> None:
        if ratelimit.hit(traced, refused_key, window_seconds, now=now) == 1:
            record(traced, actor, action, target_type, target, limit=key, counted_as=refused_key,
                   reason=error.message, **details)

    keep_trace(session, write)
    return error


def roll_back(session: Session, *, traces_to: sessionmaker[Session] | None = None) -> None:
    """End a failed request: roll back its work, then commit the traces kept for it, alone.

    The traces go through ``session`` again, or through a fresh session of
    ``traces_to`` (the server's write sessions) when the request's own session
    may only read.
    """
    traces = session.info.pop(_TRACES, [])
    session.rollback()
    if not traces:
        return
    if traces_to is None:
        for write in traces:
            write(session)
        session.commit()
        return
    with transaction(traces_to) as fresh:
        for write in traces:
            write(fresh)

