"""Pairing: linking a PC to a ticket, with a one-time code from an engineer or a ticket the PC opens itself.

A pairing code is single use and short-lived; wrong codes are counted per
client address, and those from addresses that failed before are slowed
together; all are audited, as kept traces (:mod:`server.refusals`) so the
count survives the refused request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from protocol import pairing, times
from protocol.errors import AuthError, ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from protocol.schemas import AgentIdentity, Channel, Priority, TicketStatus
from protocol.tickets import parse_ticket_ref, ticket_label
from server import ratelimit
from server import tickets as ticket_svc
from server.agents import check_proof, register_agent
from server.audit import Actor, record, timeline
from server.models import Account, Agent, Pairing, PairingCode, Ticket
from server.ratelimit import RetryAfter
from server.refusals import rate_limited, refusal
from server.security import keyed_digest
from server.settings import ServerSettings


def code_lifetime(settings: ServerSettings) -> str:
    """How long this server's pairing codes live, in words ("10 min", "1 min 30 s")."""
    return times.duration(settings.pairing_code_ttl_minutes * 60)


def create_pairing_code(
    session: Session, settings: ServerSettings, actor: Actor, creator: Account, ticket: Ticket, *, now: datetime
) -> tuple[PairingCode, str]:
    """Issue a one-time code that links a PC to ``ticket``, valid from ``now``; return the row and the code.

    Raise RetryAfter when ``pairing_live_codes`` codes are already live: the odds
    of guessing one grow with their number (docs/threat-model.md).
    """
    live = session.scalar(select(func.count(PairingCode.id)).where(PairingCode.used_at.is_(None), PairingCode.expires_at > now))
    if live >= settings.rate_limits.pairing_live_codes:
        soonest = session.scalar(select(func.min(PairingCode.expires_at)).where(
            PairingCode.used_at.is_(None), PairingCode.expires_at > now))
        wait = max(1, math.ceil((soonest - now).total_seconds()))
        problem = RetryAfter(f"This server already has {live} pairing codes waiting to be used.", wait,
                             hint=f"Wait {times.duration(wait)} for one to expire, or have a PC use its code first.")
        raise rate_limited(session, problem, actor=actor, action="pairing_code.refused", target_type="ticket",
                           target_id=ticket.label, key="pair-live-codes", window_seconds=wait, now=now)
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


SUSPECTS_KEY = "pair-suspects"  # wrong codes in the current second from addresses that failed before


def redeem_pairing_code(session: Session, settings: ServerSettings, actor: Actor, code: str, *, now: datetime) -> PairingCode:
    """Return the pairing code row for ``code`` and mark it used at ``now``, or refuse.

    Wrong codes are counted per client address (an IPv4 address or an IPv6
    /64), which then waits after ``pairing_per_address`` of them, and per IPv6
    /48. An address that failed before (or whose /48 failed often) is also
    slowed with every other such address, to ``pairing_suspects_per_second``
    wrong codes a second in all. An address without failures is never held up
    by others, so its one right code always pairs, whatever the flood; the
    guessing odds this leaves are worked out in docs/threat-model.md.
    """
    limits = settings.rate_limits
    window = limits.pairing_window_seconds
    source = ratelimit.source_of(actor.ip)
    address_key = f"pair-addr:{source.address}"
    network_key = f"pair-net:{source.network}" if source.network else None

    def refuse(message: str, key: str, key_window: int, hint: str | None = None) -> RetryAfter:
        wait = ratelimit.seconds_left(session, key, key_window, now=now)
        return rate_limited(session, RetryAfter(message, wait, hint=hint), actor=actor, action="pairing.rate_limited",
                            target_type="pairing_code", target_id="unknown", key=key, window_seconds=key_window, now=now)

    # The attempt is counted first, as a failure until it succeeds: one write statement each, so that however
    # many attempts arrive at once, each is checked against all before it. A refusal takes the counts back.
    tried_here = ratelimit.hit(session, address_key, window, now=now)
    if tried_here > limits.pairing_per_address:
        raise refuse("Too many failed pairing attempts from this address.", address_key, window)
    counted = [(address_key, window)]
    failed_before = tried_here > 1
    if network_key is not None:
        counted.append((network_key, window))
        failed_before = failed_before or ratelimit.hit(session, network_key, window, now=now) - 1 >= limits.pairing_network_clean
    if failed_before:
        counted.append((SUSPECTS_KEY, 1))
        if ratelimit.hit(session, SUSPECTS_KEY, 1, now=now) > limits.pairing_suspects_per_second:
            raise refuse("Too many failed pairing attempts arriving; this address failed before, so it waits its turn.",
                         SUSPECTS_KEY, 1, "Wait a second and try again.")
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
        raise refusal(session, problem, actor=actor, action="pairing.refused", target_type="pairing_code",
                      target_id=row.id if row else "unknown", counted=counted, now=now, reason=problem.message)
    used = session.execute(
        update(PairingCode).where(PairingCode.id == row.id, PairingCode.used_at.is_(None)).values(used_at=now)
    )
    if used.rowcount != 1:
        raise ConflictError("That pairing code has already been used.", hint="Ask your engineer for a new code.")
    for key, key_window in counted:
        ratelimit.give_back(session, key, key_window, now=now)
    return row


