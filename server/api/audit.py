"""The audit log, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from protocol.schemas import AuditEventPublic
from server.api.deps import AdminAccount, ReadSession
from server.models import AuditEvent

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="Audit events, newest first")
def list_events(
    admin: AdminAccount,
    session: ReadSession,
    action: str | None = None,
    target: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditEventPublic]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    if target:
        query = query.where(AuditEvent.target_id == target)
    return [
        AuditEventPublic(id=e.id, at=e.at, actor=f"{e.actor_type}:{e.actor_id}", action=e.action,
                         target=f"{e.target_type}:{e.target_id}", ip=e.ip, details=e.details or {})
        for e in session.scalars(query)
    ]
