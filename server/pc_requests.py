"""Engineer -> PC requests: made and signed here, handed to the PC's long poll, followed to their end.

An engineer (or admin) asks for a snapshot, a restore, fresh diagnostics, a
listing or a diff of a snapshot on one PC. The request is signed with the
server key (protocol.pc_requests) and queued; the PC's long poll takes it
(``delivered``), the PC reports ``waiting_consent``, ``running`` with progress,
then ``done``, ``failed`` or ``refused``. A request nobody ran before its expiry
becomes ``expired`` (the ``pc-request-sweep`` job, and any read that finds one).
Every change is audited; the ticket named by the request gets the steps that
matter in its timeline. What the PC reports (detail, result) is untrusted text.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import Audience, ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from protocol.pc_requests import (
    FINAL_STATES,
    PcRequest,
    PcRequestCreate,
    PcRequestKind,
    PcRequestPublic,
    PcRequestState,
    PcRequestUpdate,
    SignedPcRequest,
    check_params,
    sign_pc_request,
)
from protocol.schemas import AgentStatus
from protocol.untrusted import shown
from server import tickets as ticket_svc
from protocol.webhooks import WebhookKind
from server import webhooks
from server.audit import Actor, record, timeline
from server.db import session_now
from server.fleet.policies import unattended_allowed
from server.identifiers import find_agent
from server.models import Account, Agent, Pairing, PcRequestRow
from server.settings import ServerSettings

#: A request the PC said it runs, with no word from it for this long, is marked failed.
SILENT_RUNNING = timedelta(hours=6)
#: States in which a request still waits for the PC (or its user) to start it: these expire.
_NOT_STARTED = (PcRequestState.QUEUED, PcRequestState.DELIVERED, PcRequestState.WAITING_CONSENT)
#: Which state may follow which, as the PC reports them.
_NEXT: dict[PcRequestState, frozenset[PcRequestState]] = {
    PcRequestState.QUEUED: frozenset({PcRequestState.WAITING_CONSENT, PcRequestState.RUNNING, PcRequestState.FAILED,
                                      PcRequestState.REFUSED}),
    PcRequestState.DELIVERED: frozenset({PcRequestState.WAITING_CONSENT, PcRequestState.RUNNING, PcRequestState.FAILED,
                                         PcRequestState.REFUSED}),
    PcRequestState.WAITING_CONSENT: frozenset({PcRequestState.WAITING_CONSENT, PcRequestState.RUNNING,
                                               PcRequestState.FAILED, PcRequestState.REFUSED}),
    PcRequestState.RUNNING: frozenset({PcRequestState.RUNNING, PcRequestState.DONE, PcRequestState.FAILED,
                                       PcRequestState.REFUSED}),
}
_SHOWN_DETAIL = 300  # characters of a PC's detail quoted in a ticket's timeline

_WORDS = {
    PcRequestKind.SNAPSHOT: "a snapshot now",
    PcRequestKind.RESTORE: "a restore",
    PcRequestKind.DIAGNOSTICS: "fresh diagnostics",
    PcRequestKind.BROWSE: "a listing of a snapshot",
    PcRequestKind.DIFF: "a comparison of two snapshots",
}


def agent_bell(agent_id: str) -> str:
    """The doorbell a PC's long poll listens on."""
    return f"agent:{agent_id}"


def request_bell(request_id: str) -> str:
    """The doorbell an engineer following one request listens on."""
    return f"pc-request:{request_id}"


def to_public(row: PcRequestRow) -> PcRequestPublic:
    return PcRequestPublic(
        id=row.id, agent_id=row.agent_id, hostname=row.agent.hostname, kind=PcRequestKind(row.kind), params=row.params,
        ticket=row.ticket.label if row.ticket else None, requested_by=row.requested_by,
        requested_by_name=row.requested_by_name, created_at=row.created_at, expires_at=row.expires_at, nonce=row.nonce,
        unattended=row.unattended, state=PcRequestState(row.state), progress=row.progress, detail=row.detail,
        result=row.result, updated_at=row.updated_at, version=row.version,
    )


def signed(row: PcRequestRow) -> SignedPcRequest:
    return SignedPcRequest(payload=row.payload, signature=row.signature)


def _describe(row: PcRequestRow) -> str:
    """One line for the timeline: what was asked of which PC."""
    params = row.params or {}
    what = _WORDS[PcRequestKind(row.kind)]
    if row.kind == PcRequestKind.RESTORE.value:
        paths = params.get("paths") or []
        scope = "everything" if not paths else (shown(paths[0]) + (f" and {len(paths) - 1} more" if len(paths) > 1 else ""))
        source = f" from PC {params['source_agent_id'][:8]}" if params.get("source_agent_id") else ""
        at = f" as of {params['at']}" if params.get("at") else f" of snapshot {params.get('snapshot', 'latest')}"
        what = f"a restore of {scope}{at}{source} ({params.get('target', 'beside')})"
    return f"{what} on PC {shown(row.agent.hostname)}"