def paired_ticket(session: Session, agent: Agent, number: str) -> Ticket:
    """The ticket ``number`` if this agent is linked to it; NotFoundError otherwise.

    A ticket the PC is not linked to gets the same answer as a missing one (the
    same status, message and one query either way): ticket numbers are not
    secrets, but their existence and contents are.
    """
    wanted = parse_ticket_ref(number)
    ticket = session.scalar(
        select(Ticket).join(Pairing, Pairing.ticket_id == Ticket.id).where(Ticket.number == wanted, Pairing.agent_id == agent.id)
    )
    if ticket is None:
        raise NotFoundError(f"This PC is not linked to a ticket {ticket_label(wanted)}.",
                            hint="Check the number (`helpline status` lists your tickets), or pair with a code from your engineer first.")
    return ticket


def linked_tickets(session: Session, agent: Agent) -> list[Ticket]:
    """The tickets ``agent`` is linked to, newest first."""
    query = select(Ticket).join(Pairing).where(Pairing.agent_id == agent.id).order_by(Ticket.number.desc())
    return list(session.scalars(query))


def pair_agent(session: Session, actor: Actor, ticket: Ticket, agent: Agent, via: str, *, now: datetime) -> Pairing:
    """Link ``agent`` to ``ticket`` (once; linking again changes nothing) and note it on the timeline.

    A closed ticket takes no new PC: ConflictError, audited as ``pairing.refused``.
    """
    link = session.scalar(select(Pairing).where(Pairing.ticket_id == ticket.id, Pairing.agent_id == agent.id))
    if link is None:
        if ticket.status == TicketStatus.CLOSED.value:
            problem = ConflictError(f"{ticket.label} is closed and takes no new PCs.",
                                    hint="Ask your support team to reopen it or to open a new ticket.")
            raise refusal(session, problem, actor=actor, action="pairing.refused", target_type="ticket",
                          target_id=ticket.label, now=now, reason="ticket closed", via=via)
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


def _check_agent_ticket_budget(session: Session, settings: ServerSettings, agent: Agent, ip: str | None, *,
                               now: datetime) -> None:
    """Count one self-service ticket for ``agent`` at ``now``, or refuse (audited) past its caps.

    A PC may have at most ``self_service_open_per_agent`` of its own tickets
    open at once (ConflictError), and open at most
    ``rate_limits.self_service_per_agent`` per window (RetryAfter).
    """
    limits = settings.rate_limits
    open_now = session.scalar(
        select(func.count(Ticket.id)).join(Pairing, Pairing.ticket_id == Ticket.id).where(
            Pairing.agent_id == agent.id, Pairing.via == "self-service", Ticket.channel == Channel.SELF_SERVICE.value,
            Ticket.status.not_in([TicketStatus.RESOLVED.value, TicketStatus.CLOSED.value]))
    )
    actor = Actor.of_agent(agent, ip)
    if open_now >= settings.self_service_open_per_agent:
        tickets = "ticket" if settings.self_service_open_per_agent == 1 else "tickets"
        problem = ConflictError(f"This PC already has {open_now} open {tickets}; wait for an engineer to answer.",
                                hint="See them with `helpline status`; add to one instead of opening another.")
        raise refusal(session, problem, actor=actor, action="self_service.refused", target_type="agent", target_id=agent.id,
                      now=now, reason="open tickets cap", open=open_now)
    key, window = f"self-service-agent:{agent.id}", limits.self_service_window_seconds
    try:
        ratelimit.check(session, key, limits.self_service_per_agent, window, "ticket", now=now)
    except ratelimit.RetryAfter as limited:
        problem = ratelimit.RetryAfter("This PC has opened too many tickets lately.", limited.retry_after)
        raise refusal(session, problem, actor=actor, action="self_service.refused", target_type="agent",
                      target_id=agent.id, now=now, reason="rate") from None
    ratelimit.hit(session, key, window, now=now)


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
    if agent is not None and settings.self_service == "enrolled" and not agent.enrolled:
        problem = ForbiddenError("Only enrolled PCs may open tickets here; this PC is only paired.",
                                 hint="Ask your support team to enroll this PC, or for a pairing code.")
        raise refusal(session, problem, actor=Actor.of_agent(agent, ip), action="self_service.refused", target_type="agent",
                      target_id=agent.id, now=now, reason="not enrolled")
    if agent is not None:
        _check_agent_ticket_budget(session, settings, agent, ip, now=now)
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
