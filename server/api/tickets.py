"""Tickets for engineers: create, list, show, update, add notes, issue pairing codes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import case, select

from protocol.schemas import (
    NoteCreate,
    PairingCodeCreated,
    TicketCreate,
    TicketDetail,
    TicketPublic,
    TicketSort,
    TicketStatus,
    TicketUpdate,
)
from server import replies
from server import tickets as svc
from server.accounts import get_account
from server.api.deps import AccountActor, CurrentAccount, DbSession, Now, ReadSession, State, WriteSession
from server.audit import record
from server.pairing import create_pairing_code
from server.models import Account, Ticket
from server.uploads import bundle_public, ticket_bundles

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])


@router.post("", status_code=201, summary="Open a ticket")
def create(body: TicketCreate, account: CurrentAccount, session: DbSession, state: State, actor: AccountActor, now: Now) -> TicketDetail:
    assignee = get_account(session, body.assignee) if body.assignee else None
    ticket = svc.create_ticket(
        session, state.settings, actor, title=body.title, description=body.description, requester=body.requester,
        priority=body.priority, channel=body.channel, assignee=assignee, now=now,
    )
    return svc.to_detail(ticket)


@router.get("", summary="List tickets, newest first or by when their first response is due")
def list_tickets(
    account: CurrentAccount,
    session: ReadSession,
    now: Now,
    status: Annotated[list[TicketStatus] | None, Query()] = None,
    assignee: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    closed: Annotated[bool, Query(description="Include closed tickets (also when --status names closed).")] = False,
    overdue: Annotated[bool, Query(description="Only tickets whose promised first response has passed unanswered.")] = False,
    due_before: Annotated[datetime | None, Query(description="Only unanswered open tickets due before this time.")] = None,
    sort: Annotated[TicketSort, Query(description="newest first, or due: the soonest unanswered first response first.")] = TicketSort.NEWEST,
) -> list[TicketPublic]:
    query = select(Ticket).limit(limit)
    if sort is TicketSort.DUE:
        waiting = case((svc.awaiting_answer(), 0), else_=1)
        query = query.order_by(waiting, Ticket.first_response_due, Ticket.number)
    else:
        query = query.order_by(Ticket.number.desc())
    if status:
        query = query.where(Ticket.status.in_([s.value for s in status]))
    elif not closed:
        query = query.where(Ticket.status != TicketStatus.CLOSED.value)
    if overdue:
        query = query.where(svc.awaiting_answer(), Ticket.first_response_due <= now)
    if due_before is not None:
        query = query.where(svc.awaiting_answer(), Ticket.first_response_due < (due_before if due_before.tzinfo else due_before.replace(tzinfo=UTC)))
    if assignee is not None:
        if assignee in ("", "none"):
            query = query.where(Ticket.assignee_id.is_(None))
        else:
            query = query.join(Account, Ticket.assignee_id == Account.id).where(Account.username == assignee.lower())
    return [svc.to_public(t) for t in session.scalars(query)]


@router.get("/{number}", summary="Show a ticket with its timeline, PCs, bundles and attachments")
def show(number: str, account: CurrentAccount, session: ReadSession) -> TicketDetail:
    ticket = svc.get_ticket(session, number)
    return svc.to_detail(ticket, [bundle_public(b) for b in ticket_bundles(session, ticket)],
                         [replies.attachment_public(a) for a in replies.ticket_attachments(session, ticket)])


@router.patch("/{number}", summary="Change status, assignee, priority or title")
def update(number: str, body: TicketUpdate, account: CurrentAccount, session: DbSession, actor: AccountActor, now: Now) -> TicketDetail:
    ticket = svc.get_ticket(session, number)
    if body.assignee is not None:
        svc.assign(session, ticket, actor, get_account(session, body.assignee) if body.assignee else None, now=now)
    if body.priority is not None and body.priority.value != ticket.priority:
        svc.set_priority(session, ticket, actor, body.priority)
    if body.title is not None and body.title != ticket.title:
        svc.set_title(session, ticket, actor, body.title)
    if body.status is not None:
        svc.change_status(session, ticket, actor, body.status, now=now)
    return svc.to_detail(ticket)


@router.post("/{number}/notes", status_code=201, summary="Add a note to the timeline")
def add_note(number: str, body: NoteCreate, account: CurrentAccount, session: DbSession, actor: AccountActor, now: Now) -> TicketDetail:
    ticket = svc.get_ticket(session, number)
    svc.add_note(session, ticket, actor, body.message, now=now)
    return svc.to_detail(ticket)


@router.post("/{number}/pairing-codes", status_code=201, summary="Issue a one-time code that links a PC to the ticket")
def pairing_code(number: str, account: CurrentAccount, session: DbSession, state: State, actor: AccountActor, now: Now) -> PairingCodeCreated:
    ticket = svc.get_ticket(session, number)
    svc.refuse_if_closed(session, ticket, actor, "pairing_code.refused", "pairing codes", now=now)
    row, code = create_pairing_code(session, state.settings, actor, account, ticket, now=now)
    return PairingCodeCreated(code=code, ticket=ticket.label, expires_at=row.expires_at)


@router.post("/{number}/reopen", summary="Reopen a closed or resolved ticket")
def reopen(number: str, account: CurrentAccount, session: DbSession, actor: AccountActor, now: Now) -> TicketDetail:
    ticket = svc.get_ticket(session, number)
    svc.reopen(session, ticket, actor, now=now)
    return svc.to_detail(ticket)


AttachmentId = Annotated[str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]


@router.get(
    "/{number}/attachments/{attachment_id}",
    summary="Download a file a user attached to a reply",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_attachment(number: str, attachment_id: AttachmentId, account: CurrentAccount, session: WriteSession,
                        state: State, actor: AccountActor) -> StreamingResponse:
    ticket = svc.get_ticket(session, number)
    attachment = replies.get_attachment(session, ticket, attachment_id)
    record(session, actor, "attachment.download", "ticket", ticket.label, attachment_id=attachment.id)
    stream = state.blobs.open(attachment.blob_key)

    def chunks():
        with stream:
            while block := stream.read(1 << 20):
                yield block

    # The stored name is already one safe component of [A-Za-z0-9._-] and letters; the header gets ASCII only.
    ascii_name = attachment.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{ascii_name}"',
        "Content-Length": str(attachment.size),
        "X-Content-SHA256": attachment.sha256,
        "X-Content-Type-Options": "nosniff",
    })
