"""Pairing: linking a PC to a ticket, with a one-time code from an engineer or a ticket the PC opens itself.

A pairing code is single use and short-lived; wrong codes are counted per
client address and against a global budget, and audited, as kept traces
(:mod:`server.refusals`) so the count survives the refused request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from protocol import pairing, times
from protocol.errors import AuthError, ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from protocol.schemas import AgentIdentity, Channel, Priority
from server import ratelimit
from server import tickets as ticket_svc
from server.agents import check_proof, register_agent
from server.audit import Actor, record, timeline
from server.models import Account, Agent, Pairing, PairingCode, Ticket
from server.refusals import refusal
from server.security import keyed_digest
from server.settings import ServerSettings


def code_lifetime(settings: ServerSettings) -> str:
    """How long this server's pairing codes live, in words ("10 min", "1 min 30 s")."""
    return times.duration(settings.pairing_code_ttl_minutes * 60)


def create_pairing_code(
    session: Session, settings: ServerSettings, actor: Actor, creator: Account, ticket: Ticket, *, now: datetime
) -> tuple[PairingCode, str]:
    """Issue a one-time code that links a PC to ``ticket``, valid from ``now``; return the row and the code."""
    code = pairing.new_pairing_code()
    row = PairingCode(
        ticket=ticket,
        code_hash=keyed_digest(settings.secret_key, pairing.normalize(code)),
        created_by_id=creator.id,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.pairing_code_ttl_minutes),
    )
    session.add(row)
    session.flush()
    timeline(session, ticket, actor, "pairing-code", f"Pairing code issued (valid {code_lifetime(settings)}, single use).")
    record(session, actor, "pairing_code.create", "ticket", ticket.label, code_id=row.id)
    return row, code


def redeem_pairing_code(session: Session, settings: ServerSettings, actor: Actor, code: str, *, now: datetime) -> PairingCode:
    """Return the pairing code row for ``code`` and mark it used at ``now``, or refuse.

    Each failure counts against the client's address and against a global
    budget, so guessing 40-bit codes stays hopeless even from many addresses.
    """
    limits = settings.rate_limits
    ip_key, global_key = f"pair-ip:{actor.ip}", "pair-global"
    ratelimit.check(session, ip_key, limits.pairing_per_ip, limits.pairing_window_seconds, "pairing", now=now)
    ratelimit.check(session, global_key, limits.pairing_global, limits.pairing_window_seconds, "pairing", now=now)
    try:
        canonical = pairing.normalize(code)
    except InvalidInputError:
        canonical = None
    row = None
    if canonical is not None:
        row = session.scalar(select(PairingCode).where(PairingCode.code_hash == keyed_digest(settings.secret_key, canonical)))
    problem = None
    if row is None:
        problem = AuthError("That pairing code is not valid.", hint="Check the code with your engineer; codes are single use.")
    elif row.used_at is not None:
        problem = ConflictError("That pairing code has already been used.", hint="Ask your engineer for a new code.")
    elif row.expires_at <= now:
        problem = AuthError("That pairing code has expired.",
                            hint=f"Codes are valid for {code_lifetime(settings)}; ask your engineer for a new one.")
    if problem is not None:
        window = limits.pairing_window_seconds
        raise refusal(session, problem, actor=actor, action="pairing.refused", target_type="pairing_code",
                      target_id=row.id if row else "unknown", counted=[(ip_key, window), (global_key, window)], now=now,
                      reason=problem.message)
    used = session.execute(
        update(PairingCode).where(PairingCode.id == row.id, PairingCode.used_at.is_(None)).values(used_at=now)
    )
    if used.rowcount != 1:
        raise ConflictError("That pairing code has already been used.", hint="Ask your engineer for a new code.")
    return row


def paired_ticket(session: Session, agent: Agent, number: str) -> Ticket:
    """The ticket ``number`` if this agent is linked to it; NotFoundError otherwise.

    A ticket the PC is not linked to gets the same answer as a missing one:
    ticket numbers are not secrets, but their contents are.
    """
    ticket = ticket_svc.get_ticket(session, number)
    linked = session.scalar(select(Pairing.id).where(Pairing.ticket_id == ticket.id, Pairing.agent_id == agent.id))
    if linked is None:
        raise NotFoundError(f"This PC is not linked to {ticket.label}.", hint="Pair with a code from your engineer first.")
    return ticket


