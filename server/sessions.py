"""Remote sessions on the server: offers, signed grants, consent, one-time relay passes, chat, scopes, the end, recordings.

A PC's `helpline session` offers a session on a ticket it is linked to, with the
host key it made for it. An engineer asks for a grant with one of their own SSH
keys; the server signs it (protocol.grants) with its key, which the PC pinned, and
the PC asks its user. Only after the user's yes does either side get a relay pass:
one-time, short-lived, stored hashed, bound to the session, the side and the
principal that asked. The relay (server.relay) pairs the two sides and splices
bytes; the SSH session is end to end, so neither the relay nor this database holds
anything that opens a shell: a grant without the user's consent and the engineer's
private key is worth nothing.

Every function here works inside the caller's transaction and never commits.
"""

from __future__ import annotations

import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from protocol.errors import Audience, ConflictError, ForbiddenError, InvalidInputError, NotFoundError, TooLargeError
from protocol.grants import Scope, SessionGrant, SignedGrant, openssh_fingerprint, sign_grant, verification_string
from protocol.schemas import Role
from protocol.sessions import (
    OFFER_MINUTES,
    TIME_UP_REASON,
    ChatEntry,
    GrantIssued,
    GrantRequest,
    RelaySide,
    ScopeChange,
    SessionEvent,
    SessionOffer,
    SessionPublic,
    SessionState,
)
from protocol.tickets import parse_ticket_ref
from server import ratelimit
from protocol.webhooks import WebhookKind
from server import webhooks
from server.audit import Actor, record, timeline
from server.blobs.keys import RECORDINGS, key_under
from server.models import Account, Agent, Pairing, RelayToken, RemoteSession, SessionChat, SessionEventRow, Ticket
from server.pairing import paired_ticket
from server.ratelimit import RetryAfter
from server.refusals import refusal
from server.security import token_digest
from server.settings import ServerSettings
from server.tickets import refuse_if_closed

#: The consent-and-connect window of a grant: the user answers and both sides reach the relay within it.
GRANT_WINDOW = timedelta(minutes=10)
RELAY_TOKEN_PREFIX = "hlr_"
OPEN_STATES = (SessionState.WAITING, SessionState.REQUESTED, SessionState.APPROVED, SessionState.ACTIVE)
_NOT_FOUND_HINT = "List sessions with `helpline sessions`."


# --- reading ----------------------------------------------------------------------------------


def effective_state(row: RemoteSession, now: datetime) -> tuple[SessionState, str | None]:
    """The state ``row`` is in at ``now`` (an offer, a request or a session may have run out) and why it ended."""
    state = SessionState(row.state)
    if state == SessionState.WAITING and row.offer_expires_at <= now:
        return SessionState.ENDED, "the offer expired"
    if state == SessionState.REQUESTED and row.grant_expires_at is not None and row.grant_expires_at <= now:
        return SessionState.ENDED, "the user did not answer in time"
    if state == SessionState.APPROVED and row.grant_expires_at is not None and row.grant_expires_at <= now:
        return SessionState.ENDED, "nobody connected in time"
    if (state == SessionState.ACTIVE and row.started_at is not None and row.max_duration_seconds is not None
            and row.started_at + timedelta(seconds=row.max_duration_seconds) <= now):
        return SessionState.ENDED, TIME_UP_REASON
    return state, row.end_reason


def settle(session: Session, row: RemoteSession, *, now: datetime) -> RemoteSession:
    """Write down that ``row`` ran out, if it did by ``now`` (audited and on the ticket's timeline)."""
    state, reason = effective_state(row, now)
    if state == SessionState.ENDED and row.state != SessionState.ENDED.value:
        _end(session, row, Actor.system(), reason or "ended", now=now)
    return row


def settle_ran_out(session: Session, *, now: datetime, limit: int = 500) -> list[str]:
    """End the open sessions whose offer, request, grant or granted time ran out by ``now``; their ids.

    What reads a session settles it too; this sweep makes sure a session nobody
    looks at again is still audited, put on its ticket's timeline and announced
    (``session.ended``) soon after it ran out.
    """
    due = or_(
        and_(RemoteSession.state == SessionState.WAITING.value, RemoteSession.offer_expires_at <= now),
        and_(RemoteSession.state.in_((SessionState.REQUESTED.value, SessionState.APPROVED.value)),
             RemoteSession.grant_expires_at <= now),
        and_(RemoteSession.state == SessionState.ACTIVE.value, RemoteSession.started_at.is_not(None)),
    )
    ended = []
    for row in session.scalars(select(RemoteSession).where(due).order_by(RemoteSession.created_at).limit(limit)):
        if effective_state(row, now)[0] == SessionState.ENDED:  # an active one only once its time is over
            settle(session, row, now=now)
            ended.append(row.id)
    return ended


