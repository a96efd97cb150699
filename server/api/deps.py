"""Request dependencies: the database session, the client address and the principal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.schemas import Role
from protocol.errors import AuthError, ForbiddenError
from server.agents import authenticate_agent
from server.audit import Actor
from server.models import Account, Agent, ApiToken
from server.refusals import roll_back
from server.security import TOKEN_PREFIX_AGENT, TOKEN_PREFIX_USER, token_digest
from server.runtime import ServerRuntime

AGENT_HINT = "Enroll or pair this PC first."

# Row ids in paths: bounded so that an absurd number is a 422, not a database overflow.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def get_state(request: Request) -> ServerRuntime:
    return request.app.state.helpline


State = Annotated[ServerRuntime, Depends(get_state)]


def get_session(state: State) -> Iterator[Session]:
    """Yield a session for one request; commit before the response is sent.

    A failed request is rolled back; only the traces its refusals kept (counted
    failures, audit events: :mod:`server.refusals`) are committed.
    """
    session = state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        roll_back(session)
        raise
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_session, scope="function")]


def current_time(state: State) -> datetime:
    """The time of this request, from the runtime's clock (tests move it)."""
    return state.clock()


Now = Annotated[datetime, Depends(current_time)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientIP = Annotated[str | None, Depends(client_ip)]

_bearer = HTTPBearer(auto_error=False, description="An API token (engineers, admins) or an agent credential.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None, *, hint: str = "Log in with `helpline login URL`.") -> str:
    """The token the request carries; AuthError (with ``hint``) if it carries none."""
    if credentials is None or not credentials.credentials:
        raise AuthError("This request needs a token.", hint=hint)
    return credentials.credentials


def current_account(session: DbSession, credentials: Bearer, now: Now) -> Account:
    token = bearer_token(credentials)
    if not token.startswith(TOKEN_PREFIX_USER):
        raise AuthError("This request needs an engineer's or admin's token.", hint="Log in with `helpline login URL`.")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        raise AuthError("Your token is not valid.", hint="Log in again with `helpline login URL`.")
    if row.expires_at <= now:
        raise AuthError("Your token has expired.", hint="Log in again with `helpline login URL`.")
    if row.account.disabled:
        raise AuthError("Your account is disabled.", hint="Ask an administrator.")
    row.last_used_at = now
    return row.account


CurrentAccount = Annotated[Account, Depends(current_account)]


def current_admin(account: CurrentAccount) -> Account:
    if account.role != Role.ADMIN.value:
        raise ForbiddenError("This needs the admin role.", hint="Ask an administrator to do it or to change your role.")
    return account


AdminAccount = Annotated[Account, Depends(current_admin)]


def current_agent(session: DbSession, credentials: Bearer, now: Now) -> Agent:
    token = bearer_token(credentials, hint=AGENT_HINT)
    if not token.startswith(TOKEN_PREFIX_AGENT):
        raise AuthError("This request needs this PC's agent credential.", hint=AGENT_HINT)
    return authenticate_agent(session, token, now=now)


CurrentAgent = Annotated[Agent, Depends(current_agent)]


def optional_agent(session: DbSession, credentials: Bearer, now: Now) -> Agent | None:
    """The calling agent if it sent a credential; None if it sent nothing."""
    if credentials is None:
        return None
    return current_agent(session, credentials, now)


OptionalAgent = Annotated[Agent | None, Depends(optional_agent)]


def account_actor(account: CurrentAccount, ip: ClientIP) -> Actor:
    return Actor.of_account(account, ip)


AccountActor = Annotated[Actor, Depends(account_actor)]
