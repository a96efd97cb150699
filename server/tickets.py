"""Tickets: numbering, the status workflow, first-response due times and views."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from protocol.schemas import (
    AgentTicket,
    AttachmentPublic,
    BundlePublic,
    Channel,
    Priority,
    TicketDetail,
    TicketPublic,
    TicketStatus,
    TimelineEntry,
)
from protocol.errors import Audience, ConflictError, NotFoundError
from protocol.tickets import OPEN_STATUSES, is_open, parse_ticket_ref, ticket_label
from protocol.webhooks import WebhookKind
from server import webhooks
from server.audit import Actor, record, timeline
from server.models import Account, Counter, Ticket
from server.refusals import refusal
from server.settings import ServerSettings

# Which status may follow which; anything else is refused with the allowed list.
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.NEW: frozenset({TicketStatus.OPEN, TicketStatus.WAITING, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.OPEN: frozenset({TicketStatus.WAITING, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.WAITING: frozenset({TicketStatus.OPEN, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.RESOLVED: frozenset({TicketStatus.OPEN, TicketStatus.CLOSED}),
    TicketStatus.CLOSED: frozenset(),  # only a deliberate reopen (:func:`reopen`) brings a closed ticket back
}

# A status change that is an engineer working on the ticket counts as the first response; closing does not answer.
_ANSWERING = frozenset({TicketStatus.OPEN, TicketStatus.WAITING, TicketStatus.RESOLVED})

def get_ticket(session: Session, reference: str) -> Ticket:
    """The ticket ``reference`` names (``T-1042``, ``#1042``, ``1042``…); InvalidInputError or NotFoundError."""
    number = parse_ticket_ref(reference)
    ticket = session.scalar(select(Ticket).where(Ticket.number == number))
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_label(number)} does not exist.", hint="Check the ticket number.", hints={
            Audience.USER: "See this PC's tickets with `helpline status`.",
            Audience.ENGINEER: "Check the number with `helpline ticket list`.",
        })
    return ticket


def _next_number(session: Session, start: int) -> int:
    # UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before we read it back.
    result = session.execute(update(Counter).where(Counter.name == "ticket").values(value=Counter.value + 1))
    if result.rowcount == 0:
        try:
            with session.begin_nested():
                session.add(Counter(name="ticket", value=start))
            return start
        except IntegrityError:  # a concurrent first ticket made the counter (PostgreSQL); advance it instead
            session.execute(update(Counter).where(Counter.name == "ticket").values(value=Counter.value + 1))
    return session.scalar(select(Counter.value).where(Counter.name == "ticket"))


def create_ticket(
    session: Session,
    settings: ServerSettings,
    actor: Actor,
    *,
    title: str,
    description: str = "",
    requester: str = "",
    priority: Priority = Priority.NORMAL,
    channel: Channel = Channel.ENGINEER,
    assignee: Account | None = None,
    now: datetime,
) -> Ticket:
    """Open a ticket at ``now`` with the next number; its first response is due as the response policy says."""
    minutes = settings.response_policy.minutes_for(priority.value)
    ticket = Ticket(
        number=_next_number(session, settings.ticket_number_start),
        title=title,
        description=description,
        requester=requester,
        priority=priority.value,
        status=TicketStatus.NEW.value,
        assignee=assignee,
        channel=channel.value,
        created_at=now,
        updated_at=now,
        first_response_due=now + timedelta(minutes=minutes),
    )
    session.add(ticket)
    session.flush()
    timeline(session, ticket, actor, "created", f"Ticket opened ({channel.value}, {priority.value} priority).")
    if assignee is not None:
        timeline(session, ticket, actor, "assigned", f"Assigned to {assignee.display_name}.")
    record(session, actor, "ticket.create", "ticket", ticket.label, priority=priority.value, channel=channel.value)
    webhooks.emit(session, WebhookKind.TICKET_OPENED, webhooks.ticket_payload(session, ticket))
    return ticket


def change_status(session: Session, ticket: Ticket, actor: Actor, new: TicketStatus, *, now: datetime) -> None:
    old = TicketStatus(ticket.status)
    if new == old:
        return
    if new not in TRANSITIONS[old]:
        allowed = (", ".join(sorted(s.value for s in TRANSITIONS[old]))
                   or f"none (closed tickets stay closed until reopened: `helpline ticket reopen {ticket.label}`)")
        raise ConflictError(
            f"{ticket.label} cannot go from {old.value} to {new.value}.", hint=f"From {old.value} it can go to: {allowed}."
        )
    ticket.status = new.value
    timeline(session, ticket, actor, "status", f"Status {old.value} → {new.value}.")
    record(session, actor, "ticket.status", "ticket", ticket.label, old=old.value, new=new.value)
    if new in _ANSWERING:
        mark_responded(ticket, actor, now=now)