def session_public(row: RemoteSession, now: datetime) -> SessionPublic:
    state, reason = effective_state(row, now)
    return SessionPublic(
        id=row.id, ticket=row.ticket.label, agent_id=row.agent_id, hostname=row.hostname, username=row.username,
        platform=row.platform, state=state, host_key_fingerprint=row.host_key_fingerprint, created_at=row.created_at,
        last_seen_at=row.last_seen_at, offer_expires_at=row.offer_expires_at, grant_id=row.grant_id,
        engineer=row.engineer_username, scopes=sorted(row.scopes or []), grant_expires_at=row.grant_expires_at,
        max_duration_seconds=row.max_duration_seconds, started_at=row.started_at,
        ended_at=row.ended_at if row.state == SessionState.ENDED.value else (now if state == SessionState.ENDED else None),
        end_reason=reason if state == SessionState.ENDED else None, bytes_to_pc=row.bytes_to_pc,
        bytes_from_pc=row.bytes_from_pc, recording=row.recording_key is not None,
    )


def find_session(session: Session, session_id: str) -> RemoteSession:
    """The session ``session_id`` (engineers); NotFoundError otherwise."""
    row = session.get(RemoteSession, session_id) if len(session_id) <= 36 else None
    if row is None:
        raise NotFoundError(f"There is no session {session_id[:40]!r}.", hint=_NOT_FOUND_HINT)
    return row


def agent_session(session: Session, agent: Agent, session_id: str) -> RemoteSession:
    """The session ``session_id`` if ``agent`` offered it and is still linked to its ticket; NotFoundError otherwise.

    Another PC's session gets the same answer as a missing one.
    """
    row = session.get(RemoteSession, session_id) if len(session_id) <= 36 else None
    if row is not None and row.agent_id == agent.id:
        linked = session.scalar(select(Pairing.id).where(Pairing.ticket_id == row.ticket_id, Pairing.agent_id == agent.id))
        if linked is not None:
            return row
    raise NotFoundError("This PC has no such session.", hint="Start one with `helpline session`.")


def list_sessions(session: Session, *, ticket: str | None, state: SessionState | None, now: datetime,
                  limit: int = 200) -> list[SessionPublic]:
    """Sessions, newest first, optionally of one ticket and in one state (as they are at ``now``)."""
    query = select(RemoteSession).order_by(RemoteSession.created_at.desc(), RemoteSession.id)
    if ticket is not None:
        query = query.join(Ticket, Ticket.id == RemoteSession.ticket_id).where(Ticket.number == parse_ticket_ref(ticket))
    if state is not None and state != SessionState.ENDED:
        query = query.where(RemoteSession.state == state.value)
    rows = [session_public(r, now) for r in session.scalars(query.limit(limit * 4 if state else limit))]
    if state is not None:
        rows = [r for r in rows if r.state == state]
    return rows[:limit]


def events_after(session: Session, row: RemoteSession, after: int) -> list[SessionEvent]:
    query = (select(SessionEventRow).where(SessionEventRow.session_id == row.id, SessionEventRow.seq > after)
             .order_by(SessionEventRow.seq).limit(100))
    events = []
    for event in session.scalars(query):
        details = dict(event.details or {})
        grant = details.pop("grant", None)
        events.append(SessionEvent(seq=event.seq, kind=event.kind, at=event.at,
                                   grant=SignedGrant.model_validate(grant) if grant else None, **details))
    return events


def chat_after(session: Session, row: RemoteSession, after: int) -> list[ChatEntry]:
    query = (select(SessionChat).where(SessionChat.session_id == row.id, SessionChat.seq > after)
             .order_by(SessionChat.seq).limit(200))
    return [_chat_entry(c) for c in session.scalars(query)]


def _chat_entry(chat: SessionChat) -> ChatEntry:
    return ChatEntry(seq=chat.seq, at=chat.at, sender=chat.sender, name=chat.name, text=chat.text)


# --- the PC's side ----------------------------------------------------------------------------


