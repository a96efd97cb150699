"""Engineer -> PC requests: engineers make and follow them; the PC long-polls for its own and reports on them.

The two long polls (``GET /v1/agent/requests?wait=`` for a PC,
``GET /v1/agents/{agent}/requests/{id}?wait=`` for an engineer following one)
hold no database session, connection or request slot while they wait: they
authenticate in a short session, then look in short read sessions when the
doorbell rings (server.doorbell; rings of other server processes arrive through
server.bus). Besides, a waiting poll looks only every ``[bus] safety_look_seconds``
while the doorbell hears every ring, else every ``[snapshots] request_poll_seconds``
(ServerRuntime.look_every).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from protocol.pc_requests import FINAL_STATES, MAX_WAIT_SECONDS, PcRequestCreate, PcRequestPublic, PcRequestUpdate, SignedPcRequest
from server import agent_requests
from server import pc_requests as svc
from server.agents import authenticate_agent
from server.api.deps import (
    AccountActor,
    Bearer,
    ClientIP,
    CurrentAccount,
    CurrentAgent,
    Now,
    State,
    WriteSession,
    current_account,
    in_session,
)
from server.runtime import ServerRuntime

router = APIRouter(prefix="/v1", tags=["pc requests"])

T = TypeVar("T")
Wait = Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to hold the answer until there is news.")]
RequestId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{4,36}$")]


async def _until(state: ServerRuntime, bell: str, wait: int, look: Callable[[], T | None]) -> T | None:
    """``await look()`` until it returns something or ``wait`` seconds pass; look again whenever ``bell`` rings."""
    if wait == 0:
        return await look()
    with anyio.move_on_after(wait):
        with state.doorbell.listening(bell) as rung:
            while True:
                rung.clear()  # before the look: a ring during it makes the wait below return at once
                found = await look()
                if found is not None:
                    return found
                with anyio.move_on_after(state.look_every(state.settings.snapshots.request_poll_seconds)):
                    await rung.wait()
    return None


# --- engineers ----------------------------------------------------------------------------------


@router.post("/agents/{agent_id}/requests", status_code=201,
             summary="Ask a PC for a snapshot, a restore, diagnostics, a listing or a diff (signed for the PC)")
def create(agent_id: str, body: PcRequestCreate, account: CurrentAccount, session: WriteSession, state: State,
           actor: AccountActor, now: Now) -> PcRequestPublic:
    row = svc.create_request(session, state.settings, state.signing_key, actor, account, agent_id, body, now=now)
    session.flush()
    public = svc.to_public(row)
    session.info.setdefault("helpline.after_commit", []).append(svc.agent_bell(row.agent_id))
    _ring_after_commit(session, state)
    return public


@router.get("/agents/{agent_id}/requests", summary="A PC's requests, newest first")
async def list_requests(agent_id: str, account: CurrentAccount, request: Request, state: State, now: Now,
                        active: bool = False, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[PcRequestPublic]:
    def read(session: Session) -> tuple[list[PcRequestPublic], bool]:
        rows = svc.agent_requests(session, agent_id, active=active, limit=limit)
        return [svc.to_public(r) for r in rows], any(svc.is_due(r.state, r.expires_at, r.updated_at, now) for r in rows)

    found, due = await in_session(state, read, writes=False)
    if due:
        await in_session(state, lambda s: svc.sweep(s, now=now), writes=True)
        found, _ = await in_session(state, read, writes=False)
    return found


@router.get("/agents/{agent_id}/requests/{request_id}",
            summary="One request of a PC; with wait, held until it changes past the version seen")
async def show(agent_id: str, request_id: RequestId, request: Request, state: State, credentials: Bearer,
               wait: Wait = 0, seen: Annotated[int | None, Query(ge=0)] = None) -> PcRequestPublic:
    def authenticate(session: Session) -> PcRequestPublic:
        current_account(request, session, credentials, state.clock())
        return svc.to_public(svc.get_request(session, agent_id, request_id))

    first = await in_session(state, authenticate, writes=False)

    async def look() -> PcRequestPublic | None:
        now = state.clock()

        def read(session: Session) -> PcRequestPublic:
            return svc.to_public(svc.get_request(session, agent_id, first.id))

        current = await in_session(state, read, writes=False)
        if svc.is_due(current.state, current.expires_at, current.updated_at, now):
            await in_session(state, lambda s: svc.expire_if_due(s, svc.get_request(s, agent_id, first.id), now=now),
                             writes=True)
            current = await in_session(state, read, writes=False)
        if seen is None or current.version > seen or current.state in FINAL_STATES or wait == 0:
            return current
        return None

    found = await _until(state, svc.request_bell(first.id), wait, look)
    if found is None:  # nothing new while waiting: the request as it stands
        found = await in_session(state, lambda s: svc.to_public(svc.get_request(s, agent_id, first.id)), writes=False)
    return found


# --- the PC ------------------------------------------------------------------------------------------


@router.get("/agent/requests", summary="This PC's new requests (signed by the server), held up to wait seconds")
async def next_requests(request: Request, state: State, ip: ClientIP, wait: Wait = 0) -> list[SignedPcRequest]:
    headers = agent_requests.header_map(request.scope)
    target = agent_requests.request_target(request.scope)
    received = agent_requests.body_sha256(await request.body())

    def admit() -> str:
        return agent_requests.verify_agent_request(state.sessions, headers, method="GET", target=target,
                                                   content_sha256=received, ip=ip, now=state.clock(), admit=True)

    # One request slot, one worker-thread trip and one short write transaction for the signature check (its
    # nonce) and the agent's admission (its last-seen time, when due): a fleet's polls arriving together
    # queue for a slot, holding no thread or connection, instead of all taking threads and connections
    # and then waiting for the database's write lock twice each. Polls are admitted in at most half the
    # slots (state.poll_admissions), so the looks that deliver requests and engineers' calls find a slot.
    async with state.poll_admissions.slot(), state.request_slots.slot():
        agent_id = await run_in_threadpool(admit)

    async def look() -> list[SignedPcRequest] | None:
        now = state.clock()
        if not await in_session(state, lambda s: svc.has_queued(s, agent_id, now=now), writes=False):
            return None

        def take(session: Session) -> list[SignedPcRequest]:
            return svc.deliver(session, authenticate_agent(session, agent_id, now=now), now=now)

        with anyio.CancelScope(shield=True):  # taken and marked delivered means answered: the wait's end must not cut in
            taken = await in_session(state, take, writes=True)
        for item in taken:
            state.doorbell.ring(svc.request_bell(item.payload["id"]))
        return taken or None

    return await _until(state, svc.agent_bell(agent_id), wait, look) or []


@router.post("/agent/requests/{request_id}/update", summary="Report where one of this PC's requests stands")
def update(request_id: RequestId, body: PcRequestUpdate, agent: CurrentAgent, session: WriteSession, state: State,
           now: Now) -> PcRequestPublic:
    row = svc.report(session, agent, request_id, body, now=now)
    session.flush()
    public = svc.to_public(row)
    session.info.setdefault("helpline.after_commit", []).append(svc.request_bell(row.id))
    _ring_after_commit(session, state)
    return public


# --- helpers -------------------------------------------------------------------------------------------


def _ring_after_commit(session: Session, state: ServerRuntime) -> None:
    """Ring the bells noted on ``session`` once its transaction commits (a waiter must find the change)."""
    from sqlalchemy import event

    bells = session.info.get("helpline.after_commit")
    if not bells or session.info.get("helpline.bells_hooked"):
        return
    session.info["helpline.bells_hooked"] = True

    @event.listens_for(session, "after_commit", once=True)
    def _ring(committed: Session) -> None:
        for bell in committed.info.pop("helpline.after_commit", []):
            state.doorbell.ring(bell)
