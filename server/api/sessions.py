"""Remote sessions: the PC's offer, events, consent and relay passes (signed agent requests), and the
engineer's grants, chat, end and recordings (bearer login).

Long-polls (the PC's events, a grant's answer, the engineer's chat) hold no
request slot or database connection while they wait: they read in short
phases and sleep on the doorbell for the session in between (rings of other
server processes arrive through server.bus), reading again at least every
POLL_SECONDS when the doorbell may miss rings (ServerRuntime.look_every), else
every TIMED_LOOK_SECONDS for what time alone changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from protocol.agent_requests import CONTENT_HEADER
from protocol.errors import Audience, ForbiddenError, InvalidInputError, NotFoundError, TooLargeError
from protocol.sessions import (
    MAX_WAIT_SECONDS,
    ChatEntry,
    ChatMessage,
    ConsentAnswer,
    GrantIssued,
    GrantRequest,
    RelaySide,
    RelayTicket,
    ScopeChange,
    SessionEnd,
    SessionEvent,
    SessionOffer,
    SessionPublic,
    SessionState,
)
from protocol.schemas import StatusMessage
from server import agent_requests
from server import sessions as svc
from server.agents import authenticate_agent
from server.api.deps import (
    AccountActor,
    Bearer,
    ClientIP,
    CurrentAccount,
    CurrentAgent,
    DbSession,
    Now,
    ReadSession,
    State,
    current_account,
    in_session,
)
from server.audit import Actor
from server.db import transaction
from server.refusals import refusal
from server.doorbell import Doorbell

#: How often a waiting long-poll reads the database anyway when the doorbell may miss another process's ring.
POLL_SECONDS = 1.0
#: How often it reads anyway when the doorbell hears every ring: what time alone changes (a consent window or an
#: offer running out, a PC gone silent) rings no bell. Session polls are few (one per offer or connect).
TIMED_LOOK_SECONDS = 5.0
from server.relay.hub import end_key, relay_hub
from server.runtime import ServerRuntime

router = APIRouter(prefix="/v1", tags=["sessions"])

SessionId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
GrantId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
After = Annotated[int, Query(ge=0, le=2**31 - 1, description="Only what came after this sequence number.")]
Wait = Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for something new.")]
T = TypeVar("T")
RECORDING_TYPE = "application/x-asciicast"
RECORDING_UPLOAD_TYPES = (RECORDING_TYPE, "application/octet-stream")  # the body is checked as asciicast either way


def doorbells(request: Request) -> Doorbell:
    return relay_hub(request.app).doorbells


def relay_url(request: Request, ip: str | None) -> str:
    """The relay's address as this request reached the server (ws:// for http, wss:// for https)."""
    scheme = request.url.scheme
    peer = request.client.host if request.client else None
    if ip != peer and request.headers.get("x-forwarded-proto") == "https":  # a trusted proxy terminated TLS
        scheme = "https"
    base = str(request.base_url).rstrip("/")
    return ("wss" if scheme == "https" else "ws") + base[len(request.url.scheme):] + "/v1/relay"


async def long_poll(request: Request, key: str, wait: int, first: Callable[[Session], T], again: Callable[[Session], T],
                    ready: Callable[[T], bool], *, first_writes: bool = False) -> T:
    """Run ``first``, then ``again`` (reads) whenever rung or every POLL_SECONDS, until ``ready`` or ``wait`` is over."""
    state: ServerRuntime = request.app.state.helpline
    bells = doorbells(request)
    deadline = time.monotonic() + wait
    with bells.listening(key) as bell:
        result = await in_session(state, first, writes=first_writes)
        while not ready(result) and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(bell.wait(), min(state.look_every(POLL_SECONDS), TIMED_LOOK_SECONDS, left))
            except TimeoutError:
                pass
            bell.clear()
            if await request.is_disconnected():
                break
            result = await in_session(state, again, writes=False)
    return result


async def signed_agent_id(request: Request, state: ServerRuntime, ip: str | None) -> str:
    """The id of the agent that signed this body-less request (refused and audited otherwise)."""
    return await run_in_threadpool(
        agent_requests.verify_agent_request, state.sessions, agent_requests.header_map(request.scope),
        method=request.method, target=agent_requests.request_target(request.scope),
        content_sha256=agent_requests.body_sha256(b""), ip=ip, now=state.clock())


