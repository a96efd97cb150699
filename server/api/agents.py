"""Agents: enrollment tokens and decisions on agents (admins), the fleet list (engineers), and the PC's own calls."""

from __future__ import annotations

from typing import Annotated

from datetime import timedelta

from fastapi import APIRouter, Query
from sqlalchemy import select

from protocol.schemas import (
    AgentCredential,
    AgentDecision,
    AgentPublic,
    AgentStatus,
    AgentTicket,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollmentTokenRevoked,
    EnrollRequest,
    AgentReplace,
    AgentRetire,
    PairRequest,
    PairResponse,
    ProtectionState,
    ReplyCreate,
    SelfServiceRequest,
    SelfServiceResponse,
)
from protocol.hand_over import HandOverRequest, HandOverResponse
from protocol.errors import InvalidInputError
from protocol.snapshots import ProtectionStatus
from protocol.untrusted import shown
from server import pairing, replies, snapshots
from server import tickets as ticket_svc
from server.agents import (
    agent_public,
    approve_agent,
    create_enrollment_token,
    enroll,
    enrollment_token_public,
    refuse_agent,
    revoke_agent,
    server_credential,
)
from server.fleet import listing, reimage
from server.fleet import tokens as fleet_tokens
from server.api.deps import (
    RowId,
    AccountActor,
    AdminAccount,
    ClientIP,
    CurrentAccount,
    CurrentAgent,
    DbSession,
    Now,
    OptionalAgent,
    ReadSession,
    State,
)
from server.audit import Actor
from server.hand_over import hand_over as hand_over_tickets
from server.identifiers import find_agent
from server.models import Agent, EnrollmentToken

router = APIRouter(prefix="/v1", tags=["agents"])


# --- admins: enrollment tokens -----------------------------------------------


@router.post("/enrollment-tokens", status_code=201, tags=["enrollment"], summary="Create a bootstrap token for enrolling PCs")
def create_token(
    body: EnrollmentTokenCreate, admin: AdminAccount, session: DbSession, state: State, actor: AccountActor, now: Now,
) -> EnrollmentTokenCreated:
    row, token = create_enrollment_token(
        session, state.settings, actor, admin, group=body.group, expires_in_hours=body.expires_in_hours,
        max_uses=body.max_uses, note=body.note, now=now, networks=body.networks,
    )
    return EnrollmentTokenCreated(token=token, **enrollment_token_public(row).model_dump())


@router.get("/enrollment-tokens", tags=["enrollment"], summary="List enrollment tokens (never their secret)")
def list_tokens(admin: AdminAccount, session: ReadSession) -> list[EnrollmentTokenPublic]:
    rows = list(session.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id.desc())))
    counts = fleet_tokens.enrolled_counts(session, [r.id for r in rows])
    return [enrollment_token_public(r, counts.get(r.id, 0)) for r in rows]


@router.delete("/enrollment-tokens/{token_id}", tags=["enrollment"],
               summary="Revoke an enrollment token, and optionally quarantine the agents it enrolled")
def revoke_token(token_id: RowId, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now,
                 quarantine_agents: Annotated[bool, Query(
                     description="Also quarantine the active agents this token enrolled.")] = False,
                 ) -> EnrollmentTokenRevoked:
    row, quarantined = fleet_tokens.revoke(session, actor, token_id, quarantine_agents=quarantine_agents, now=now)
    counts = fleet_tokens.enrolled_counts(session, [row.id])
    return EnrollmentTokenRevoked(quarantined=[a.id for a in quarantined],
                                  **enrollment_token_public(row, counts.get(row.id, 0)).model_dump())


# --- engineers: the fleet ----------------------------------------------------------


