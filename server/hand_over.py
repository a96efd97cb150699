"""A per-user identity hands its tickets over to the PC's agent service (protocol/hand_over.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from protocol import signing
from protocol.errors import AuthError, InvalidInputError, NotFoundError
from protocol.hand_over import HAND_OVER_WINDOW, HandOverRequest, HandOverResponse, hand_over_payload
from protocol.schemas import AgentStatus
from server import pairing
from server.agents import revoke_agent
from server.audit import Actor, record
from server.models import Agent


def hand_over(session: Session, new: Agent, body: HandOverRequest, *, now: datetime) -> HandOverResponse:
    """Link ``body.tickets`` of the old agent to ``new`` (the request's signer) and revoke the old agent.

    Refused (and nothing changed) unless the old agent exists, is active and not ``new``, signed this very
    statement naming ``new`` within the window, and is linked to every ticket named.
    """
    actor = Actor.of_agent(new)
    old = session.get(Agent, body.from_agent_id)
    if old is None or old.id == new.id or old.status != AgentStatus.ACTIVE.value:
        raise NotFoundError("There is no active agent to hand tickets over from.",
                            hint="The per-user identity may have been handed over or revoked already.")
    signed_at = body.signed_at if body.signed_at.tzinfo else body.signed_at.replace(tzinfo=now.tzinfo)
    if abs(now - signed_at) > HAND_OVER_WINDOW:
        raise AuthError("The hand-over statement is not fresh.", hint="Check this PC's clock, then try again.")
    payload = hand_over_payload(old.id, new.id, body.tickets, body.signed_at)
    if not signing.verify(old.public_key, payload, body.signature):
        record(session, actor, "agent.hand_over.refused", "agent", old.id, to=new.id, reason="bad signature")
        raise AuthError("The hand-over statement is not signed by the agent it names.")
    if len(set(body.tickets)) != len(body.tickets):
        raise InvalidInputError("A ticket is named twice in the hand-over.")
    tickets = [pairing.paired_ticket(session, old, number) for number in body.tickets]
    for ticket in tickets:
        pairing.pair_agent(session, actor, ticket, new, "hand-over", now=now)
    labels = [t.label for t in tickets]
    record(session, actor, "agent.hand_over", "agent", old.id, to=new.id, tickets=labels,
           summary=f"tickets handed over to the PC's agent service {new.id}")
    revoke_agent(session, actor, old.id, reason=f"handed over to the PC's agent service {new.id}", now=now)
    return HandOverResponse(tickets=labels, from_agent_id=old.id)
