"""Request dependencies: the database session, the client address and the principal.

A route says what it does with the database by taking a :data:`ReadSession`
or a :data:`WriteSession` (see server.db for what each means). Every other
dependency of that request (the current account or agent) shares that one
session, through :data:`RequestSession`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.schemas import Role
from protocol.errors import Audience, AuthError, ForbiddenError
from server import agent_requests
from server.agents import authenticate_agent
from server.audit import Actor
from server.db import apply_touches, pending_touches, touch
from server.forwarding import client_address, parse_networks
from server.models import Account, Agent, ApiToken
from server.refusals import roll_back
from server.security import TOKEN_PREFIX_USER, token_digest
from server.runtime import ServerRuntime

AGENT_HINT = "Enroll or pair this PC first."
T = TypeVar("T")

# Row ids in paths: bounded so that an absurd number is a 422, not a database overflow.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def get_state(request: Request) -> ServerRuntime:
    return request.app.state.helpline


State = Annotated[ServerRuntime, Depends(get_state)]


# A token or credential's last-used time is written at most this often (a burst of requests writes nothing).
LAST_USED_INTERVAL = timedelta(seconds=60)


def _end_session(state: ServerRuntime, session: Session, succeeded: bool) -> None:
    """Commit a request that succeeded; roll back one that failed, keeping only its refusals' traces."""
    try:
        if succeeded:
            session.commit()
        else:
            roll_back(session, traces_to=state.sessions)
    finally:
        session.close()
    apply_touches(state.sessions, pending_touches(session))


async def get_session(request: Request, state: State) -> AsyncIterator[Session]:
    """Yield the request's one session, read or write as its route declares; commit before the response.

    The request first waits for one of the server's request slots, without a
    thread or a connection, so it never holds a connection while waiting for a
    worker thread that requests waiting for connections hold. A failed request
    is rolled back; only the traces its refusals kept (counted failures, audit
    events: :mod:`server.refusals`) are written, in a write transaction of their own.
    """
    async with _session_in_slot(state, writes=_route_writes(request)) as session:
        yield session


@asynccontextmanager
async def _session_in_slot(state: ServerRuntime, *, writes: bool) -> AsyncIterator[Session]:
    """A write or read session, inside one of the server's request slots, ended (committed or rolled back) on exit."""
    factory = state.sessions if writes else state.read_sessions
    async with state.request_slots.slot():
        session = factory()
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_end_session, state, session, False)
            raise
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end_session, state, session, True)


RequestSession = Annotated[Session, Depends(get_session, scope="function")]


async def in_session(state: ServerRuntime, work: Callable[[Session], T], *, writes: bool) -> T:
    """Run ``work`` in a session of its own, ended as a request's session is; return what it returns.

    For a route done in phases (logging in: read, check the password with no
    session, write), so its slow part holds neither a request slot nor a
    connection. The session is a write session if ``writes``, else a read one;
    a failure rolls back and keeps only its refusals' traces.
    """
    factory = state.sessions if writes else state.read_sessions
    async with state.request_slots.slot():
        # One trip to a worker thread for the work and the commit (or rollback): restic's REST
        # routes call this a few times per request, and each trip costs more than the work.
        # A worker thread runs to its end even if the request is cancelled, so the session always ends.
        return await run_in_threadpool(_work_and_end, state, factory(), work)


def _work_and_end(state: ServerRuntime, session: Session, work: Callable[[Session], T]) -> T:
    try:
        result = work(session)
    except BaseException:
        _end_session(state, session, False)
        raise
    _end_session(state, session, True)
    return result


async def get_read_session(session: RequestSession) -> Session:
    """The request's session, which only reads (no write lock on SQLite, writes refused)."""
    return session


async def get_write_session(session: RequestSession) -> Session:
    """The request's session, which may write (the write lock from its first write on SQLite)."""
    return session


ReadSession = Annotated[Session, Depends(get_read_session)]
WriteSession = Annotated[Session, Depends(get_write_session)]
DbSession = WriteSession  # the name routes used before sessions were split into read and write

_WRITES = "helpline_writes"  # attribute caching _route_writes on the route


def _route_writes(request: Request) -> bool:
    """Whether the matched route takes a WriteSession anywhere among its dependencies (cached on the route)."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return True
    writes = getattr(route, _WRITES, None)
    if writes is None:
        writes = _takes_write_session(route.dependant)
        setattr(route, _WRITES, writes)
    return writes


def _takes_write_session(dependant: Dependant) -> bool:
    return any(d.call is get_write_session or _takes_write_session(d) for d in dependant.dependencies)


def current_time(state: State) -> datetime:
    """The time of this request, from the runtime's clock (tests move it)."""
    return state.clock()


