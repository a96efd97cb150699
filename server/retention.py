"""Retention: what the server deletes once it is older than the ``[retention]`` settings say (the ``retention`` job).

One place decides what expires when:

- diagnostic bundles and reply attachments: ``[retention] bundles_days`` (kept for ever by default); the blob
  is deleted with its row, and each deletion is audited (``bundle.expired``, ``attachment.expired``);
- the server-side snapshots of PCs whose agent was revoked ``[retention] revoked_snapshots_days`` ago (kept by
  default): every object of the repository goes to the snapshot trash at once (it leaves listings and the
  quota; the ``restic-trash`` job deletes the blobs after ``[snapshots] trash_days``, so an admin who acts in
  time can still bring them back), the repository record goes (the prune leaves it alone), audited as
  ``snapshots.expired``;
- webhook events and their finished deliveries: ``[retention] webhook_days`` (30 by default);
- session recordings: ``[sessions] recording_retention_days``, already enforced by the ``session-sweep`` job
  (server.sessions.sweep), which also deletes old relay passes: not repeated here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server import webhooks
from server.audit import Actor, record
from server.blobs import BlobStore
from server.models import Agent, Attachment, Bundle, ResticObject, ResticRepository
from server.settings import ServerSettings

BATCH = 200  # rows of each kind deleted per run (the next run takes the rest)


def enforce(session: Session, blobs: BlobStore, settings: ServerSettings, *, now: datetime) -> tuple[int, int, int]:
    """Delete what is past its retention at ``now``; return how many bundles and attachments, revoked PCs'
    repositories and webhook events went."""
    files = repositories = 0
    if settings.retention.bundles_days is not None:
        cutoff = now - timedelta(days=settings.retention.bundles_days)
        files += _expire(session, blobs, Bundle, "bundle.expired", cutoff)
        files += _expire(session, blobs, Attachment, "attachment.expired", cutoff)
    if settings.retention.revoked_snapshots_days is not None:
        repositories = _expire_snapshots(session, now - timedelta(days=settings.retention.revoked_snapshots_days), now)
    events = webhooks.sweep_old(session, before=now - timedelta(days=settings.retention.webhook_days))
    return files, repositories, events


def _expire_snapshots(session: Session, cutoff: datetime, now: datetime) -> int:
    agents = list(session.scalars(select(ResticRepository.agent_id).join(Agent, Agent.id == ResticRepository.agent_id)
                                  .where(Agent.revoked_at.is_not(None), Agent.revoked_at <= cutoff).limit(BATCH)))
    for agent_id in agents:
        trashed = session.execute(update(ResticObject).where(
            ResticObject.agent_id == agent_id, ResticObject.trashed_at.is_(None)).values(trashed_at=now)).rowcount
        session.execute(delete(ResticRepository).where(ResticRepository.agent_id == agent_id))
        record(session, Actor.system("retention"), "snapshots.expired", "agent", agent_id, objects=trashed or 0)
    return len(agents)


def _expire(session: Session, blobs: BlobStore, model: type[Bundle] | type[Attachment], action: str,
            cutoff: datetime) -> int:
    rows = list(session.scalars(select(model).where(model.created_at < cutoff).order_by(model.created_at).limit(BATCH)))
    for row in rows:
        blobs.delete(row.blob_key)
        record(session, Actor.system("retention"), action, "ticket", row.ticket.label, id=row.id, size=row.size,
               created_at=row.created_at.isoformat())
        session.delete(row)
    return len(rows)
