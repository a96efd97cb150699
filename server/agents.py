"""Agents: enrollment with bootstrap tokens, registration and credentials.

Pairing a PC with a ticket (one-time codes, self-service tickets) is in
:mod:`server.pairing`.

An agent proves it holds the private half of the key it registers by signing
the request; the server answers with its own signature so the agent can pin
the server's key.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from protocol import signing
from protocol.schemas import AgentCredential, AgentIdentity, AgentPublic, EnrollmentTokenPublic
from protocol.errors import AuthError, NotFoundError
from server import ratelimit
from server.audit import Actor, record
from server.db import touch
from server.models import Account, Agent, EnrollmentToken
from server.refusals import refusal
from server.security import TOKEN_PREFIX_AGENT, TOKEN_PREFIX_ENROLL, keyed_digest, new_token, token_digest
from server.settings import ServerSettings


def check_proof(identity: AgentIdentity, purpose: str, secret_field: str, secret: str, signature: str | None) -> None:
    """Raise AuthError unless ``signature`` is the identity key's signature of the request."""
    payload = signing.proof_payload(purpose, secret_field, secret, identity.model_dump())
    if not signature or not signing.verify(identity.public_key, payload, signature):
        raise AuthError("The request is not signed by the key it registers.", hint="Update the Helpline agent.")


def server_credential(
    server_key: Ed25519PrivateKey, agent: Agent, credential: str | None
) -> AgentCredential:
    """Return what the agent keeps, with the server's signature binding its id to its key."""
    payload = signing.agent_binding_payload(agent.id, agent.public_key)
    return AgentCredential(
        agent_id=agent.id,
        credential=credential,
        group=agent.group,
        server_public_key=signing.public_key_b64(server_key),
        server_signature=signing.sign(server_key, payload),
    )


def _apply_identity(agent: Agent, identity: AgentIdentity, now: datetime) -> None:
    agent.hostname = identity.hostname
    agent.os = identity.os
    agent.agent_version = identity.agent_version
    if identity.machine_id:
        agent.machine_id = identity.machine_id
    agent.last_seen_at = now


def register_agent(
    session: Session, identity: AgentIdentity, *, enroll_group: str | None, now: datetime
) -> tuple[Agent, str, bool]:
    """Find or create the agent for ``identity`` and issue it a fresh credential.

    With ``enroll_group`` the agent becomes (or stays) a fleet member; a PC that
    lost its key but keeps its machine id is re-keyed rather than duplicated.
    Return (agent, credential, created).
    """
    signing.load_public_key(identity.public_key)
    agent = session.scalar(select(Agent).where(Agent.public_key == identity.public_key))
    if agent is None and enroll_group is not None and identity.machine_id:
        # Same machine id and hostname: the PC lost its key. Clones of one disk image share
        # a machine id but not a hostname, and must stay separate agents.
        agent = session.scalar(
            select(Agent).where(
                Agent.machine_id == identity.machine_id, Agent.hostname == identity.hostname, Agent.enrolled.is_(True)
            ).limit(1)
        )
        if agent is not None:
            agent.public_key = identity.public_key
    created = agent is None
    if agent is None:
        agent = Agent(id=str(uuid.uuid4()), public_key=identity.public_key, created_at=now)
        session.add(agent)
    if agent.revoked_at is not None:
        raise AuthError("This PC's agent has been revoked by an administrator.", hint="Ask your administrator.")
    _apply_identity(agent, identity, now)
    if enroll_group is not None:
        agent.enrolled = True
        agent.group = enroll_group
    credential = new_token(TOKEN_PREFIX_AGENT)
    agent.credential_hash = token_digest(credential)
    session.flush()
    return agent, credential, created


# An agent's last-seen time is written at most this often, after the request's session closes.
LAST_SEEN_INTERVAL = timedelta(seconds=60)


def authenticate_agent(session: Session, agent_id: str, *, now: datetime) -> Agent:
    """The agent ``agent_id`` whose signed request :mod:`server.agent_requests` verified (noting it was seen at
    ``now``); AuthError if it is gone or revoked."""
    agent = session.get(Agent, agent_id)
    if agent is None or agent.revoked_at is not None:
        raise AuthError("This PC's agent is not valid here.", hint="Enroll again or pair with a new code.")
    touch(session, Agent.last_seen_at, agent.id, agent.last_seen_at, LAST_SEEN_INTERVAL, now=now)
    return agent


# --- enrollment tokens --------------------------------------------------------