@router.get("/agents", summary="List agents (enrolled and paired PCs), optionally of one group, status, protection or problem")
def list_agents(account: CurrentAccount, session: ReadSession, state: State, now: Now, group: str | None = None,
                status: AgentStatus | None = None,
                protection: Annotated[list[ProtectionState] | None, Query(
                    description="Only agents in these protection states (e.g. all but protected: the PCs to look at).")] = None,
                problem: Annotated[list[str] | None, Query(
                    description="Only agents with one of these problems: " + ", ".join(listing.PROBLEMS) + ".")] = None,
                ) -> list[AgentPublic]:
    wanted = [listing.normalized(p) for p in problem or []]
    unknown = [p for p in wanted if p not in listing.PROBLEMS]
    if unknown:
        raise InvalidInputError(f"{shown(unknown[0])} is not a problem an agent can have.",
                                hint="Give one of: " + ", ".join(listing.PROBLEMS) + ".")
    query = select(Agent).order_by(Agent.hostname, Agent.created_at)
    if group:
        query = query.where(Agent.group == group)
    if status:
        query = query.where(Agent.status == status.value)
    agents = list(session.scalars(query))
    protected = snapshots.statuses(session, agents, state.settings.snapshots, now=now)
    offline_after = timedelta(minutes=state.settings.fleet.offline_after_minutes)
    listed = [_with_problems(a, _with_protection(agent_public(a), protected[a.id]), offline_after, now) for a in agents]
    if protection:
        listed = [a for a in listed if a.protection in protection]
    return listing.having(listed, wanted)


@router.get("/agents/{agent_id}", summary="Show one agent (by id, a unique start of it, or host name)")
def show_agent(agent_id: str, account: CurrentAccount, session: ReadSession, state: State, now: Now) -> AgentPublic:
    agent = find_agent(session, agent_id)
    public = _with_protection(agent_public(agent), snapshots.statuses(session, [agent], state.settings.snapshots, now=now)[agent.id])
    return _with_problems(agent, public, timedelta(minutes=state.settings.fleet.offline_after_minutes), now)


def _with_problems(agent: Agent, public: AgentPublic, offline_after: timedelta, now) -> AgentPublic:
    return public.model_copy(update={"problems": listing.problems(agent, public, offline_after=offline_after, now=now)})


def _with_protection(public: AgentPublic, protection: ProtectionStatus) -> AgentPublic:
    return public.model_copy(update={"protection": ProtectionState(protection.state), "protection_words": protection.words,
                                     "last_snapshot_at": protection.last_snapshot_at})


# --- admins: decisions on agents ------------------------------------------------------


