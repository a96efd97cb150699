"""Snapshot records: what PCs report about their runs and sample restores, escrow, and protection for engineers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from protocol.schemas import StatusMessage
from protocol.snapshots import EscrowPut, ProtectionStatus, RequestId, SnapshotReport, VerifyReport
from server import escrow, snapshots
from server.api.deps import ClientIP, CurrentAccount, CurrentAgent, DbSession, Now, ReadSession, State
from server.audit import Actor
from server.identifiers import find_agent
from server.models import Protection

router = APIRouter(prefix="/v1", tags=["snapshots"])


# --- the PC itself ---------------------------------------------------------------------------


@router.post("/agent/snapshots/reports", summary="Report a snapshot run of this PC (successful or not)")
def report_snapshot(body: SnapshotReport, agent: CurrentAgent, session: DbSession, state: State, ip: ClientIP,
                    now: Now) -> StatusMessage:
    status = snapshots.record_run(session, state.settings.snapshots, agent, body, Actor.of_agent(agent, ip), now=now)
    return StatusMessage(status=status.state)


@router.post("/agent/snapshots/verifications", summary="Report a sample restore this PC checked by hash")
def report_verification(body: VerifyReport, agent: CurrentAgent, session: DbSession, state: State, ip: ClientIP,
                        now: Now) -> StatusMessage:
    status = snapshots.record_check(session, state.settings.snapshots, agent, body, Actor.of_agent(agent, ip), now=now)
    return StatusMessage(status=status.state)


@router.put("/agent/snapshots/escrow", summary="Escrow this PC's server-repository password (403 when escrow is off)")
def put_escrow(body: EscrowPut, agent: CurrentAgent, session: DbSession, state: State, ip: ClientIP,
               now: Now) -> StatusMessage:
    replaced = escrow.store_password(session, state.escrow.key, state.settings.snapshots, agent, body.password,
                                     Actor.of_agent(agent, ip), now=now)
    return StatusMessage(status="replaced" if replaced else "stored")


@router.get("/agent/snapshots/escrow", summary="The old PC's repository password, for a replacement restore naming this PC")
def get_escrow(request_id: Annotated[RequestId, Query(description="The replacement-restore request naming this PC.")],
               agent: CurrentAgent, session: DbSession, state: State, ip: ClientIP, now: Now) -> EscrowPut:
    password = escrow.release_password(session, state.escrow.key, state.settings.snapshots, agent, request_id,
                                       Actor.of_agent(agent, ip), now=now)
    return EscrowPut(password=password)


# --- engineers ------------------------------------------------------------------------------------


@router.get("/agents/{agent_id}/snapshots", summary="A PC's reported snapshot runs, newest first")
def agent_snapshots(agent_id: str, account: CurrentAccount, session: ReadSession,
                    limit: Annotated[int, Query(ge=1, le=snapshots.KEEP_PER_AGENT)] = snapshots.KEEP_PER_AGENT,
                    ) -> list[SnapshotReport]:
    return snapshots.runs(session, find_agent(session, agent_id), limit=limit)


@router.get("/agents/{agent_id}/protection", summary="Whether a PC is protected by snapshots, in plain words")
def agent_protection(agent_id: str, account: CurrentAccount, session: ReadSession, state: State, now: Now) -> ProtectionStatus:
    agent = find_agent(session, agent_id)
    return snapshots.protection_status(agent, session.get(Protection, agent.id), state.settings.snapshots, now=now)