def offer(session: Session, agent: Agent, body: SessionOffer, *, now: datetime) -> RemoteSession:
    """Record ``agent``'s offer on a ticket it is linked to; an older waiting offer of it on that ticket ends.

    NotFoundError if the PC is not linked to the ticket; ConflictError if the ticket is closed.
    """
    actor = Actor.of_agent(agent)
    ticket = paired_ticket(session, agent, body.ticket)
    refuse_if_closed(session, ticket, actor, "session.offer_refused", "sessions", now=now,
                     hint="Ask your support team to reopen it first.")
    older = session.scalars(select(RemoteSession).where(
        RemoteSession.agent_id == agent.id, RemoteSession.ticket_id == ticket.id,
        RemoteSession.state.in_((SessionState.WAITING.value, SessionState.REQUESTED.value)),
    ))
    for row in older:
        if row.state == SessionState.REQUESTED.value:
            add_event(session, row, "cancelled", now=now, reason="the PC offered a new session")
        _end(session, row, actor, "replaced by a new offer", now=now)
    row = RemoteSession(
        id=str(uuid.uuid4()), ticket=ticket, agent_id=agent.id, hostname=agent.hostname, username=body.username,
        platform=body.platform, host_key=body.host_key, host_key_fingerprint=openssh_fingerprint(body.host_key),
        state=SessionState.WAITING.value, created_at=now, last_seen_at=now,
        offer_expires_at=now + timedelta(minutes=OFFER_MINUTES), event_seq=0, scopes=[], bytes_to_pc=0, bytes_from_pc=0,
    )
    session.add(row)
    session.flush()
    record(session, actor, "session.offered", "ticket", ticket.label, session_id=row.id,
           host_key=row.host_key_fingerprint)
    timeline(session, ticket, actor, "session.offered",
             f"The PC {agent.hostname} is ready for a remote session (session {row.id[:8]}).")
    return row


def keep_alive(row: RemoteSession, *, now: datetime) -> None:
    """The PC is still there: note it, and keep a waiting offer open for another OFFER_MINUTES."""
    row.last_seen_at = now
    if row.state == SessionState.WAITING.value and row.offer_expires_at > now:
        row.offer_expires_at = now + timedelta(minutes=OFFER_MINUTES)


def add_event(session: Session, row: RemoteSession, kind: str, *, now: datetime, **details: Any) -> SessionEventRow:
    """Queue an event for the PC's long-poll (numbered in order, per session)."""
    row.event_seq = (row.event_seq or 0) + 1
    event = SessionEventRow(session_id=row.id, seq=row.event_seq, kind=kind, at=now,
                            details={k: v for k, v in details.items() if v is not None})
    session.add(event)
    return event


def answer(session: Session, agent: Agent, row: RemoteSession, grant_id: str, approved: bool, reason: str, *,
           now: datetime) -> bool:
    """Record the user's answer to the grant the server issued for ``row``; return whether it approved.

    ConflictError if the session is not waiting for an answer (answered before, ended) or the
    grant is not the current one; the request has run out when its window has passed.
    """
    actor = Actor.of_agent(agent)
    settle(session, row, now=now)
    if row.state != SessionState.REQUESTED.value:
        raise ConflictError("This session is not waiting for an answer (it was answered or has ended).")
    if not secrets.compare_digest(grant_id, row.grant_id or ""):
        raise refusal(session, ConflictError("That is not the request this session is waiting on."),
                      actor=actor, action="session.answer_refused", target_type="ticket", target_id=row.ticket.label,
                      now=now, session_id=row.id, reason="another grant")
    row.answered_at = now
    if approved:
        row.state = SessionState.APPROVED.value
        record(session, actor, "session.approved", "ticket", row.ticket.label, session_id=row.id, grant_id=row.grant_id,
               engineer=row.engineer_username, scopes=sorted(row.scopes))
        timeline(session, row.ticket, actor, "session.approved",
                 f"The user approved {row.engineer_username}'s remote session ({', '.join(sorted(row.scopes))}).")
        return True
    why = reason.strip() or "refused by the user"
    record(session, actor, "session.refused", "ticket", row.ticket.label, session_id=row.id, grant_id=row.grant_id,
           engineer=row.engineer_username, reason=why)
    timeline(session, row.ticket, actor, "session.refused",
             f"The user refused {row.engineer_username}'s remote session ({why}).")
    _end(session, row, actor, f"refused: {why}", now=now, audit=False)
    return False


