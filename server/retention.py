"""Retention: what the server deletes once it is older than the ``[retention]`` settings say (the ``retention`` job).

One place decides what expires when:

- diagnostic bundles and reply attachments: ``[retention] bundles_days`` (kept for ever by default); the blob
  is deleted with its row, and each deletion is audited (``bundle.expired``, ``attachment.expired``);
- webhook events and their finished deliveries: ``[retention] webhook_days`` (30 by default);
- session recordings: ``[sessions] recording_retention_days``, already enforced by the ``session-sweep`` job
  (server.sessions.sweep), which also deletes old relay passes: not repeated here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import webhooks
from server.audit import Actor, record
from server.blobs import BlobStore
from server.models import Attachment, Bundle
from server.settings import ServerSettings

BATCH = 200  # rows of each kind deleted per run (the next run takes the rest)


def enforce(session: Session, blobs: BlobStore, settings: ServerSettings, *, now: datetime) -> tuple[int, int]:
    """Delete what is past its retention at ``now``; return (bundles and attachments, webhook events) deleted."""
    files = 0
    if settings.retention.bundles_days is not None:
        cutoff = now - timedelta(days=settings.retention.bundles_days)
        files += _expire(session, blobs, Bundle, "bundle.expired", cutoff)
        files += _expire(session, blobs, Attachment, "attachment.expired", cutoff)
    events = webhooks.sweep_old(session, before=now - timedelta(days=settings.retention.webhook_days))
    return files, events


def _expire(session: Session, blobs: BlobStore, model: type[Bundle] | type[Attachment], action: str,
            cutoff: datetime) -> int:
    rows = list(session.scalars(select(model).where(model.created_at < cutoff).order_by(model.created_at).limit(BATCH)))
    for row in rows:
        blobs.delete(row.blob_key)
        record(session, Actor.system("retention"), action, "ticket", row.ticket.label, id=row.id, size=row.size,
               created_at=row.created_at.isoformat())
        session.delete(row)
    return len(rows)