def _change(session: Session, row: PcRequestRow, actor: Actor, state: PcRequestState, *, now: datetime,
            detail: str | None = None, progress: float | None = None, result: dict | None = None) -> None:
    """Move ``row`` to ``state`` (audited; into the ticket's timeline when the state changed)."""
    old = PcRequestState(row.state)
    row.state = state.value
    if detail is not None:
        row.detail = detail
    if progress is not None or state in FINAL_STATES:
        row.progress = progress if progress is not None else (1.0 if state == PcRequestState.DONE else row.progress)
    if result is not None:
        row.result = result
    row.updated_at = now
    row.version += 1
    if old == state:
        return
    record(session, actor, f"pc_request.{state.value}", "pc_request", row.id, agent=row.agent_id, kind=row.kind,
           old=old.value, detail=(detail or "")[:_SHOWN_DETAIL])
    if row.kind == PcRequestKind.RESTORE.value and state in FINAL_STATES:
        restore = {"id": row.id, "outcome": state.value, "agent_id": row.agent_id, "hostname": row.agent.hostname,
                   "requested_by": row.requested_by, "source_agent_id": row.source_agent_id}
        payload = (webhooks.ticket_payload(session, row.ticket, restore=restore) if row.ticket is not None
                   else {"ticket": None, "restore": restore})
        webhooks.emit(session, WebhookKind.RESTORE_DONE, payload)
    if row.ticket is not None and state != PcRequestState.DELIVERED:
        told = f": {shown(detail[:_SHOWN_DETAIL])}" if detail else ""
        words = {
            PcRequestState.WAITING_CONSENT: f"The PC's user is asked to agree to {_describe(row)}",
            PcRequestState.RUNNING: f"Started {_describe(row)}",
            PcRequestState.DONE: f"Done: {_describe(row)}",
            PcRequestState.FAILED: f"Failed: {_describe(row)}",
            PcRequestState.REFUSED: f"Refused: {_describe(row)}",
            PcRequestState.EXPIRED: f"Expired unanswered: {_describe(row)}",
        }[state]
        timeline(session, row.ticket, actor, f"pc-request-{state.value}", f"{words}{told}.")


# --- engineers ---------------------------------------------------------------------------------


def create_request(session: Session, settings: ServerSettings, server_key, actor: Actor, account: Account,
                   agent_ref: str, body: PcRequestCreate, *, now: datetime) -> PcRequestRow:
    """Queue ``body`` for the PC ``agent_ref`` names, signed with ``server_key``; return the new row.

    Refuse (InvalidInputError, NotFoundError, ConflictError) a PC that is not
    active, a ticket that does not exist or is closed, a diagnostics request
    for a ticket the PC is not linked to, and a replacement restore naming the
    PC itself or an unknown one.
    """
    agent = find_agent(session, agent_ref)
    if agent.revoked_at is not None or agent.status != AgentStatus.ACTIVE.value:
        raise ConflictError(f"PC {shown(agent.hostname)} is {agent.status}; it takes no requests.",
                            hints={Audience.ENGINEER: "An administrator can approve a pending PC."})
    params = check_params(body.kind, body.params)
    ticket = None
    if body.ticket is not None:
        ticket = ticket_svc.get_ticket(session, body.ticket)
        ticket_svc.refuse_if_closed(session, ticket, actor, "pc_request.refused", "requests", now=now)
    if body.kind == PcRequestKind.DIAGNOSTICS:
        if ticket is None:
            raise InvalidInputError("Fresh diagnostics go to a ticket; name one.", hint="Add --ticket T-….")
        linked = session.scalar(select(Pairing.id).where(Pairing.ticket_id == ticket.id, Pairing.agent_id == agent.id))
        if linked is None:
            raise InvalidInputError(f"PC {shown(agent.hostname)} is not linked to {ticket.label}.",
                                    hint="Give a pairing code to the PC's user, or name a ticket the PC is linked to.")
    source = None
    if params.get("source_agent_id"):
        source = find_agent(session, params["source_agent_id"])
        if source.id == agent.id:
            raise InvalidInputError("A replacement restore reads another PC's snapshots; this names the PC itself.",
                                    hint="Leave out --from to restore a PC's own snapshots.")
        params["source_agent_id"] = source.id
    unattended = body.kind in (PcRequestKind.RESTORE, PcRequestKind.DIAGNOSTICS) and unattended_allowed(
        session, agent, body.kind.value, server_wide_restore=settings.snapshots.unattended_restore)
    request = PcRequest(
        id=str(uuid.uuid4()), agent_id=agent.id, kind=body.kind, params=params,
        ticket=ticket.label if ticket else None, requested_by=account.username,
        requested_by_name=account.display_name, created_at=now,
        expires_at=now + timedelta(minutes=body.expires_minutes), nonce=secrets.token_urlsafe(24),
        unattended=unattended,
    )
    sealed = sign_pc_request(server_key, request)
    row = PcRequestRow(
        id=request.id, agent=agent, kind=body.kind.value, params=params, ticket=ticket,
        source_agent_id=source.id if source else None, requested_by_id=account.id, requested_by=account.username,
        requested_by_name=account.display_name, created_at=now, expires_at=request.expires_at, nonce=request.nonce,
        unattended=unattended, payload=sealed.payload, signature=sealed.signature, state=PcRequestState.QUEUED.value,
        detail="", updated_at=now, version=1,
    )
    session.add(row)
    record(session, actor, "pc_request.created", "pc_request", row.id, agent=agent.id, kind=row.kind, params=params,
           ticket=row.ticket.label if row.ticket else None, unattended=unattended,
           expires_at=request.expires_at.isoformat())
    if ticket is not None:
        timeline(session, ticket, actor, "pc-request", f"Asked for {_describe(row)} (request {row.id[:8]}).")
    return row