def change_scopes(session: Session, agent: Agent, row: RemoteSession, body: ScopeChange, *, now: datetime) -> RemoteSession:
    """Narrow the session's scopes to what the user left (view always stays); ConflictError for a scope never granted."""
    settle(session, row, now=now)
    if row.state not in (SessionState.APPROVED.value, SessionState.ACTIVE.value):
        raise ConflictError("Scopes change only during an approved session.")
    remaining = {s.value for s in body.scopes} | {Scope.VIEW.value}
    extra = remaining - set(row.scopes)
    if extra:
        raise ConflictError(f"The user cannot add scopes the grant did not have ({', '.join(sorted(extra))}).")
    if remaining != set(row.scopes):
        taken = sorted(set(row.scopes) - remaining)
        row.scopes = sorted(remaining)
        actor = Actor.of_agent(agent)
        record(session, actor, "session.scopes_changed", "ticket", row.ticket.label, session_id=row.id,
               taken_back=taken, scopes=row.scopes)
        timeline(session, row.ticket, actor, "session.scopes_changed", f"The user took back: {', '.join(taken)}.")
    return row


def user_chat(session: Session, agent: Agent, row: RemoteSession, text: str, *, now: datetime) -> ChatEntry:
    _refuse_if_ended(session, row, now)
    name = row.username or "the user"
    return _chat_entry(_add_chat(session, row, "user", f"{name} on {row.hostname}"[:200], text, now=now))


# --- the engineer's side ----------------------------------------------------------------------


def _organisation(settings: ServerSettings) -> str:
    return settings.sessions.organisation or socket.gethostname()[:200] or "Helpline"


def issue_grant(session: Session, settings: ServerSettings, server_key: Ed25519PrivateKey, account: Account,
                actor: Actor, row: RemoteSession, body: GrantRequest, *, now: datetime) -> GrantIssued:
    """Sign a grant for ``account``'s key on a waiting session and ask the PC's user; return it with its pins.

    ConflictError if the session is not waiting (or the ticket is closed), ForbiddenError if the
    key is not one of ``account``'s own, RetryAfter when the engineer asked too often this hour.
    """
    limits = settings.sessions
    key = f"grant:{account.username}"
    if ratelimit.count(session, key, 3600, now=now) >= limits.grants_per_engineer_per_hour:
        raise RetryAfter("You asked for too many sessions this hour.", ratelimit.seconds_left(session, key, 3600, now=now))
    settle(session, row, now=now)
    if row.state != SessionState.WAITING.value:
        state = SessionState(row.state)
        raise ConflictError(f"This session is {state.value}, not waiting for an engineer.",
                            hint="The user can offer a new one with `helpline session`." if state == SessionState.ENDED
                            else "Wait until the current request is answered or runs out.")
    ssh_key = next((k for k in account.ssh_keys if k.fingerprint == body.key_fingerprint), None)
    if ssh_key is None:
        raise refusal(session, ForbiddenError("That SSH key is not one of yours.",
                                              hints={Audience.ENGINEER: "Add it with `helpline ssh-key add`, or pick one `helpline ssh-key list` shows."}),
                      actor=actor, action="session.grant_refused", target_type="ticket", target_id=row.ticket.label,
                      now=now, session_id=row.id, reason="not the engineer's key", fingerprint=body.key_fingerprint)
    ticket = row.ticket
    refuse_if_closed(session, ticket, actor, "session.grant_refused", "sessions", now=now)
    ratelimit.hit(session, key, 3600, now=now)
    scopes = frozenset(body.scopes) | {Scope.VIEW}
    grant = SessionGrant(
        grant_id=str(uuid.uuid4()), nonce=secrets.token_urlsafe(24), agent_id=row.agent_id,
        host_key_fingerprint=row.host_key_fingerprint, ticket=ticket.label, engineer_username=account.username,
        engineer_name=account.display_name[:200], organisation=_organisation(settings), engineer_key=ssh_key.public_key,
        engineer_key_fingerprint=ssh_key.fingerprint, scopes=scopes, not_before=now, expires_at=now + GRANT_WINDOW,
        max_duration_seconds=body.max_minutes * 60,
    )
    signed = sign_grant(server_key, grant)
    row.state = SessionState.REQUESTED.value
    row.grant_id = grant.grant_id
    row.grant_payload = signed.payload
    row.grant_signature = signed.signature
    row.engineer = account
    row.engineer_username = account.username
    row.scopes = sorted(s.value for s in scopes)
    row.grant_expires_at = grant.expires_at
    row.max_duration_seconds = grant.max_duration_seconds
    add_event(session, row, "request", now=now, grant=signed.model_dump(mode="json"), engineer_name=grant.engineer_name,
              engineer_username=account.username, ticket_title=ticket.title)
    record(session, actor, "session.requested", "ticket", ticket.label, session_id=row.id, grant_id=grant.grant_id,
           key=ssh_key.fingerprint, scopes=row.scopes, max_minutes=body.max_minutes)
    timeline(session, ticket, actor, "session.requested",
             f"{account.display_name} asked to connect ({', '.join(row.scopes)}, up to {body.max_minutes} min).")
    return GrantIssued(session=session_public(row, now), grant=signed, host_key=row.host_key,
                       verification=verification_string(grant, ssh_key.public_key))