def ring_later(tasks: BackgroundTasks, request: Request, *keys: str) -> None:
    """Ring these doorbells once the request's transaction has committed."""
    for key in keys:
        tasks.add_task(doorbells(request).ring, key)


# --- the PC ------------------------------------------------------------------------------------


@router.post("/agent/sessions", status_code=201, summary="Offer a remote session on a ticket this PC is linked to")
def offer(body: SessionOffer, agent: CurrentAgent, session: DbSession, now: Now) -> SessionPublic:
    return svc.session_public(svc.offer(session, agent, body, now=now), now)


@router.get("/agent/sessions/{session_id}/events", summary="Wait for what happens to this PC's session (long-poll)")
async def events(session_id: SessionId, request: Request, state: State, ip: ClientIP, after: After = 0,
                 wait: Wait = 0) -> list[SessionEvent]:
    agent_id = await signed_agent_id(request, state, ip)

    def first(session: Session) -> list[SessionEvent]:
        now = state.clock()
        agent = authenticate_agent(session, agent_id, now=now)
        row = svc.agent_session(session, agent, session_id)
        svc.keep_alive(row, now=now)
        svc.settle(session, row, now=now)
        return svc.events_after(session, row, after)

    def again(session: Session) -> list[SessionEvent]:
        agent = authenticate_agent(session, agent_id, now=state.clock())
        return svc.events_after(session, svc.agent_session(session, agent, session_id), after)

    return await long_poll(request, session_id, wait, first, again, bool, first_writes=True)


@router.post("/agent/sessions/{session_id}/answer", summary="The user's answer to an engineer's request: a relay pass if approved")
def answer(session_id: SessionId, body: ConsentAnswer, agent: CurrentAgent, session: DbSession, state: State,
           request: Request, ip: ClientIP, tasks: BackgroundTasks, now: Now) -> RelayTicket | StatusMessage:
    row = svc.agent_session(session, agent, session_id)
    approved = svc.answer(session, agent, row, body.grant_id, body.approved, body.reason, now=now)
    ring_later(tasks, request, session_id)
    if not approved:
        return StatusMessage(status="refused")
    token, expires = svc.issue_relay_token(session, state.settings, row, RelaySide.PC, agent.id, now=now)
    return RelayTicket(url=relay_url(request, ip), token=token, expires_at=expires, side=RelaySide.PC)


@router.post("/agent/sessions/{session_id}/relay", summary="A fresh relay pass for this PC's approved session")
def pc_relay(session_id: SessionId, agent: CurrentAgent, session: DbSession, state: State, request: Request,
             ip: ClientIP, now: Now) -> RelayTicket:
    row = svc.agent_session(session, agent, session_id)
    token, expires = svc.issue_relay_token(session, state.settings, row, RelaySide.PC, agent.id, now=now)
    return RelayTicket(url=relay_url(request, ip), token=token, expires_at=expires, side=RelaySide.PC)


@router.post("/agent/sessions/{session_id}/chat", status_code=201, summary="The user's chat message to the engineer")
def pc_chat(session_id: SessionId, body: ChatMessage, agent: CurrentAgent, session: DbSession, request: Request,
            tasks: BackgroundTasks, now: Now) -> ChatEntry:
    entry = svc.user_chat(session, agent, svc.agent_session(session, agent, session_id), body.text, now=now)
    ring_later(tasks, request, session_id)
    return entry


@router.post("/agent/sessions/{session_id}/scopes", summary="The scopes left after the user took some back")
def scopes(session_id: SessionId, body: ScopeChange, agent: CurrentAgent, session: DbSession, request: Request,
           tasks: BackgroundTasks, now: Now) -> SessionPublic:
    row = svc.change_scopes(session, agent, svc.agent_session(session, agent, session_id), body, now=now)
    ring_later(tasks, request, session_id)
    return svc.session_public(row, now)


@router.post("/agent/sessions/{session_id}/end", summary="End this PC's session (or withdraw its offer)")
def pc_end(session_id: SessionId, body: SessionEnd, agent: CurrentAgent, session: DbSession, request: Request,
           tasks: BackgroundTasks, now: Now) -> SessionPublic:
    row = svc.agent_session(session, agent, session_id)
    svc.end(session, row, Actor.of_agent(agent), body.reason, bytes_to_pc=body.bytes_to_pc,
            bytes_from_pc=body.bytes_from_pc, now=now)
    ring_later(tasks, request, session_id, end_key(session_id))
    return svc.session_public(row, now)


