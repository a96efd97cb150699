"""The trash: what the server's prune deleted, kept in the blob store for ``[snapshots] trash_days``.

A deleted object only gets ``trashed_at``: it leaves listings and the quota at
once and its blob stays, so an administrator can bring a repository back
(:func:`restore`) if a prune turned out wrong. The trash job removes the blobs
of objects trashed longer ago than ``trash_days``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.models import ResticObject, ResticRepository
from server.restic_rest.backend import Target


def empty(session: Session, trash_days: float, now: datetime, limit: int = 500) -> list[str]:
    """Forget up to ``limit`` objects trashed more than ``trash_days`` ago; return their blob keys.

    Each row goes only if it is still in the trash (an upload of the same name
    may have brought it back meanwhile); the caller deletes the blobs once
    this transaction has committed. An upload of the same name between that
    commit and the blob's removal would lose its bytes; restic encrypts every
    object with a fresh nonce, so it never makes a pruned name again, and only
    a PC replaying old bytes of its own could (losing what it replayed).
    """
    cutoff = now - timedelta(days=trash_days)
    candidates = list(session.execute(select(ResticObject.agent_id, ResticObject.type, ResticObject.name).where(
        ResticObject.trashed_at.is_not(None), ResticObject.trashed_at <= cutoff).limit(limit)))
    keys = []
    for agent_id, type_, name in candidates:
        gone = session.execute(delete(ResticObject).where(
            ResticObject.agent_id == agent_id, ResticObject.type == type_, ResticObject.name == name,
            ResticObject.trashed_at.is_not(None), ResticObject.trashed_at <= cutoff)).rowcount
        if gone:
            keys.append(Target(agent_id, type_, name).key)
    return keys


def restore(session: Session, agent_id: str, since: datetime) -> int:
    """Bring back the objects of ``agent_id``'s repository trashed at or after ``since``; return how many.

    They count against the repository's usage again (the quota may be passed:
    bringing data back is an administrator's decision).
    """
    rows = list(session.scalars(select(ResticObject).where(
        ResticObject.agent_id == agent_id, ResticObject.trashed_at.is_not(None), ResticObject.trashed_at >= since)))
    for row in rows:
        row.trashed_at = None
    total = sum(row.size for row in rows)
    if total:
        session.execute(update(ResticRepository).where(ResticRepository.agent_id == agent_id)
                        .values(bytes=ResticRepository.bytes + total))
    return len(rows)