def engineer_chat(session: Session, account: Account, row: RemoteSession, text: str, *, now: datetime) -> ChatEntry:
    _refuse_if_ended(session, row, now)
    chat = _add_chat(session, row, "engineer", account.display_name[:200], text, now=now)
    add_event(session, row, "chat", now=now, text=text, engineer_name=account.display_name[:200],
              engineer_username=account.username)
    return _chat_entry(chat)


def may_read_recording(settings: ServerSettings, account: Account, row: RemoteSession) -> bool:
    readable_by = settings.sessions.recordings_readable_by
    if account.role == Role.ADMIN.value:
        return True
    if readable_by == "engineers":
        return True
    if readable_by == "assignee":
        return row.ticket.assignee_id == account.id
    return False


def recording_to_download(session: Session, settings: ServerSettings, account: Account, actor: Actor,
                          row: RemoteSession, *, now: datetime) -> RemoteSession:
    """Check ``account`` may download the session's recording and it is still kept; audit the download."""
    if not may_read_recording(settings, account, row):
        who = {"assignee": "the ticket's assignee and admins", "admins": "admins",
               "engineers": "engineers"}[settings.sessions.recordings_readable_by]
        raise refusal(session, ForbiddenError(f"Only {who} may replay this session's recording."),
                      actor=actor, action="session.recording_refused", target_type="ticket",
                      target_id=row.ticket.label, now=now, session_id=row.id, reason="not allowed")
    if row.recording_key is None or row.recording_at is None:
        raise NotFoundError("This session has no recording.")
    if row.recording_at + timedelta(days=settings.sessions.recording_retention_days) <= now:
        raise NotFoundError("This session's recording is past its retention time and is no longer kept.")
    record(session, actor, "session.recording_downloaded", "ticket", row.ticket.label, session_id=row.id,
           size=row.recording_size)
    return row


# --- both sides: the end, recordings --------------------------------------------------------------


def end(session: Session, row: RemoteSession, actor: Actor, reason: str, *, bytes_to_pc: int = 0, bytes_from_pc: int = 0,
        now: datetime) -> RemoteSession:
    """End the session (idempotent: an ended one only takes larger byte counts); the PC gets an ``ended`` event."""
    row.bytes_to_pc = max(row.bytes_to_pc or 0, bytes_to_pc)
    row.bytes_from_pc = max(row.bytes_from_pc or 0, bytes_from_pc)
    settle(session, row, now=now)
    if row.state == SessionState.ENDED.value:
        return row
    _end(session, row, actor, reason, now=now)
    return row