@router.put(
    "/agent/sessions/{session_id}/recording", summary="Attach the session's recording (asciicast v2) to its ticket",
    openapi_extra={"requestBody": {"required": True, "content": {
        kind: {"schema": {"type": "string", "format": "binary"}} for kind in RECORDING_UPLOAD_TYPES}}},
)
async def put_recording(session_id: SessionId, request: Request, state: State, ip: ClientIP) -> SessionPublic:
    declared = request.headers.get("content-length")
    target = agent_requests.request_target(request.scope)
    headers = agent_requests.header_map(request.scope)
    if headers.get("content-type", "").split(";")[0].strip().lower() not in RECORDING_UPLOAD_TYPES:
        raise InvalidInputError(f"A recording is sent as {RECORDING_TYPE}.")

    def authorize() -> tuple[str, int, str]:
        # The signature covers the body's declared digest; the body is checked against it as it arrives.
        now = state.clock()
        agent_id = agent_requests.verify_agent_request(state.sessions, headers, method="PUT", target=target,
                                                       content_sha256=None, ip=ip, now=now)
        with transaction(state.sessions) as session:
            agent = authenticate_agent(session, agent_id, now=now)
            row = svc.agent_session(session, agent, session_id)
            cap = svc.check_recording(state.settings, row, int(declared) if declared and declared.isdigit() else None)
            return agent_id, cap, svc.recording_key(row)

    agent_id, cap, key = await run_in_threadpool(authorize)
    data = bytearray()
    received = hashlib.sha256()
    async for block in request.stream():
        data += block
        received.update(block)
        if len(data) > cap:
            raise TooLargeError(f"The recording is over the server's limit of {cap} bytes.")
    if received.hexdigest() != headers.get(CONTENT_HEADER.lower(), "").lower():
        raise await run_in_threadpool(lambda: agent_requests.refuse_altered_body(
            state.sessions, agent_id, method="PUT", target=target, ip=ip, now=state.clock()))
    svc.check_asciicast(bytes(data[:4096]))

    def store() -> SessionPublic:
        # The blob is written before the transaction that attaches it, so no database lock waits on the disk.
        info = state.blobs.put(key, bytes(data), size_hint=len(data))
        try:
            with transaction(state.sessions) as session:
                now = state.clock()
                agent = authenticate_agent(session, agent_id, now=now)
                row = svc.agent_session(session, agent, session_id)
                svc.check_recording(state.settings, row, len(data))
                svc.attach_recording(session, agent, row, key, info.size, received.hexdigest(), now=now)
                return svc.session_public(row, now)
        except BaseException:
            state.blobs.delete(key)
            raise

    return await run_in_threadpool(store)


# --- engineers -----------------------------------------------------------------------------------


@router.get("/sessions", summary="Remote sessions, newest first, optionally of one ticket and in one state")
def list_sessions(account: CurrentAccount, session: ReadSession, now: Now, ticket: str | None = None,
                  state: SessionState | None = None) -> list[SessionPublic]:
    return svc.list_sessions(session, ticket=ticket, state=state, now=now)


@router.get("/sessions/{session_id}", summary="One remote session")
def show(session_id: SessionId, account: CurrentAccount, session: ReadSession, now: Now) -> SessionPublic:
    return svc.session_public(svc.find_session(session, session_id), now)


@router.post("/sessions/{session_id}/grants", status_code=201,
             summary="Ask to connect: the server signs a grant for one of your SSH keys and asks the user",
             responses={429: {"description": "Too many requests by this engineer this hour"}})
def request_grant(session_id: SessionId, body: GrantRequest, account: CurrentAccount, session: DbSession, state: State,
                  actor: AccountActor, request: Request, tasks: BackgroundTasks, now: Now) -> GrantIssued:
    row = svc.find_session(session, session_id)
    issued = svc.issue_grant(session, state.settings, state.signing_key, account, actor, row, body, now=now)
    ring_later(tasks, request, session_id)
    return issued


