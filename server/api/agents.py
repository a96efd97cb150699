"""Agents: enrollment tokens (admins), the fleet list (engineers), and the PC's own calls."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from protocol.schemas import (
    AgentCredential,
    AgentPublic,
    AgentTicket,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollRequest,
    PairRequest,
    PairResponse,
    Priority,
    SelfServiceRequest,
    SelfServiceResponse,
    Channel,
)
from protocol.errors import AuthError, ForbiddenError, InvalidInputError, NotFoundError
from server import ratelimit
from server import tickets as ticket_svc
from server.agents import (
    agent_public,
    check_proof,
    create_enrollment_token,
    enroll,
    enrollment_token_public,
    pair_agent,
    paired_ticket,
    redeem_pairing_code,
    register_agent,
    revoke_enrollment_token,
    server_credential,
)
from server.api.deps import (
    RowId,
    COMMIT_ON_ERROR,
    AccountActor,
    AdminAccount,
    ClientIP,
    CurrentAccount,
    CurrentAgent,
    DbSession,
    OptionalAgent,
    ReadSession,
    State,
)
from server.audit import Actor
from server.models import Agent, EnrollmentToken, Pairing, Ticket

router = APIRouter(prefix="/v1", tags=["agents"])


# --- admins: enrollment tokens -----------------------------------------------


@router.post("/enrollment-tokens", status_code=201, tags=["enrollment"], summary="Create a bootstrap token for enrolling PCs")
def create_token(body: EnrollmentTokenCreate, admin: AdminAccount, session: DbSession, state: State, actor: AccountActor) -> EnrollmentTokenCreated:
    row, token = create_enrollment_token(
        session, state.settings, actor, admin, group=body.group, expires_in_hours=body.expires_in_hours,
        max_uses=body.max_uses, note=body.note,
    )
    return EnrollmentTokenCreated(token=token, **enrollment_token_public(row).model_dump())


@router.get("/enrollment-tokens", tags=["enrollment"], summary="List enrollment tokens (never their secret)")
def list_tokens(admin: AdminAccount, session: ReadSession) -> list[EnrollmentTokenPublic]:
    return [enrollment_token_public(r) for r in session.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id.desc()))]


@router.delete("/enrollment-tokens/{token_id}", tags=["enrollment"], summary="Revoke an enrollment token")
def revoke_token(token_id: RowId, admin: AdminAccount, session: DbSession, actor: AccountActor) -> EnrollmentTokenPublic:
    return enrollment_token_public(revoke_enrollment_token(session, actor, token_id))


# --- engineers: the fleet ----------------------------------------------------------


@router.get("/agents", summary="List agents (enrolled and paired PCs)")
def list_agents(account: CurrentAccount, session: ReadSession, group: str | None = None) -> list[AgentPublic]:
    query = select(Agent).order_by(Agent.hostname)
    if group:
        query = query.where(Agent.group == group)
    return [agent_public(a) for a in session.scalars(query)]


@router.get("/agents/{agent_id}", summary="Show one agent")
def show_agent(agent_id: str, account: CurrentAccount, session: ReadSession) -> AgentPublic:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFoundError(f"There is no agent {agent_id}.")
    return agent_public(agent)


# --- the PC itself -------------------------------------------------------------------


@router.post("/agents/enroll", tags=["enrollment"], summary="Enroll a PC with a bootstrap token")
def enroll_agent(body: EnrollRequest, session: DbSession, state: State, ip: ClientIP) -> AgentCredential:
    session.info[COMMIT_ON_ERROR] = True  # refusals are counted and audited
    agent, credential = enroll(session, state.settings, Actor.anonymous(ip), body.token, body.identity, body.signature)
    session.info[COMMIT_ON_ERROR] = False
    return server_credential(state.signing_key, agent, credential)


@router.post("/pair", tags=["pairing"], summary="Link this PC to a ticket with a one-time pairing code")
def pair(body: PairRequest, session: DbSession, state: State, ip: ClientIP, agent: OptionalAgent) -> PairResponse:
    actor = Actor.of_agent(agent, ip) if agent else Actor.anonymous(ip)
    session.info[COMMIT_ON_ERROR] = True  # failed guesses are counted and audited
    code_row = redeem_pairing_code(session, state.settings, actor, body.code)
    session.info[COMMIT_ON_ERROR] = False
    credential = None
    if agent is not None:
        if agent.public_key != body.identity.public_key:
            raise AuthError("The identity does not match this PC's agent credential.")
    else:
        check_proof(body.identity, "pair", "code", body.code, body.signature)
        agent, credential, _ = register_agent(session, body.identity, enroll_group=None)
        actor = Actor.of_agent(agent, ip)
    code_row.used_by_agent_id = agent.id
    pair_agent(session, actor, code_row.ticket, agent, via="code")
    return PairResponse(ticket=ticket_svc.to_agent_view(code_row.ticket), agent=server_credential(state.signing_key, agent, credential))


@router.post("/self-service/tickets", status_code=201, tags=["pairing"], summary="Open a ticket from a PC and learn when an engineer will answer")
def self_service(body: SelfServiceRequest, session: DbSession, state: State, ip: ClientIP, agent: OptionalAgent) -> SelfServiceResponse:
    settings = state.settings
    if settings.self_service == "off":
        raise ForbiddenError("This server does not take tickets from PCs.", hint="Call or e-mail your support team.")
    credential = None
    if agent is None:
        if settings.self_service != "anyone":
            raise AuthError("Only enrolled PCs may open tickets here.", hint="Enroll this PC, or ask your support team for a pairing code.")
        limits = settings.rate_limits
        key = f"self-service-ip:{ip}"
        ratelimit.check(session, key, limits.self_service_per_ip, limits.self_service_window_seconds, "ticket")
        ratelimit.hit(session, key, limits.self_service_window_seconds)
        if body.identity is None:
            raise InvalidInputError("A PC that is not enrolled must say who it is.", hint="Update the Helpline agent.")
        check_proof(body.identity, "self-service", "title", body.title, body.signature)
        agent, credential, _ = register_agent(session, body.identity, enroll_group=None)
    actor = Actor.of_agent(agent, ip)
    priority = Priority(settings.self_service_priority)
    ticket = ticket_svc.create_ticket(
        session, settings, actor, title=body.title, description=body.description,
        requester=body.requester or f"user of {agent.hostname}", priority=priority, channel=Channel.SELF_SERVICE,
    )
    pair_agent(session, actor, ticket, agent, via="self-service")
    return SelfServiceResponse(
        ticket=ticket_svc.to_agent_view(ticket),
        agent=server_credential(state.signing_key, agent, credential) if credential else None,
        response_minutes=settings.response_policy.minutes_for(priority.value),
    )


@router.get("/agent/tickets", tags=["pairing"], summary="The tickets this PC is linked to, newest first")
def agent_tickets(agent: CurrentAgent, session: ReadSession) -> list[AgentTicket]:
    query = select(Ticket).join(Pairing).where(Pairing.agent_id == agent.id).order_by(Ticket.number.desc())
    return [ticket_svc.to_agent_view(t) for t in session.scalars(query)]


@router.get("/agent/tickets/{number}", tags=["pairing"], summary="One ticket this PC is linked to")
def agent_ticket(number: str, agent: CurrentAgent, session: ReadSession) -> AgentTicket:
    return ticket_svc.to_agent_view(paired_ticket(session, agent, number))