Now = Annotated[datetime, Depends(current_time)]


def client_ip(request: Request, state: State) -> str | None:
    """The client's address: the peer's, or behind a configured trusted proxy the one it forwarded (server.forwarding)."""
    peer = request.client.host if request.client else None
    trusted = parse_networks(tuple(state.settings.trusted_proxies))
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


ClientIP = Annotated[str | None, Depends(client_ip)]

_bearer = HTTPBearer(auto_error=False, description="An API token (engineers and admins; agents sign their requests instead).")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


LOGIN_HINT = "Log in with `helpline login` (add the server's URL the first time)."


def set_audience(request: Request, audience: Audience) -> None:
    """Note who is calling, so an error's hint names only what they can do (server.app picks it)."""
    request.state.audience = audience


def audience_of(request: Request) -> Audience | None:
    """Who made ``request``, as far as it authenticated: an engineer, an admin, or a PC's user."""
    return getattr(request.state, "audience", None)


def bearer_token(credentials: HTTPAuthorizationCredentials | None, *, hint: str = LOGIN_HINT) -> str:
    """The token the request carries; AuthError (with ``hint``) if it carries none."""
    if credentials is None or not credentials.credentials:
        raise AuthError("This request needs a token.", hint=hint)
    return credentials.credentials


def current_account(request: Request, session: RequestSession, credentials: Bearer, now: Now) -> Account:
    token = bearer_token(credentials)
    if not token.startswith(TOKEN_PREFIX_USER):
        raise AuthError("This request needs an engineer's or admin's token.", hint=LOGIN_HINT)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        raise AuthError("Your token is not valid.", hint="Log in again with `helpline login`.")
    if row.expires_at <= now:
        raise AuthError("Your token has expired.", hint="Log in again with `helpline login`.")
    set_audience(request, Audience.ADMIN if row.account.role == Role.ADMIN.value else Audience.ENGINEER)
    if row.account.disabled:
        raise AuthError("Your account is disabled.", hint="Ask an administrator.")
    touch(session, ApiToken.last_used_at, row.id, row.last_used_at, LAST_USED_INTERVAL, now=now)
    return row.account


CurrentAccount = Annotated[Account, Depends(current_account)]


def current_admin(account: CurrentAccount) -> Account:
    if account.role != Role.ADMIN.value:
        raise ForbiddenError("This needs the admin role.", hint="Ask an administrator to do it or to change your role.")
    return account


AdminAccount = Annotated[Account, Depends(current_admin)]


async def received_body_sha256(request: Request) -> str:
    """The SHA-256 of the request's body as received (already size-limited by the app), for signature checks."""
    return agent_requests.body_sha256(await request.body())


ReceivedBodySha256 = Annotated[str, Depends(received_body_sha256)]


def current_agent(session: RequestSession, request: Request, state: State, received: ReceivedBodySha256,
                  ip: ClientIP, now: Now) -> Agent:
    """The agent that signed this request with its key (server.agent_requests); AuthError, audited, otherwise."""
    set_audience(request, Audience.USER)  # only a PC signs as an agent
    agent_id = agent_requests.verify_agent_request(
        state.sessions, agent_requests.header_map(request.scope), method=request.method,
        target=agent_requests.request_target(request.scope), content_sha256=received, ip=ip, now=now,
    )
    return authenticate_agent(session, agent_id, now=now)


CurrentAgent = Annotated[Agent, Depends(current_agent)]


def optional_agent(session: RequestSession, request: Request, state: State, received: ReceivedBodySha256,
                   ip: ClientIP, now: Now) -> Agent | None:
    """The calling agent if the request is signed or carries a credential (which alone is refused); None if neither."""
    set_audience(request, Audience.USER)  # the caller is a PC either way
    headers = agent_requests.header_map(request.scope)
    if not agent_requests.is_signed(headers) and "authorization" not in headers:
        return None
    return current_agent(session, request, state, received, ip, now)


OptionalAgent = Annotated[Agent | None, Depends(optional_agent)]


def account_actor(account: CurrentAccount, ip: ClientIP) -> Actor:
    return Actor.of_account(account, ip)


AccountActor = Annotated[Actor, Depends(account_actor)]
