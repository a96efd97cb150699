"""Admins' decisions on the fleet's identities: a re-imaged PC replacing its old agent, retiring a PC,
and quarantining or releasing an agent.

Replacement is never automatic: a PC enrolling again with a new key that repeats an enrolled agent's
machine id and hostname waits as *pending* (server.agents.register_agent); an admin decides it is that
PC re-imaged (``helpline agent replace NEW --of OLD``). What the new agent takes over, per table:

* ticket links (``pairings``): **moved** to the new agent; the PC's user sees the same tickets.
* the server-side restic repository (``restic_repositories``, ``restic_objects``), the snapshot records
  (``snapshot_runs``, ``restore_checks``), the protection summary (``protection``) and the escrowed
  password (``escrowed_passwords``): **kept** under the old agent's id and **linked** (``replaces_id``).
  Blob keys and escrow seals are bound to the old id, and the records describe that repository, not the
  new PC's own. The new agent gets read-only restore credentials for the repository of the agent it
  replaced (server.restic_rest.credentials), and an engineer's replacement restore releases the escrowed
  password as before.
* bundles, replies, sessions and engineers' requests: **kept** (history of the old agent, reached
  through the tickets); requests still waiting for the old agent expire unanswered (each is signed for
  the old agent's id).

The old agent is retired: its credential ends at its next request and its key can never enroll again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from protocol.errors import AmbiguousError, Audience, ConflictError, HelplineError, InvalidInputError, NotFoundError
from protocol.schemas import AgentStatus
from server.audit import Actor, record
from server.fleet.tokens import quarantine
from server.identifiers import find_agent
from server.models import Agent, EscrowedPassword, Pairing, ResticCredential, ResticObject, ResticRepository
from server.refusals import refusal

#: How many replacements back a new agent may read server-side snapshots of (A replaced by B replaced by C...).
MAX_REPLACEMENT_CHAIN = 20


def _find(session: Session, actor: Actor, reference: str, action: str, *, now: datetime) -> Agent:
    try:
        return find_agent(session, reference)
    except (NotFoundError, AmbiguousError, InvalidInputError) as problem:
        raise refusal(session, problem, actor=actor, action=f"{action}_refused", target_type="agent",
                      target_id=reference[:100], now=now, reason=problem.message) from None


def _refuse(session: Session, actor: Actor, agent_id: str, action: str, problem: HelplineError, *,
            now: datetime, **details: object) -> HelplineError:
    return refusal(session, problem, actor=actor, action=f"{action}_refused", target_type="agent", target_id=agent_id,
                   now=now, reason=problem.message, **details)


def _end_credential(agent: Agent, now: datetime) -> None:
    agent.status = AgentStatus.RETIRED.value
    agent.retired_at = now
    agent.revoked_at = agent.revoked_at or now


def replace_agent(session: Session, actor: Actor, new_ref: str, old_ref: str, *, reason: str, now: datetime,
                  ) -> tuple[Agent, Agent]:
    """Make agent ``new_ref`` (pending or active) the re-imaged PC of ``old_ref``; return (new, old).

    Ticket links move to the new agent; the old one's snapshots and records stay under its id, linked
    (module docstring); the old agent is retired. ConflictError, audited, when either side cannot take part.
    """
    action = "agent.replace"
    new = _find(session, actor, new_ref, action, now=now)
    old = _find(session, actor, old_ref, action, now=now)
    if new.id == old.id:
        raise _refuse(session, actor, new.id, action, InvalidInputError("An agent cannot replace itself.",
                                                                        hint="Name the old agent with --of."), now=now)
    if new.status not in (AgentStatus.PENDING.value, AgentStatus.ACTIVE.value) or new.revoked_at is not None:
        raise _refuse(session, actor, new.id, action, ConflictError(
            f"Agent {new.id} is {new.status}: only a pending or active agent takes an old one's place."), now=now)
    if new.replaces_id is not None:
        raise _refuse(session, actor, new.id, action, ConflictError(
            f"Agent {new.id} already replaced agent {new.replaces_id}."), now=now)
    if old.replaced_by_id is not None:
        raise _refuse(session, actor, old.id, action, ConflictError(
            f"Agent {old.id} was already replaced by agent {old.replaced_by_id}."), now=now)
    if old.status in (AgentStatus.PENDING.value, AgentStatus.REFUSED.value) or not old.enrolled:
        raise _refuse(session, actor, old.id, action, ConflictError(
            f"Agent {old.id} is {old.status if old.enrolled else 'paired only'}: only an enrolled PC's agent is replaced."),
            now=now)
    matched = new.resembles_id == old.id
    moved = 0
    already = set(session.scalars(select(Pairing.ticket_id).where(Pairing.agent_id == new.id)))
    for pairing in list(old.pairings):
        if pairing.ticket_id in already:
            session.delete(pairing)
            continue
        pairing.agent_id = new.id
        moved += 1
    previous_new, previous_old = new.status, old.status
    new.status = AgentStatus.ACTIVE.value
    new.replaces_id = old.id
    new.group = new.group or old.group
    old.replaced_by_id = new.id
    _end_credential(old, now)
    session.flush()
    session.expire(old, ["pairings"])
    session.expire(new, ["pairings"])
    evidence = old.hostname if matched else ""
    record(session, actor, action, "agent", new.id, replaces=old.id, reason=reason, tickets_moved=moved,
           evidence=new.evidence if matched else "none: the admin's decision alone", previous_status=previous_new,
           old_previous_status=previous_old, hostname=new.hostname,
           summary=f"agent {new.id} replaces agent {old.id} (re-imaged PC{' ' + evidence if evidence else ''}); "
                   f"{moved} ticket link(s) moved, snapshots linked, the old agent retired")
    record(session, actor, "agent.retire", "agent", old.id, reason=reason or "replaced by a re-imaged PC's agent",
           replaced_by=new.id, previous_status=previous_old, delete_data=False, summary="agent retired: replaced")
    return new, old


def replaced_chain(session: Session, agent: Agent) -> list[str]:
    """The agents ``agent`` replaced, nearest first (it may read their server-side snapshots)."""
    chain: list[str] = []
    current = agent.replaces_id
    while current is not None and current not in chain and len(chain) < MAX_REPLACEMENT_CHAIN:
        chain.append(current)
        current = session.scalar(select(Agent.replaces_id).where(Agent.id == current))
    return chain


def retire_agent(session: Session, actor: Actor, reference: str, *, reason: str, delete_data: bool,
                 now: datetime) -> Agent:
    """Decommission a PC: its credential ends (its key never enrolls again), state retired; audited.

    Its server-side data is kept, for retention to remove, unless ``delete_data``: then its escrowed
    password is deleted (nothing on the server opens its snapshots any more), its repository's objects
    are put in the trash at once (gone from every listing; the trash job removes their blobs after
    ``[snapshots] trash_days``) and its repository credentials end. Ticket data (bundles, replies,
    recordings) stays with the tickets. Retiring a retired agent again changes nothing, unless it now
    deletes the data.
    """
    action = "agent.retire"
    agent = _find(session, actor, reference, action, now=now)
    already = agent.status == AgentStatus.RETIRED.value
    if already and not delete_data:
        return agent
    previous = agent.status
    if not already:
        _end_credential(agent, now)
    trashed = 0
    escrow_deleted = False
    if delete_data:
        trashed = session.execute(update(ResticObject).where(ResticObject.agent_id == agent.id,
                                                            ResticObject.trashed_at.is_(None))
                                  .values(trashed_at=now)).rowcount or 0
        session.execute(update(ResticRepository).where(ResticRepository.agent_id == agent.id).values(bytes=0))
        session.execute(delete(ResticCredential).where(ResticCredential.repository_id == agent.id))
        escrow_deleted = bool(session.execute(delete(EscrowedPassword).where(EscrowedPassword.agent_id == agent.id)).rowcount)
    record(session, actor, action, "agent", agent.id, reason=reason, previous_status=previous, delete_data=delete_data,
           objects_trashed=trashed, escrow_deleted=escrow_deleted, hostname=agent.hostname,
           summary="agent retired" + ("; server-side snapshots deleted" if delete_data else "; data kept by retention"))
    return agent


def quarantine_agent(session: Session, actor: Actor, reference: str, *, reason: str, now: datetime) -> Agent:
    """An admin quarantines an active agent (its requests refused until released); audited."""
    action = "agent.quarantine"
    agent = _find(session, actor, reference, action, now=now)
    if agent.status == AgentStatus.QUARANTINED.value:
        return agent
    if agent.status != AgentStatus.ACTIVE.value or agent.revoked_at is not None:
        raise _refuse(session, actor, agent.id, action, ConflictError(
            f"Agent {agent.id} is {agent.status}: only an active agent is quarantined.",
            hints={Audience.ADMIN: "A pending agent acts on nothing until approved; refuse it with `helpline agent refuse`."}),
            now=now)
    quarantine(session, actor, agent, reason=reason or "quarantined by an administrator", now=now)
    return agent


def release_agent(session: Session, actor: Actor, reference: str, *, reason: str, now: datetime) -> Agent:
    """Let a quarantined agent act again (after an admin made sure one PC alone holds its key); audited.

    The instances it was seen from are forgotten, so the copy that runs on afterwards starts afresh; if
    two copies still run, the next alternation quarantines it again.
    """
    action = "agent.release"
    agent = _find(session, actor, reference, action, now=now)
    if agent.status != AgentStatus.QUARANTINED.value:
        raise _refuse(session, actor, agent.id, action, ConflictError(
            f"Agent {agent.id} is {agent.status}, not quarantined.", hint="Only a quarantined agent is released."),
            now=now)
    was = agent.quarantine_reason
    agent.status = AgentStatus.ACTIVE.value
    agent.quarantined_at = None
    agent.quarantine_reason = ""
    agent.instance_id = agent.instance_seen_at = None
    agent.previous_instance_id = agent.previous_instance_seen_at = None
    record(session, actor, action, "agent", agent.id, reason=reason, quarantined_for=was, hostname=agent.hostname,
           summary="agent released from quarantine")
    return agent