def _end(session: Session, row: RemoteSession, actor: Actor, reason: str, *, now: datetime, audit: bool = True) -> None:
    was = row.state
    row.state = SessionState.ENDED.value
    row.ended_at = now
    row.end_reason = reason[:200]
    add_event(session, row, "ended", now=now, reason=row.end_reason)
    # Passes not yet used die with the session.
    session.execute(update(RelayToken).where(RelayToken.session_id == row.id, RelayToken.used_at.is_(None))
                    .values(used_at=now))
    if not audit:
        return
    duration = int((now - row.started_at).total_seconds()) if row.started_at else 0
    record(session, actor, "session.ended", "ticket", row.ticket.label, session_id=row.id, reason=row.end_reason,
           was=was, bytes_to_pc=row.bytes_to_pc, bytes_from_pc=row.bytes_from_pc, duration_seconds=duration)
    if was in (SessionState.APPROVED.value, SessionState.ACTIVE.value, SessionState.REQUESTED.value):
        timeline(session, row.ticket, actor, "session.ended",
                 f"The remote session ended ({row.end_reason}): {duration} s, {row.bytes_to_pc} bytes to the PC, "
                 f"{row.bytes_from_pc} from it.")
        webhooks.emit(session, WebhookKind.SESSION_ENDED, webhooks.ticket_payload(session, row.ticket, session={
            "id": row.id, "reason": row.end_reason, "was": was, "duration_seconds": duration,
            "bytes_to_pc": row.bytes_to_pc, "bytes_from_pc": row.bytes_from_pc, "engineer": row.engineer_username,
            "agent_id": row.agent_id, "hostname": row.hostname}))


def recording_key(row: RemoteSession) -> str:
    """A fresh blob key for one upload of ``row``'s recording: two racing uploads never share one."""
    return key_under(RECORDINGS, row.ticket.label, f"{row.id}-{secrets.token_hex(4)}.cast")


def check_recording(settings: ServerSettings, row: RemoteSession, declared: int | None) -> int:
    """The most bytes the recording may have; refuse one for a session never approved, attached before, or too big."""
    if row.answered_at is None or row.grant_id is None or row.end_reason is not None and row.end_reason.startswith("refused"):
        raise ConflictError("Only an approved session has a recording to attach.")
    if row.recording_key is not None:
        raise ConflictError("This session's recording is attached already.")
    cap = settings.sessions.max_recording_bytes
    if declared is not None and declared > cap:
        raise TooLargeError(f"The recording is over the server's limit of {cap} bytes.")
    return cap


def check_asciicast(data: bytes) -> None:
    """Refuse what does not start like an asciicast v2 file (a JSON header line with version 2)."""
    import json

    first = data.split(b"\n", 1)[0]
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise InvalidInputError("The recording is not an asciicast v2 file.")


def attach_recording(session: Session, agent: Agent, row: RemoteSession, key: str, size: int, sha256: str, *,
                     now: datetime) -> RemoteSession:
    if row.recording_key is not None:
        raise ConflictError("This session's recording is attached already.")
    row.recording_key, row.recording_size, row.recording_sha256, row.recording_at = key, size, sha256, now
    actor = Actor.of_agent(agent)
    record(session, actor, "session.recording_attached", "ticket", row.ticket.label, session_id=row.id, size=size,
           sha256=sha256)
    timeline(session, row.ticket, actor, "session.recording_attached",
             f"The session's recording ({size} bytes) is attached (session {row.id[:8]}).")
    return row


def _refuse_if_ended(session: Session, row: RemoteSession, now: datetime) -> None:
    settle(session, row, now=now)
    if row.state == SessionState.ENDED.value:
        raise ConflictError("This session has ended.")


def _add_chat(session: Session, row: RemoteSession, sender: str, name: str, text: str, *, now: datetime) -> SessionChat:
    last = session.scalar(select(SessionChat.seq).where(SessionChat.session_id == row.id)
                          .order_by(SessionChat.seq.desc()).limit(1)) or 0
    chat = SessionChat(session_id=row.id, seq=last + 1, at=now, sender=sender, name=name, text=text)
    session.add(chat)
    session.flush()
    return chat


# --- relay passes -----------------------------------------------------------------------------


def issue_relay_token(session: Session, settings: ServerSettings, row: RemoteSession, side: RelaySide, principal: str,
                      *, now: datetime) -> tuple[str, datetime]:
    """A one-time pass for ``side`` of an approved session, bound to ``principal``; return (token, expiry).

    ConflictError unless the session is approved or active and its grant's window is open.
    """
    settle(session, row, now=now)
    if row.state not in (SessionState.APPROVED.value, SessionState.ACTIVE.value):
        raise ConflictError(f"This session is {row.state}: the relay opens only for an approved session.")
    if row.grant_expires_at is None or row.grant_expires_at <= now:
        raise ConflictError("The grant's time to connect is over.", hint="Ask for a new session.")
    token = RELAY_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = min(now + timedelta(seconds=settings.sessions.relay_token_seconds), row.grant_expires_at)
    session.add(RelayToken(token_hash=token_digest(token), session_id=row.id, side=side.value, principal=principal,
                           grant_id=row.grant_id or "", created_at=now, expires_at=expires))
    return token, expires