@router.get("/sessions/{session_id}/grants/{grant_id}", summary="Wait for the user's answer to your request (long-poll)")
async def grant_status(session_id: SessionId, grant_id: GrantId, request: Request, state: State, credentials: Bearer,
                       wait: Wait = 0) -> SessionPublic:
    def first(session: Session) -> SessionPublic:
        now = state.clock()
        current_account(request, session, credentials, now)
        row = svc.find_session(session, session_id)
        if row.grant_id != grant_id:
            raise NotFoundError("This session has no such request.", hints={Audience.ENGINEER: "Ask again with `helpline connect`."})
        return svc.session_public(row, now)

    def again(session: Session) -> SessionPublic:
        return svc.session_public(svc.find_session(session, session_id), state.clock())

    def answered(public: SessionPublic) -> bool:
        return public.state != SessionState.REQUESTED or public.grant_id != grant_id

    return await long_poll(request, session_id, wait, first, again, answered)


@router.post("/sessions/{session_id}/relay", summary="Your relay pass for an approved session whose grant names you")
def engineer_relay(session_id: SessionId, account: CurrentAccount, session: DbSession, state: State, actor: AccountActor,
                   request: Request, ip: ClientIP, now: Now) -> RelayTicket:
    row = svc.find_session(session, session_id)
    if row.engineer_username != account.username:
        raise refusal(session, ForbiddenError("This session's grant names another engineer."),
                          actor=actor, action="session.relay_refused", target_type="ticket", target_id=row.ticket.label,
                          now=now, session_id=row.id, side=RelaySide.ENGINEER.value, reason="another engineer")
    token, expires = svc.issue_relay_token(session, state.settings, row, RelaySide.ENGINEER, account.username, now=now)
    return RelayTicket(url=relay_url(request, ip), token=token, expires_at=expires, side=RelaySide.ENGINEER)


@router.get("/sessions/{session_id}/chat", summary="The session's chat (long-poll for what comes after a sequence number)")
async def chat(session_id: SessionId, request: Request, state: State, credentials: Bearer, after: After = 0,
               wait: Wait = 0) -> list[ChatEntry]:
    def first(session: Session) -> list[ChatEntry]:
        current_account(request, session, credentials, state.clock())
        return svc.chat_after(session, svc.find_session(session, session_id), after)

    def again(session: Session) -> list[ChatEntry]:
        return svc.chat_after(session, svc.find_session(session, session_id), after)

    return await long_poll(request, session_id, wait, first, again, bool)


@router.post("/sessions/{session_id}/chat", status_code=201, summary="Send the user a chat message")
def post_chat(session_id: SessionId, body: ChatMessage, account: CurrentAccount, session: DbSession, request: Request,
              tasks: BackgroundTasks, now: Now) -> ChatEntry:
    entry = svc.engineer_chat(session, account, svc.find_session(session, session_id), body.text, now=now)
    ring_later(tasks, request, session_id)
    return entry


@router.post("/sessions/{session_id}/end", summary="End a session (the PC is told at once)")
def engineer_end(session_id: SessionId, body: SessionEnd, account: CurrentAccount, session: DbSession,
                 actor: AccountActor, request: Request, tasks: BackgroundTasks, now: Now) -> SessionPublic:
    row = svc.find_session(session, session_id)
    svc.end(session, row, actor, body.reason, bytes_to_pc=body.bytes_to_pc, bytes_from_pc=body.bytes_from_pc, now=now)
    ring_later(tasks, request, session_id, end_key(session_id))
    return svc.session_public(row, now)


@router.get("/sessions/{session_id}/recording", summary="Download a session's recording (asciicast v2; audited)",
            response_class=StreamingResponse, responses={200: {"content": {RECORDING_TYPE: {}}}})
def download_recording(session_id: SessionId, account: CurrentAccount, session: DbSession, state: State,
                       actor: AccountActor, now: Now) -> StreamingResponse:
    row = svc.recording_to_download(session, state.settings, account, actor, svc.find_session(session, session_id),
                                    now=now)
    stream = state.blobs.open(row.recording_key)

    def chunks():
        with stream:
            while block := stream.read(1 << 20):
                yield block

    return StreamingResponse(chunks(), media_type=RECORDING_TYPE, headers={
        "Content-Disposition": f'attachment; filename="{row.ticket.label}-session-{row.id[:8]}.cast"',
        "Content-Length": str(row.recording_size), "X-Content-SHA256": row.recording_sha256 or "",
    })
