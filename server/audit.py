"""Who did what: the audit log of every change, and the per-ticket timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from server.models import Account, Agent, AuditEvent, Ticket, TimelineEvent
from server.db import utcnow


@dataclass(frozen=True)
class Actor:
    """The principal behind a change, as the audit log and the timeline name it."""

    type: str  # account | agent | system | anonymous
    id: str
    label: str
    ip: str | None = field(default=None, compare=False)

    @classmethod
    def of_account(cls, account: Account, ip: str | None = None) -> Actor:
        return cls("account", account.username, account.display_name, ip)

    @classmethod
    def of_agent(cls, agent: Agent, ip: str | None = None) -> Actor:
        return cls("agent", agent.id, f"PC {agent.hostname}", ip)

    @classmethod
    def system(cls, label: str = "server") -> Actor:
        return cls("system", label, label)

    @classmethod
    def anonymous(cls, ip: str | None) -> Actor:
        return cls("anonymous", ip or "unknown", "anonymous", ip)


def record(session: Session, actor: Actor, action: str, target_type: str, target_id: Any, **details: Any) -> AuditEvent:
    """Add an audit event to the session's transaction, so it commits with the change itself."""
    event = AuditEvent(
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        ip=actor.ip,
        details=details,
    )
    session.add(event)
    return event


def timeline(session: Session, ticket: Ticket, actor: Actor, kind: str, message: str) -> TimelineEvent:
    event = TimelineEvent(ticket=ticket, at=utcnow(), actor=actor.label, kind=kind, message=message)
    session.add(event)
    ticket.updated_at = event.at
    return event
