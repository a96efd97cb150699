"""Signed agent requests: who sent them, checked against the agent's registered key, and never twice.

An agent proves every request with its Ed25519 key (:mod:`protocol.agent_requests`);
a bearer credential alone authenticates nothing. A request is refused, audited
as ``agent.request_refused``, when it is unsigned, signed by another key, its
body is not the one signed, its date is outside the clock-skew window of the
server's clock, or its nonce was seen before. Nonces live in the database (every
server process shares them) until their request's date leaves the window; the
``nonce-sweep`` job (:mod:`server.jobs`) deletes them after that.

Verification runs in a short write transaction of its own, before the request's
session does anything, so a read-only route stays a reader and a refusal's
audit event is kept whatever the route does next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from protocol import agent_requests
from protocol.agent_requests import CLOCK_SKEW, SignedRequest
from protocol.errors import AuthError, HelplineError
from protocol.version import PROTOCOL_HEADER, parse_version
from server.agents import authenticate_agent, revoked_error
from server.audit import Actor
from server.fleet import clones
from server.fleet.clones import FLEET_INFO
from server.db import apply_touches_in, pending_touches
from server.models import Agent, AgentNonce
from server.refusals import refusal, roll_back

REFUSED = "agent.request_refused"
DEFAULT_CLONE_WINDOW_MINUTES = 30.0
_ALTERED = "Something between this PC and the server may have altered it; try another network."


def request_target(scope: Mapping) -> str:
    """The path and query of a request as the client sent them (what the agent signed)."""
    raw = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
    path = bytes(raw).split(b"?", 1)[0].decode("latin-1")
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def header_map(scope: Mapping) -> dict[str, str]:
    """A request's headers by lower-case name (the last one of a name wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def is_signed(headers: Mapping[str, str]) -> bool:
    """Whether a request claims to be signed by an agent (it may still fail verification)."""
    return bool(headers.get(agent_requests.SIGNATURE_HEADER.lower()))


def verify_agent_request(
    factory: sessionmaker[Session], headers: Mapping[str, str], *, method: str, target: str,
    content_sha256: str | None, ip: str | None, now: datetime, admit: bool = False,
) -> str:
    """Return the id of the agent that signed this request, having used up its nonce; or refuse.

    ``content_sha256`` is the digest of the body as received, or None when the
    caller reads the body later and checks it against the signed digest itself
    (:func:`refuse_altered_body`). Raise AuthError, audited, when refused.

    With ``admit``, the agent is also admitted (:func:`server.agents.authenticate_agent`:
    refused if pending) and its last-seen time, when due, is written in the
    same transaction as the nonce: one write transaction per request instead
    of two, for the fleet's long polls. A refused admission keeps its audit
    event and what the verification recorded (the nonce, a clone's quarantine).
    """
    session = factory()
    try:
        agent_id = _verify(session, dict(headers), method=method, target=target, content_sha256=content_sha256,
                           ip=ip, now=now)
        if admit:
            try:
                authenticate_agent(session, agent_id, now=now)
            except HelplineError:
                # What the verification recorded stands even though the agent may not act: the nonce is
                # used, and a clone detected just now stays quarantined (server.fleet.clones).
                session.commit()
                raise
            apply_touches_in(session, pending_touches(session))
        session.commit()
        return agent_id
    except HelplineError:
        roll_back(session)  # keeps the refusal's audit event
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _verify(session: Session, headers: dict[str, str], *, method: str, target: str, content_sha256: str | None,
            ip: str | None, now: datetime) -> str:
    shown = target[:200]

    def refuse(reason: str, message: str, hint: str, agent_id: str = "unknown", actor: Actor | None = None) -> AuthError:
        return refusal(session, AuthError(message, hint=hint), actor=actor or Actor.anonymous(ip), action=REFUSED,
                       target_type="agent", target_id=agent_id, now=now, reason=reason, method=method, path=shown)

    signed = SignedRequest.parse(headers)
    if isinstance(signed, str):
        bearer = headers.get("authorization", "").lower().startswith("bearer ")
        raise refuse(f"unsigned: {signed}", "This request is not signed with this PC's key.",
                     "A bearer credential alone no longer identifies a PC; update the Helpline agent."
                     if bearer else "Update the Helpline agent, or pair this PC again.")
    agent = session.get(Agent, signed.agent_id)
    if agent is None:
        raise refuse("unknown agent", "This PC's agent is not known to this server.",
                     "Pair this PC again with a code from your engineer.")
    actor = Actor.of_agent(agent, ip)
    if agent.revoked_at is not None:
        revoked = revoked_error(agent)
        raise refuse("revoked agent", revoked.message, revoked.hint or "Ask your administrator.", agent.id, actor)
    if not agent_requests.verify(agent.public_key, signed.payload(method, target), signed.signature):
        raise refuse("bad signature", "The request's signature does not match this PC's key.", _ALTERED, agent.id, actor)
    if content_sha256 is not None and content_sha256 != signed.content_sha256:
        raise refuse("altered body", "The request's body is not the one it was signed with.", _ALTERED, agent.id, actor)
    dated = agent_requests.parse_date(signed.date)
    assert dated is not None  # SignedRequest.parse checked it
    if abs(dated - now) > CLOCK_SKEW:
        minutes = round(abs((dated - now).total_seconds()) / 60)
        raise refuse("stale date", f"The request is dated {minutes} minutes away from the server's clock.",
                     "Set this PC's clock right (automatic time), then try again.", agent.id, actor)
    spoken = parse_version(headers.get(PROTOCOL_HEADER.lower()))
    if spoken is not None and agent.protocol_version != spoken:
        agent.protocol_version = spoken  # what `agent list` shows; checked against the minimum by the middleware
    session.add(AgentNonce(agent_id=agent.id, nonce=signed.nonce, expires_at=dated + CLOCK_SKEW))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise refuse("replayed nonce", "This request was received before: it is refused as a replay.",
                     "If you did not send it twice, something between this PC and the server is replaying it.",
                     signed.agent_id, actor) from None
    fleet = session.info.get(FLEET_INFO)
    window = timedelta(minutes=fleet.clone_window_minutes if fleet is not None else DEFAULT_CLONE_WINDOW_MINUTES)
    clones.note_instance(session, agent, signed.instance, window=window, ip=ip, now=now)
    return agent.id


def refuse_altered_body(factory: sessionmaker[Session], agent_id: str, *, method: str, target: str, ip: str | None,
                        now: datetime) -> AuthError:
    """Audit a streamed body that did not match its signed digest; return the error to raise."""
    session = factory()
    try:
        error = refusal(session, AuthError("The request's body is not the one it was signed with.", hint=_ALTERED),
                        actor=Actor("agent", agent_id, "PC", ip), action=REFUSED, target_type="agent",
                        target_id=agent_id, now=now, reason="altered body", method=method, path=target[:200])
        session.commit()
    finally:
        session.close()
    return error


def body_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sweep_nonces(session: Session, *, now: datetime) -> int:
    """Delete the nonces whose requests' dates have left the clock-skew window; return how many."""
    return session.execute(delete(AgentNonce).where(AgentNonce.expires_at < now)).rowcount or 0