def reopen(session: Session, ticket: Ticket, actor: Actor, *, now: datetime) -> None:
    """Bring a closed (or resolved) ticket back to open, audited; ConflictError if it is being worked on already."""
    old = TicketStatus(ticket.status)
    if old not in (TicketStatus.CLOSED, TicketStatus.RESOLVED):
        raise ConflictError(f"{ticket.label} is {old.value}, not closed.", hint="Only closed or resolved tickets are reopened.")
    ticket.status = TicketStatus.OPEN.value
    timeline(session, ticket, actor, "reopened", f"Ticket reopened ({old.value} → open).")
    record(session, actor, "ticket.reopen", "ticket", ticket.label, old=old.value, new=TicketStatus.OPEN.value)


def refuse_if_closed(session: Session, ticket: Ticket, actor: Actor, action: str, what: str, *, now: datetime,
                     hint: str | None = None) -> None:
    """Refuse ``what`` ("pairing codes") for a closed ticket, audited as ``action``; the hint (an engineer's by
    default: reopen it) should suit whoever asked."""
    if ticket.status == TicketStatus.CLOSED.value:
        hint = hint or f"Reopen it first: `helpline ticket reopen {ticket.label}`."
        raise refusal(session, ConflictError(f"{ticket.label} is closed; it takes no new {what}.", hint=hint),
                      actor=actor, action=action, target_type="ticket", target_id=ticket.label, now=now,
                      reason="ticket closed")


def assign(session: Session, ticket: Ticket, actor: Actor, assignee: Account | None, *, now: datetime | None = None) -> None:
    """Give the ticket to ``assignee`` (None: nobody); an engineer taking or handing out a ticket answers it first."""
    if (ticket.assignee_id or None) == (assignee.id if assignee else None):
        return
    ticket.assignee = assignee
    message = f"Assigned to {assignee.display_name}." if assignee else "Unassigned."
    timeline(session, ticket, actor, "assigned", message)
    record(session, actor, "ticket.assign", "ticket", ticket.label, assignee=assignee.username if assignee else None)
    if assignee is not None and now is not None:
        mark_responded(ticket, actor, now=now)


def add_note(session: Session, ticket: Ticket, actor: Actor, message: str, *, now: datetime) -> None:
    timeline(session, ticket, actor, "note", message)
    record(session, actor, "ticket.note", "ticket", ticket.label, length=len(message))
    mark_responded(ticket, actor, now=now)


def mark_responded(ticket: Ticket, actor: Actor, *, now: datetime) -> None:
    """The first time an engineer answers the user (at ``now``: a note, taking the ticket) is its first response."""
    if actor.type == "account" and ticket.first_responded_at is None:
        ticket.first_responded_at = now


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    """Whether the promised first response has passed at ``now`` with no answer on a ticket still being worked on."""
    return ticket.first_responded_at is None and is_open(ticket.status) and ticket.first_response_due <= now


def awaiting_answer():
    """SQL condition of :func:`is_overdue` without the time: no first response, status still open."""
    return and_(Ticket.first_responded_at.is_(None), Ticket.status.in_(sorted(OPEN_STATUSES)))


def _timeline(ticket: Ticket) -> list[TimelineEntry]:
    return [TimelineEntry(at=e.at, actor=e.actor, kind=e.kind, message=e.message) for e in ticket.events]


def to_public(ticket: Ticket) -> TicketPublic:
    return TicketPublic(
        number=ticket.label,
        title=ticket.title,
        description=ticket.description,
        requester=ticket.requester,
        priority=Priority(ticket.priority),
        status=TicketStatus(ticket.status),
        assignee=ticket.assignee.username if ticket.assignee else None,
        channel=Channel(ticket.channel),
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
        first_response_due=ticket.first_response_due,
        first_responded_at=ticket.first_responded_at,
    )


def to_detail(ticket: Ticket, bundles: list[BundlePublic] | None = None,
              attachments: list[AttachmentPublic] | None = None) -> TicketDetail:
    return TicketDetail(
        **to_public(ticket).model_dump(),
        agents=[f"{p.agent.hostname} ({p.agent.id})" for p in ticket.pairings],
        timeline=_timeline(ticket),
        bundles=bundles or [],
        attachments=attachments or [],
    )


def to_agent_view(ticket: Ticket) -> AgentTicket:
    """The ticket as the PC's user sees it: the assignee by display name, no internals."""
    return AgentTicket(
        number=ticket.label,
        title=ticket.title,
        status=TicketStatus(ticket.status),
        priority=Priority(ticket.priority),
        assignee=ticket.assignee.display_name if ticket.assignee else None,
        created_at=ticket.created_at,
        first_response_due=ticket.first_response_due,
        first_responded_at=ticket.first_responded_at,
        timeline=_timeline(ticket),
    )


def set_priority(session: Session, ticket: Ticket, actor: Actor, priority: Priority) -> None:
    """Change the priority; the first-response due time stays as promised at opening."""
    old = ticket.priority
    ticket.priority = priority.value
    timeline(session, ticket, actor, "priority", f"Priority {old} → {priority.value}.")
    record(session, actor, "ticket.priority", "ticket", ticket.label, old=old, new=priority.value)


def set_title(session: Session, ticket: Ticket, actor: Actor, title: str) -> None:
    old = ticket.title
    ticket.title = title
    timeline(session, ticket, actor, "title", f"Title changed to “{title}”.")
    record(session, actor, "ticket.title", "ticket", ticket.label, old=old, new=title)
