"""Enrollment tokens of the fleet: the networks a token may be used from, who used it last, and revoking
a token together with the agents it enrolled.

Creating, listing and spending tokens is in :mod:`server.agents` (``enroll``); this module holds what
the fleet adds to them. A token's use from outside its networks is refused like a wrong token (counted
against the client's address, so guessing stays rate-limited without locking anyone else out).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.errors import Audience, AuthError, NotFoundError
from protocol.schemas import AgentStatus
from server.audit import Actor, record
from server.models import Agent, EnrollmentToken


def allowed_from(row: EnrollmentToken, ip: str | None) -> bool:
    """Whether ``ip`` may use ``row``: any address when it names no networks, else one inside them."""
    if not row.networks:
        return True
    try:
        address = ipaddress.ip_address((ip or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for text in row.networks:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            return True
    return False


def network_refusal(row: EnrollmentToken, ip: str | None) -> AuthError:
    return AuthError(f"That enrollment token may not be used from this PC's address ({ip or 'unknown'}).",
                     hint="Enroll from the network the token is for, or ask your administrator for a token for this one.")


def note_use(row: EnrollmentToken, agent: Agent) -> None:
    """Remember ``agent`` as the last one ``row`` enrolled, and ``row`` as the token that enrolled it."""
    row.last_used_by_agent_id = agent.id
    row.last_used_by_hostname = agent.hostname[:255]
    agent.enrolled_by_token_id = row.id


def enrolled_counts(session: Session, token_ids: list[int]) -> dict[int, int]:
    """How many agents each token enrolled (the token that enrolled an agent last counts it)."""
    if not token_ids:
        return {}
    rows = session.execute(select(Agent.enrolled_by_token_id, func.count()).where(Agent.enrolled_by_token_id.in_(token_ids))
                           .group_by(Agent.enrolled_by_token_id))
    return {token_id: count for token_id, count in rows}


def revoke(session: Session, actor: Actor, token_id: int, *, quarantine_agents: bool, now: datetime,
           ) -> tuple[EnrollmentToken, list[Agent]]:
    """Revoke token ``token_id`` (again is harmless) and, if asked, quarantine the live agents it enrolled.

    Quarantine (not revocation) so an admin can release the PCs that are truly the fleet's after checking
    them; each quarantine is audited. Return the token and the agents quarantined now.
    """
    row = session.get(EnrollmentToken, token_id)
    if row is None:
        raise NotFoundError(f"Enrollment token {token_id} does not exist.", hints={Audience.ADMIN: "See `helpline enroll-token list`."})
    if row.revoked_at is None:
        row.revoked_at = now
        record(session, actor, "enrollment_token.revoke", "enrollment_token", row.id, quarantine_agents=quarantine_agents)
    quarantined: list[Agent] = []
    if quarantine_agents:
        # Active agents only: a pending one acts on nothing until an admin approves it anyway.
        for agent in session.scalars(select(Agent).where(Agent.enrolled_by_token_id == row.id,
                                                         Agent.status == AgentStatus.ACTIVE.value,
                                                         Agent.revoked_at.is_(None)).order_by(Agent.created_at, Agent.id)):
            quarantine(session, actor, agent, reason=f"enrollment token {row.id} was revoked", now=now)
            quarantined.append(agent)
    return row, quarantined


def quarantine(session: Session, actor: Actor, agent: Agent, *, reason: str, now: datetime) -> None:
    """Put ``agent`` in quarantine: its requests are refused until an admin releases or retires it; audited."""
    previous = agent.status
    agent.status = AgentStatus.QUARANTINED.value
    agent.quarantined_at = now
    agent.quarantine_reason = reason[:500]
    record(session, actor, "agent.quarantine", "agent", agent.id, reason=reason, previous_status=previous,
           hostname=agent.hostname, summary=f"agent quarantined: {reason}")