def linked_tickets(session: Session, agent: Agent) -> list[Ticket]:
    """The tickets ``agent`` is linked to, newest first."""
    query = select(Ticket).join(Pairing).where(Pairing.agent_id == agent.id).order_by(Ticket.number.desc())
    return list(session.scalars(query))


def pair_agent(session: Session, actor: Actor, ticket: Ticket, agent: Agent, via: str, *, now: datetime) -> Pairing:
    """Link ``agent`` to ``ticket`` (once; linking again changes nothing) and note it on the timeline."""
    link = session.scalar(select(Pairing).where(Pairing.ticket_id == ticket.id, Pairing.agent_id == agent.id))
    if link is None:
        link = Pairing(ticket=ticket, agent=agent, created_at=now, via=via)
        session.add(link)
        timeline(session, ticket, actor, "paired", f"PC {agent.hostname} linked to the ticket ({via}).")
        record(session, actor, "ticket.pair", "ticket", ticket.label, agent_id=agent.id, via=via)
    return link


@dataclass(frozen=True)
class Paired:
    """A PC linked to a ticket; ``credential`` is set when the PC was registered by this request (shown once)."""

    ticket: Ticket
    agent: Agent
    credential: str | None


def pair_with_code(
    session: Session, settings: ServerSettings, ip: str | None, agent: Agent | None, code: str,
    identity: AgentIdentity, signature: str | None, *, now: datetime,
) -> Paired:
    """Redeem ``code`` and link the PC to its ticket.

    A PC that sent its agent credential (``agent``) must present that agent's
    key; one without is registered from ``identity``, which it must have signed
    the request with. Raise AuthError, ConflictError or RetryAfter otherwise.
    """
    actor = Actor.of_agent(agent, ip) if agent else Actor.anonymous(ip)
    code_row = redeem_pairing_code(session, settings, actor, code, now=now)
    credential = None
    if agent is not None:
        if agent.public_key != identity.public_key:
            raise AuthError("The identity does not match this PC's agent credential.")
    else:
        check_proof(identity, "pair", "code", code, signature)
        agent, credential, _ = register_agent(session, identity, enroll_group=None, now=now)
        actor = Actor.of_agent(agent, ip)
    code_row.used_by_agent_id = agent.id
    pair_agent(session, actor, code_row.ticket, agent, via="code", now=now)
    return Paired(code_row.ticket, agent, credential)


def open_self_service_ticket(
    session: Session, settings: ServerSettings, ip: str | None, agent: Agent | None, *, title: str, description: str,
    requester: str | None, identity: AgentIdentity | None, signature: str | None, now: datetime,
) -> Paired:
    """Open a ticket from a PC and link the PC to it, as the server's ``self_service`` setting allows.

    A PC without a credential may do so only when the setting is "anyone"; it is
    then registered from its signed ``identity`` and counted per address. Raise
    ForbiddenError, AuthError, InvalidInputError or RetryAfter when refused.
    """
    if settings.self_service == "off":
        raise ForbiddenError("This server does not take tickets from PCs.", hint="Call or e-mail your support team.")
    credential = None
    if agent is None:
        if settings.self_service != "anyone":
            raise ForbiddenError("Only enrolled PCs may open tickets here.", hint="Ask your support team for a pairing code.")
        limits = settings.rate_limits
        key = f"self-service-ip:{ip}"
        ratelimit.check(session, key, limits.self_service_per_ip, limits.self_service_window_seconds, "ticket", now=now)
        ratelimit.hit(session, key, limits.self_service_window_seconds, now=now)
        if identity is None:
            raise InvalidInputError("A PC that is not enrolled must say who it is.", hint="Update the Helpline agent.")
        check_proof(identity, "self-service", "title", title, signature)
        agent, credential, _ = register_agent(session, identity, enroll_group=None, now=now)
    actor = Actor.of_agent(agent, ip)
    ticket = ticket_svc.create_ticket(
        session, settings, actor, title=title, description=description,
        requester=requester or f"user of {agent.hostname}", priority=Priority(settings.self_service_priority),
        channel=Channel.SELF_SERVICE, now=now,
    )
    pair_agent(session, actor, ticket, agent, via="self-service", now=now)
    return Paired(ticket, agent, credential)