def agent_requests(session: Session, agent_ref: str, *, active: bool = False, limit: int = 50) -> list[PcRequestRow]:
    """The requests of the PC ``agent_ref`` names, newest first (only those not final with ``active``)."""
    agent = find_agent(session, agent_ref)
    query = select(PcRequestRow).where(PcRequestRow.agent_id == agent.id)
    if active:
        query = query.where(PcRequestRow.state.not_in([s.value for s in FINAL_STATES]))
    return list(session.scalars(query.order_by(PcRequestRow.created_at.desc(), PcRequestRow.id).limit(limit)))


def get_request(session: Session, agent_ref: str, request_ref: str) -> PcRequestRow:
    """One request of the PC ``agent_ref`` names, by id or a unique start of it (8+ characters)."""
    agent = find_agent(session, agent_ref)
    request_ref = request_ref.strip().lower()
    row = session.get(PcRequestRow, request_ref)
    if row is None and len(request_ref) >= 4:
        rows = list(session.scalars(select(PcRequestRow).where(
            PcRequestRow.agent_id == agent.id, PcRequestRow.id.startswith(request_ref, autoescape=True)).limit(2)))
        row = rows[0] if len(rows) == 1 else None
        if len(rows) > 1:
            raise ConflictError(f"{shown(request_ref)} matches more than one request.", hint="Give more of the id.")
    if row is None or row.agent_id != agent.id:
        raise NotFoundError(f"PC {shown(agent.hostname)} has no request {shown(request_ref)}.",
                            hints={Audience.ENGINEER: f"List its requests with `helpline pc requests {agent.hostname}`."})
    return row


# --- the PC ----------------------------------------------------------------------------------


def deliver(session: Session, agent: Agent, *, now: datetime, limit: int = 20) -> list[SignedPcRequest]:
    """The queued requests of ``agent`` that have not expired, oldest first, now marked delivered."""
    rows = list(session.scalars(
        select(PcRequestRow).where(PcRequestRow.agent_id == agent.id, PcRequestRow.state == PcRequestState.QUEUED.value,
                                   PcRequestRow.expires_at > now)
        .order_by(PcRequestRow.created_at, PcRequestRow.id).limit(limit)))
    for row in rows:
        row.delivered_at = now
        _change(session, row, Actor.of_agent(agent), PcRequestState.DELIVERED, now=now)
    return [signed(row) for row in rows]


def has_queued(session: Session, agent_id: str, *, now: datetime) -> bool:
    """Whether ``agent_id`` has a queued request that has not expired (a read, for the long poll's looks)."""
    return session.scalar(select(PcRequestRow.id).where(
        PcRequestRow.agent_id == agent_id, PcRequestRow.state == PcRequestState.QUEUED.value,
        PcRequestRow.expires_at > now).limit(1)) is not None


def own_request(session: Session, agent: Agent, request_id: str) -> PcRequestRow:
    """``agent``'s own request ``request_id``; NotFoundError for anything else (another PC's is not revealed)."""
    row = session.get(PcRequestRow, request_id)
    if row is None or row.agent_id != agent.id:
        raise NotFoundError("This PC has no such request.", hint="It may have been for another PC.")
    return row


