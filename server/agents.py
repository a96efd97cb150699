"""Agents: enrollment with bootstrap tokens, registration, credentials, and admins' decisions.

Pairing a PC with a ticket (one-time codes, self-service tickets) is in
:mod:`server.pairing`.

An agent proves it holds the private half of the key it registers by signing
the request; the server answers with its own signature so the agent can pin
the server's key. The key is the agent's identity; hardware facts (machine id,
hostname) are evidence: a new key that repeats an enrolled agent's facts
becomes a pending agent that an admin approves or refuses. An admin can
revoke any agent; its credential stops working at the next request.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from protocol import signing
from protocol.schemas import AgentCredential, AgentIdentity, AgentPublic, AgentStatus, EnrollmentTokenPublic
from protocol.errors import AmbiguousError, Audience, AuthError, ConflictError, ForbiddenError, HelplineError, InvalidInputError, NotFoundError
from server import ratelimit
from server.audit import Actor, record
from server.db import touch
from server.fleet import tokens as fleet_tokens
from server.identifiers import find_agent
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
        status=AgentStatus(agent.status),
    )


def _apply_identity(agent: Agent, identity: AgentIdentity, now: datetime) -> None:
    agent.hostname = identity.hostname
    agent.os = identity.os
    agent.agent_version = identity.agent_version
    if identity.machine_id:
        agent.machine_id = identity.machine_id
    agent.last_seen_at = now


SAME_MACHINE = "same machine id and hostname"


def resembled_agent(session: Session, identity: AgentIdentity) -> Agent | None:
    """The enrolled agent whose hardware facts ``identity`` repeats (machine id and hostname), if any.

    Evidence only: the machine id is readable by anyone on the PC and the
    hostname is the PC's own claim, so a match never makes the enrolling key
    that agent. Clones of one disk image share a machine id but not a hostname
    and do not resemble each other. Paired-only agents are per-user identities
    (several may live on one PC) and are not compared. An active agent is
    named before a revoked or pending one, then the oldest.
    """
    if not identity.machine_id:
        return None
    query = (
        select(Agent)
        .where(Agent.machine_id == identity.machine_id, func.lower(Agent.hostname) == identity.hostname.lower(),
               Agent.enrolled.is_(True), Agent.public_key != identity.public_key)
        .order_by(case((Agent.status == AgentStatus.ACTIVE.value, 0), else_=1), Agent.created_at, Agent.id)
        .limit(1)
    )
    return session.scalar(query)


def register_agent(
    session: Session, identity: AgentIdentity, *, enroll_group: str | None, now: datetime
) -> tuple[Agent, str, bool]:
    """Find the agent holding ``identity``'s key, or create one, and issue it a fresh credential.

    The key is the identity: the caller has checked the request is signed by it.
    A new key never takes over an existing agent, whatever hardware facts it
    claims. When enrolling (``enroll_group`` set), a new key that repeats an
    enrolled agent's machine id and hostname becomes a *pending* agent linked
    to it as evidence, for an admin to approve or refuse; the existing agent
    keeps its key, credential and tickets. A brand-new PC is active at once.
    Raise AuthError for a revoked agent's key, and (pairing, self-service)
    ForbiddenError for a pending one. Return (agent, credential, created).
    """
    signing.load_public_key(identity.public_key)
    agent = session.scalar(select(Agent).where(Agent.public_key == identity.public_key))
    created = agent is None
    if agent is None:
        agent = Agent(id=str(uuid.uuid4()), public_key=identity.public_key, created_at=now,
                      status=AgentStatus.ACTIVE.value, evidence="")
        if enroll_group is not None:
            resembles = resembled_agent(session, identity)
            if resembles is not None:
                agent.status = AgentStatus.PENDING.value
                agent.resembles_id = resembles.id
                agent.evidence = SAME_MACHINE
        session.add(agent)
    elif enroll_group is None or agent.revoked_at is not None or agent.status in _REVOKED + (AgentStatus.QUARANTINED.value,):
        # A revoked key stays out (audited); pairing and self-service need an agent that may act.
        admit_agent(session, agent, now=now)
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

_REVOKED = (AgentStatus.REFUSED.value, AgentStatus.REVOKED.value, AgentStatus.RETIRED.value)
PENDING_HINT = "An administrator must approve this PC (`helpline agent approve {id}`)."
QUARANTINE_HINT = ("An administrator checks where this PC's identity runs, then releases it "
                   "(`helpline agent release {id}`) or retires it (`helpline agent retire {id}`).")


def revoked_error(agent: Agent) -> AuthError:
    """The refusal a revoked, refused or retired agent gets, saying which."""
    if agent.status == AgentStatus.REFUSED.value:
        return AuthError("An administrator refused this PC's enrollment.", hint="Ask your administrator.")
    if agent.status == AgentStatus.RETIRED.value:
        if agent.replaced_by_id:
            return AuthError(f"This PC's agent was replaced by agent {agent.replaced_by_id} (a re-imaged PC).",
                             hint="Ask your administrator; this copy of the agent no longer acts for the PC.")
        return AuthError("This PC's agent has been retired by an administrator.", hint="Ask your administrator.")
    return AuthError("This PC's agent has been revoked by an administrator.", hint="Ask your administrator.")


def quarantined_error(agent: Agent) -> ForbiddenError:
    """The refusal a quarantined agent gets: why, and what an administrator does about it."""
    why = f" ({agent.quarantine_reason})" if agent.quarantine_reason else ""
    return ForbiddenError(f"This PC's agent is quarantined{why}.", hint=QUARANTINE_HINT.format(id=agent.id))


def admit_agent(session: Session, agent: Agent, *, now: datetime) -> Agent:
    """Return ``agent`` if it may act (reach ticket data); refuse a revoked, pending, quarantined or retired one,
    audited.

    Every way an agent authenticates ends here, so a revocation, a pending or
    quarantined state or a retirement takes effect at the agent's next request.
    A revoked, refused or retired agent gets AuthError (exit status 4); a
    pending one ForbiddenError (5), with the hint that an administrator must
    approve the PC; a quarantined one ForbiddenError (5), saying why and that
    an administrator releases or retires it (server.fleet).
    """
    if agent.revoked_at is not None or agent.status in _REVOKED:
        problem: HelplineError = revoked_error(agent)
    elif agent.status == AgentStatus.PENDING.value:
        problem = ForbiddenError("This PC's agent is waiting for an administrator's approval.",
                                 hint=PENDING_HINT.format(id=agent.id))
    elif agent.status == AgentStatus.QUARANTINED.value:
        problem = quarantined_error(agent)
    else:
        return agent
    raise refusal(session, problem, actor=Actor.of_agent(agent), action="agent.request_refused", target_type="agent",
                  target_id=agent.id, now=now, status=agent.status, reason=problem.message)


def authenticate_agent(session: Session, agent_id: str, *, now: datetime) -> Agent:
    """The agent ``agent_id`` whose signed request :mod:`server.agent_requests` verified (noting it was seen at
    ``now``), if it may act (:func:`admit_agent`).

    AuthError if it is gone or revoked; ForbiddenError if it is pending.
    """
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise AuthError("This PC's agent is not valid here.", hint="Enroll again or pair with a new code.")
    admit_agent(session, agent, now=now)
    touch(session, Agent.last_seen_at, agent.id, agent.last_seen_at, LAST_SEEN_INTERVAL, now=now)
    return agent


# --- admins: approving, refusing and revoking agents ------------------------------------


def _agent_for_decision(session: Session, actor: Actor, agent_id: str, action: str, *, now: datetime) -> Agent:
    try:
        return find_agent(session, agent_id)
    except (NotFoundError, AmbiguousError, InvalidInputError) as problem:
        raise refusal(session, problem, actor=actor, action=f"{action}_refused", target_type="agent",
                      target_id=agent_id[:100], now=now, reason=problem.message) from None


def _evidence(agent: Agent) -> dict[str, Any]:
    return {"hostname": agent.hostname, "resembles": agent.resembles_id, "evidence": agent.evidence}


def _not_pending(session: Session, actor: Actor, agent: Agent, action: str, *, now: datetime, hint: str,
                 hints: dict[Audience, str]) -> ConflictError:
    problem = ConflictError(f"Agent {agent.id} is {agent.status}, not waiting for approval.", hint=hint, hints=hints)
    return refusal(session, problem, actor=actor, action=f"{action}_refused", target_type="agent", target_id=agent.id,
                   now=now, reason=problem.message)


def approve_agent(session: Session, actor: Actor, agent_id: str, *, reason: str, now: datetime) -> Agent:
    """Let a pending agent act, as a normal agent of its own; ConflictError unless it is pending.

    It gets nothing of the agent it resembled: tickets, notes and history stay
    with that agent (carrying them over after a re-image is a separate, later step).
    """
    agent = _agent_for_decision(session, actor, agent_id, "agent.approve", now=now)
    if agent.status != AgentStatus.PENDING.value:
        raise _not_pending(session, actor, agent, "agent.approve", now=now,
                           hint="Only pending agents are approved.",
                           hints={Audience.ADMIN: "Only pending agents are approved; see `helpline agent list --pending`."})
    agent.status = AgentStatus.ACTIVE.value
    record(session, actor, "agent.approve", "agent", agent.id, reason=reason, **_evidence(agent),
           summary="agent approved" + (f" (it resembled agent {agent.resembles_id}: {agent.evidence}; "
                                       "nothing of that agent carried over)" if agent.resembles_id else ""))
    return agent


def refuse_agent(session: Session, actor: Actor, agent_id: str, *, reason: str, now: datetime) -> Agent:
    """Refuse a pending agent: it is revoked and its credential stops working; ConflictError unless pending."""
    agent = _agent_for_decision(session, actor, agent_id, "agent.refuse", now=now)
    if agent.status != AgentStatus.PENDING.value:
        raise _not_pending(session, actor, agent, "agent.refuse", now=now,
                           hint="An approved agent is revoked, not refused.",
                           hints={Audience.ADMIN: "To stop an approved agent, use `helpline agent revoke`."})
    agent.status = AgentStatus.REFUSED.value
    agent.revoked_at = now
    record(session, actor, "agent.refuse", "agent", agent.id, reason=reason, **_evidence(agent), summary="agent refused")
    return agent


def revoke_agent(session: Session, actor: Actor, agent_id: str, *, reason: str, now: datetime) -> Agent:
    """Revoke an agent: its credential stops working at its next request; its tickets and bundles stay.

    Revoking an agent already revoked (or refused) changes nothing and records nothing.
    """
    agent = _agent_for_decision(session, actor, agent_id, "agent.revoke", now=now)
    if agent.revoked_at is not None and agent.status in _REVOKED:
        return agent
    previous = agent.status
    agent.status = AgentStatus.REVOKED.value
    agent.revoked_at = now
    record(session, actor, "agent.revoke", "agent", agent.id, reason=reason, previous_status=previous,
           **_evidence(agent), summary="agent revoked")
    return agent


# --- enrollment tokens --------------------------------------------------------


def create_enrollment_token(
    session: Session, settings: ServerSettings, actor: Actor, creator: Account, *, group: str,
    expires_in_hours: float, max_uses: int, note: str, now: datetime, networks: list[str] | None = None,
) -> tuple[EnrollmentToken, str]:
    """Make a bootstrap token for ``group``, valid from ``now`` (from ``networks`` only, if given); return the
    row and the token (shown once)."""
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
        networks=list(networks or []),
    )
    session.add(row)
    session.flush()
    record(session, actor, "enrollment_token.create", "enrollment_token", row.id, group=group, max_uses=max_uses,
           networks=row.networks)
    return row, token


def enrollment_token_public(row: EnrollmentToken, agents: int = 0) -> EnrollmentTokenPublic:
    return EnrollmentTokenPublic(
        id=row.id, group=row.group, note=row.note,
        created_by=row.created_by.username if row.created_by else "(deleted)",
        created_at=row.created_at, expires_at=row.expires_at, max_uses=row.max_uses, uses=row.uses,
        last_used_at=row.last_used_at, revoked=row.revoked_at is not None, networks=list(row.networks or []),
        last_used_by=row.last_used_by_agent_id, last_used_by_hostname=row.last_used_by_hostname, agents=agents,
    )


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
    elif not fleet_tokens.allowed_from(row, actor.ip):
        problem = fleet_tokens.network_refusal(row, actor.ip)
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
    fleet_tokens.note_use(row, agent)
    if created and agent.status == AgentStatus.PENDING.value:
        record(session, actor, "agent.enroll_pending", "agent", agent.id, hostname=agent.hostname, group=row.group,
               token_id=row.id, resembles=agent.resembles_id, evidence=agent.evidence,
               summary=f"enroll: pending, resembles agent {agent.resembles_id} ({agent.evidence})")
    else:
        record(session, actor, "agent.enroll", "agent", agent.id, hostname=agent.hostname, group=row.group,
               token_id=row.id, new=created, status=agent.status,
               summary="enroll: new agent" if created else "enroll: same key again, new credential")
    return agent, credential


def agent_public(agent: Agent) -> AgentPublic:
    return AgentPublic(
        id=agent.id, hostname=agent.hostname, os=agent.os, agent_version=agent.agent_version, group=agent.group,
        fingerprint=signing.fingerprint(agent.public_key), enrolled=agent.enrolled, created_at=agent.created_at,
        last_seen_at=agent.last_seen_at, tickets=[p.ticket.label for p in agent.pairings],
        status=AgentStatus(agent.status), resembles=agent.resembles_id, evidence=agent.evidence,
        policy_version=agent.policy_version,
        current_policy_version=_current_policy_version(agent), protocol_version=agent.protocol_version,
        revoked_at=agent.revoked_at, quarantined_at=agent.quarantined_at, quarantine_reason=agent.quarantine_reason,
        retired_at=agent.retired_at, replaced_by=agent.replaced_by_id, replaces=agent.replaces_id,
        enrolled_by_token=agent.enrolled_by_token_id,
    )


def _current_policy_version(agent: Agent) -> int | None:
    """The current version of ``agent``'s group's policy, read in the session the agent row belongs to."""
    from sqlalchemy.orm import object_session

    from server.fleet.policies import current_version

    session = object_session(agent)
    return current_version(session, agent.group) if session is not None else None