def create_enrollment_token(
    session: Session, settings: ServerSettings, actor: Actor, creator: Account, *, group: str,
    expires_in_hours: float, max_uses: int, note: str, now: datetime,
) -> tuple[EnrollmentToken, str]:
    """Make a bootstrap token for ``group``, valid from ``now``; return the row and the token (shown once)."""
    token = new_token(TOKEN_PREFIX_ENROLL)
    row = EnrollmentToken(
        token_hash=keyed_digest(settings.secret_key, token),
        group=group,
        note=note,
        created_by=creator,
        created_at=now,
        expires_at=now + timedelta(hours=expires_in_hours),
        max_uses=max_uses,
        uses=0,
    )
    session.add(row)
    session.flush()
    record(session, actor, "enrollment_token.create", "enrollment_token", row.id, group=group, max_uses=max_uses)
    return row, token


def enrollment_token_public(row: EnrollmentToken) -> EnrollmentTokenPublic:
    return EnrollmentTokenPublic(
        id=row.id, group=row.group, note=row.note,
        created_by=row.created_by.username if row.created_by else "(deleted)",
        created_at=row.created_at, expires_at=row.expires_at, max_uses=row.max_uses, uses=row.uses,
        last_used_at=row.last_used_at, revoked=row.revoked_at is not None,
    )


def revoke_enrollment_token(session: Session, actor: Actor, token_id: int, *, now: datetime) -> EnrollmentToken:
    row = session.get(EnrollmentToken, token_id)
    if row is None:
        raise NotFoundError(f"Enrollment token {token_id} does not exist.")
    if row.revoked_at is None:
        row.revoked_at = now
        record(session, actor, "enrollment_token.revoke", "enrollment_token", row.id)
    return row


def enroll(
    session: Session, settings: ServerSettings, actor: Actor, token: str, identity: AgentIdentity, signature: str,
    *, now: datetime,
) -> tuple[Agent, str]:
    """Exchange a bootstrap token for a per-agent credential, or refuse with the reason.

    A refusal is counted per client address and audited as a kept trace
    (:mod:`server.refusals`): it stays although the request fails.
    """
    limits = settings.rate_limits
    ip_key = f"enroll-ip:{actor.ip}"
    ratelimit.check(session, ip_key, limits.enroll_per_ip, limits.enroll_window_seconds, "enrollment", now=now)
    row = session.scalar(select(EnrollmentToken).where(EnrollmentToken.token_hash == keyed_digest(settings.secret_key, token)))
    problem = None
    if row is None:
        problem = AuthError("That enrollment token is not valid.", hint="Check the token or ask your administrator for a new one.")
    elif row.revoked_at is not None:
        problem = AuthError("That enrollment token has been revoked.", hint="Ask your administrator for a new token.")
    elif row.expires_at <= now:
        problem = AuthError("That enrollment token has expired.", hint="Ask your administrator for a new token.")
    elif row.uses >= row.max_uses:
        problem = AuthError("That enrollment token has been used up.", hint="Ask your administrator for a new token.")
    if problem is not None:
        raise refusal(session, problem, actor=actor, action="agent.enroll_refused", target_type="enrollment_token",
                      target_id=row.id if row else "unknown", counted=[(ip_key, limits.enroll_window_seconds)], now=now,
                      reason=problem.message, hostname=identity.hostname)
    check_proof(identity, "enroll", "token", token, signature)
    # Count the use with a guarded UPDATE so concurrent enrollments cannot overdraw it.
    used = session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == row.id, EnrollmentToken.uses < EnrollmentToken.max_uses)
        .values(uses=EnrollmentToken.uses + 1, last_used_at=now)
    )
    if used.rowcount != 1:
        raise AuthError("That enrollment token has been used up.", hint="Ask your administrator for a new token.")
    agent, credential, created = register_agent(session, identity, enroll_group=row.group, now=now)
    record(session, actor, "agent.enroll", "agent", agent.id, hostname=agent.hostname, group=row.group,
           token_id=row.id, new=created)
    return agent, credential


def agent_public(agent: Agent) -> AgentPublic:
    return AgentPublic(
        id=agent.id, hostname=agent.hostname, os=agent.os, agent_version=agent.agent_version, group=agent.group,
        fingerprint=signing.fingerprint(agent.public_key), enrolled=agent.enrolled, created_at=agent.created_at,
        last_seen_at=agent.last_seen_at, tickets=[p.ticket.label for p in agent.pairings],
    )