def report(session: Session, agent: Agent, request_id: str, update: PcRequestUpdate, *, now: datetime) -> PcRequestRow:
    """Record what the PC says about its request; ConflictError if it is final already (or has just expired)."""
    row = own_request(session, agent, request_id)
    actor = Actor.of_agent(agent)
    expire_if_due(session, row, now=now)
    current = PcRequestState(row.state)
    if current in FINAL_STATES:
        raise ConflictError(f"This request is {current.value} already; it takes no more reports.",
                            hint="Nothing more is needed." if current != PcRequestState.EXPIRED
                            else "It expired before it started; the engineer can ask again.")
    if update.state not in _NEXT[current]:
        raise ConflictError(f"A request that is {current.value} cannot become {update.state.value}.")
    _change(session, row, actor, update.state, now=now, detail=update.detail or None, progress=update.progress,
            result=update.result)
    return row


# --- expiry --------------------------------------------------------------------------------------


def is_due(state: str, expires_at: datetime, updated_at: datetime, now: datetime) -> bool:
    """Whether a request in ``state`` is due to expire (never started in time) or to fail (silent while running)."""
    return ((PcRequestState(state) in _NOT_STARTED and expires_at <= now)
            or (state == PcRequestState.RUNNING and updated_at + SILENT_RUNNING <= now))


def expire_if_due(session: Session, row: PcRequestRow, *, now: datetime) -> bool:
    """Mark ``row`` expired if nobody started it before its expiry (or failed if it went silent while running)."""
    state = PcRequestState(row.state)
    if state in _NOT_STARTED and row.expires_at <= now:
        _change(session, row, Actor.system(), PcRequestState.EXPIRED, now=now,
                detail="Nobody started it before it expired.")
        return True
    if state == PcRequestState.RUNNING and row.updated_at + SILENT_RUNNING <= now:
        _change(session, row, Actor.system(), PcRequestState.FAILED, now=now,
                detail="The PC stopped reporting on it.")
        return True
    return False


def sweep(session: Session, *, now: datetime, limit: int = 500) -> list[PcRequestRow]:
    """Expire every request due (see :func:`expire_if_due`); return those changed."""
    rows = session.scalars(select(PcRequestRow).where(
        ((PcRequestRow.state.in_([s.value for s in _NOT_STARTED])) & (PcRequestRow.expires_at <= now))
        | ((PcRequestRow.state == PcRequestState.RUNNING.value) & (PcRequestRow.updated_at <= now - SILENT_RUNNING)))
        .limit(limit))
    return [row for row in rows if expire_if_due(session, row, now=now)]


# --- replacement restores: what another PC's repository and escrow are released for ----------------


def replacement_request(session: Session, caller: Agent, request_id: str | None, *, now: datetime) -> PcRequestRow:
    """The replacement restore (or browse) ``request_id`` that lets ``caller`` read another PC's repository now.

    It must be ``caller``'s own request, name a source PC, and be under way
    (delivered, waiting for consent or running) and not expired. Raise
    ForbiddenError otherwise, so another PC's data is released for that
    request only, to the PC it names, while it lasts.
    """
    if not request_id:
        raise ForbiddenError("Another PC's snapshots are released for an engineer's replacement-restore request only.")
    row = session.get(PcRequestRow, request_id)
    if row is None or row.agent_id != caller.id or not row.source_agent_id:
        raise ForbiddenError("No replacement-restore request names this PC.",
                             hints={Audience.ENGINEER: "Start one with `helpline pc restore NEW-PC --from OLD-PC`."})
    if PcRequestState(row.state) not in (PcRequestState.DELIVERED, PcRequestState.WAITING_CONSENT,
                                         PcRequestState.RUNNING):
        raise ForbiddenError(f"That replacement-restore request is {row.state}; nothing is released for it any more.")
    if is_due(row.state, row.expires_at, row.updated_at, now):  # the sweep marks it; this answer already refuses
        raise ForbiddenError("That replacement-restore request has expired.")
    return row


def replacement_source(session: Session, caller: Agent, request_id: str) -> str:
    """The agent whose server-side repository (and escrowed password) ``caller`` may read for the replacement
    restore ``request_id``, now; ForbiddenError otherwise (see :func:`replacement_request`).

    The restic REST backend's credential route and the escrow release ask this
    through server.restic_rest.hooks, so both follow one decision.
    """
    row = replacement_request(session, caller, request_id, now=session_now(session))
    assert row.source_agent_id is not None  # replacement_request refuses a request that names no source
    return row.source_agent_id