@router.post("/agents/{agent_id}/approve", summary="Approve a pending agent: it becomes a normal agent of its own")
def approve(agent_id: str, body: AgentDecision, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(approve_agent(session, actor, agent_id, reason=body.reason, now=now))


@router.post("/agents/{agent_id}/refuse", summary="Refuse a pending agent: it is revoked")
def refuse(agent_id: str, body: AgentDecision, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(refuse_agent(session, actor, agent_id, reason=body.reason, now=now))


@router.post("/agents/{agent_id}/revoke", summary="Revoke an agent: its credential stops working; its tickets and bundles stay")
def revoke(agent_id: str, body: AgentDecision, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(revoke_agent(session, actor, agent_id, reason=body.reason, now=now))


@router.post("/agents/{agent_id}/replace", summary="Make this (pending) agent the re-imaged PC of another: it takes over "
             "its tickets and reads its server-side snapshots; the old agent is retired")
def replace(agent_id: str, body: AgentReplace, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    new, _old = reimage.replace_agent(session, actor, agent_id, body.replaces, reason=body.reason, now=now)
    return agent_public(new)


@router.post("/agents/{agent_id}/retire", summary="Retire (decommission) an agent: its credential ends; its server-side "
             "data kept by retention, or deleted now")
def retire(agent_id: str, body: AgentRetire, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(reimage.retire_agent(session, actor, agent_id, reason=body.reason, delete_data=body.delete_data,
                                             now=now))


@router.post("/agents/{agent_id}/quarantine", summary="Quarantine an agent: its requests are refused until released")
def quarantine(agent_id: str, body: AgentDecision, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(reimage.quarantine_agent(session, actor, agent_id, reason=body.reason, now=now))


@router.post("/agents/{agent_id}/release", summary="Release a quarantined agent: it acts again")
def release(agent_id: str, body: AgentDecision, admin: AdminAccount, session: DbSession, actor: AccountActor, now: Now) -> AgentPublic:
    return agent_public(reimage.release_agent(session, actor, agent_id, reason=body.reason, now=now))


# --- the PC itself -------------------------------------------------------------------


@router.post("/agents/enroll", tags=["enrollment"], summary="Enroll a PC with a bootstrap token")
def enroll_agent(body: EnrollRequest, session: DbSession, state: State, ip: ClientIP, now: Now) -> AgentCredential:
    agent, credential = enroll(session, state.settings, Actor.anonymous(ip), body.token, body.identity, body.signature, now=now)
    return server_credential(state.signing_key, agent, credential)


@router.post("/pair", tags=["pairing"], summary="Link this PC to a ticket with a one-time pairing code")
def pair(body: PairRequest, session: DbSession, state: State, ip: ClientIP, agent: OptionalAgent, now: Now) -> PairResponse:
    done = pairing.pair_with_code(session, state.settings, ip, agent, body.code, body.identity, body.signature, now=now)
    return PairResponse(ticket=ticket_svc.to_agent_view(done.ticket),
                        agent=server_credential(state.signing_key, done.agent, done.credential))


@router.post("/self-service/tickets", status_code=201, tags=["pairing"], summary="Open a ticket from a PC and learn when an engineer will answer")
def self_service(body: SelfServiceRequest, session: DbSession, state: State, ip: ClientIP, agent: OptionalAgent, now: Now) -> SelfServiceResponse:
    settings = state.settings
    done = pairing.open_self_service_ticket(
        session, settings, ip, agent, title=body.title, description=body.description, requester=body.requester,
        identity=body.identity, signature=body.signature, now=now,
    )
    return SelfServiceResponse(
        ticket=ticket_svc.to_agent_view(done.ticket),
        agent=server_credential(state.signing_key, done.agent, done.credential) if done.credential else None,
        response_minutes=settings.response_policy.minutes_for(done.ticket.priority),
    )


@router.get("/agent/tickets", tags=["pairing"], summary="The tickets this PC is linked to, newest first")
def agent_tickets(agent: CurrentAgent, session: ReadSession) -> list[AgentTicket]:
    return [ticket_svc.to_agent_view(t) for t in pairing.linked_tickets(session, agent)]


@router.post("/agent/tickets/{number}/replies", status_code=201, tags=["pairing"],
             summary="Add the user's reply (and one small file) to a ticket this PC is linked to")
def reply(number: str, body: ReplyCreate, agent: CurrentAgent, session: DbSession, state: State, now: Now) -> AgentTicket:
    ticket = pairing.paired_ticket(session, agent, number)
    ticket_svc.refuse_if_closed(session, ticket, Actor.of_agent(agent), "ticket.reply.refused", "replies", now=now,
                                hint="Ask your support team to reopen it, or open a new ticket with `helpline request`.")
    received = replies.receive_file(state.blobs, ticket, body.attachment) if body.attachment else None
    try:
        replies.add_reply(session, ticket, agent, body.message, received, now=now)
    except BaseException:
        if received is not None:
            state.blobs.delete(received.blob_key)
        raise
    return ticket_svc.to_agent_view(ticket)


@router.get("/agent/tickets/{number}", tags=["pairing"], summary="One ticket this PC is linked to")
def agent_ticket(number: str, agent: CurrentAgent, session: ReadSession) -> AgentTicket:
    return ticket_svc.to_agent_view(pairing.paired_ticket(session, agent, number))


@router.post("/agent/hand-over", tags=["pairing"],
             summary="Take over the tickets of this PC's per-user identity (signed by both: the request and the statement)")
def hand_over(body: HandOverRequest, agent: CurrentAgent, session: DbSession, now: Now) -> HandOverResponse:
    return hand_over_tickets(session, agent, body, now=now)