@dataclass(frozen=True)
class RelayClaim:
    """A relay pass that was just used: which side of which session, for whom, and until when it may run."""

    session_id: str
    side: RelaySide
    principal: str
    ticket: str
    ends_at: datetime | None  # the grant's maximum duration from the start (None until started)
    max_duration_seconds: int


def claim_relay_token(session: Session, token: str, *, ip: str | None, now: datetime) -> RelayClaim | str:
    """Use up a relay pass; return the claim, or why it is refused (unknown, used, expired, session over).

    A known pass refused (used, expired, its session over) is audited as ``session.relay_refused``.
    """
    if not token.startswith(RELAY_TOKEN_PREFIX) or len(token) > 200:
        return "unknown token"
    row = session.get(RelayToken, token_digest(token))
    if row is None:
        return "unknown token"
    why = None
    if row.used_at is not None:
        why = "used token"
    elif row.expires_at <= now:
        why = "expired token"
    row.used_at = row.used_at or now
    remote = session.get(RemoteSession, row.session_id)
    settle(session, remote, now=now)
    if why is None and (remote.state not in (SessionState.APPROVED.value, SessionState.ACTIVE.value)
                        or remote.grant_id != row.grant_id):
        why = "session not approved"
    if why is not None:
        relay_refused(session, remote.id, row.side, row.principal, why, ip)
        return why
    ends = (remote.started_at + timedelta(seconds=remote.max_duration_seconds)
            if remote.started_at and remote.max_duration_seconds else None)
    return RelayClaim(remote.id, RelaySide(row.side), row.principal, remote.ticket.label, ends,
                      remote.max_duration_seconds or 0)


def relay_refused(session: Session, session_id: str | None, side: str, principal: str, reason: str, ip: str | None) -> None:
    """Audit a refused relay claimant (a second one for a side, a used or expired pass)."""
    remote = session.get(RemoteSession, session_id) if session_id else None
    actor = Actor("agent", principal, "PC", ip) if side == RelaySide.PC.value else Actor("account", principal, principal, ip)
    record(session, actor, "session.relay_refused", "ticket", remote.ticket.label if remote else "unknown",
           session_id=session_id, side=side, reason=reason)


def relay_started(session: Session, session_id: str, *, now: datetime) -> datetime:
    """Both sides joined: the session is active from ``now``; return when its time is up."""
    row = session.get(RemoteSession, session_id)
    if row.state == SessionState.APPROVED.value:
        row.state = SessionState.ACTIVE.value
        row.started_at = now
        actor = Actor.system("relay")
        record(session, actor, "session.started", "ticket", row.ticket.label, session_id=row.id,
               engineer=row.engineer_username)
        timeline(session, row.ticket, actor, "session.started",
                 f"{row.engineer_username} is connected to {row.hostname} through the relay.")
    started = row.started_at or now
    return started + timedelta(seconds=row.max_duration_seconds or 0)


def relay_finished(session: Session, session_id: str, *, bytes_to_pc: int, bytes_from_pc: int, reason: str,
                   now: datetime) -> None:
    """The relay closed both sides: record its byte counts and end the session if nobody ended it yet."""
    row = session.get(RemoteSession, session_id)
    if row is None:
        return
    end(session, row, Actor.system("relay"), reason, bytes_to_pc=bytes_to_pc, bytes_from_pc=bytes_from_pc, now=now)


# --- housekeeping -----------------------------------------------------------------------------


def sweep(session: Session, blobs: Any, settings: ServerSettings, *, now: datetime, limit: int = 200) -> tuple[int, int]:
    """Delete recordings past their retention and relay passes a day past their expiry; return (recordings, passes)."""
    cutoff = now - timedelta(days=settings.sessions.recording_retention_days)
    expired = list(session.scalars(select(RemoteSession).where(
        RemoteSession.recording_key.is_not(None), RemoteSession.recording_at <= cutoff).limit(limit)))
    for row in expired:
        blobs.delete(row.recording_key)
        record(session, Actor.system(), "session.recording_expired", "ticket", row.ticket.label, session_id=row.id,
               size=row.recording_size)
        row.recording_key = row.recording_size = row.recording_sha256 = None
    passes = session.execute(delete(RelayToken).where(RelayToken.expires_at < now - timedelta(days=1))).rowcount or 0
    return len(expired), passes
