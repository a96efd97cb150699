"""Logging in and out, who am I, my password, my API tokens and my SSH public keys."""

from __future__ import annotations

from fastapi import APIRouter

from protocol.schemas import (
    AccountPublic,
    ApiTokenPublic,
    LoginRequest,
    LoginResponse,
    PasswordChange,
    PasswordChanged,
    SshKeyCreate,
    SshKeyPublic,
    StatusMessage,
)
from server import logins, ssh_keys
from server.accounts import account_public, change_own_password
from server.api_tokens import api_token_public, live_tokens, revoke_token, token_id_of
from server.api.deps import RowId, AccountActor, Bearer, ClientIP, CurrentAccount, DbSession, Now, ReadSession, State, in_session

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/login", summary="Exchange a username and password for an API token")
async def login(body: LoginRequest, state: State, ip: ClientIP, now: Now) -> LoginResponse:
    # Three phases, so that the password check (scrypt, slow on purpose) holds no database connection,
    # lock or request slot, and waits for one of the server's few password-check places instead.
    settings = state.settings
    attempt = await in_session(state, lambda s: logins.start_login(s, settings, ip, body.username, now=now), writes=True)
    matched = await state.password_checks.run(logins.password_matches, attempt, body.password)
    done = await in_session(
        state, lambda s: logins.finish_login(s, settings, attempt, matched, body.token_name, now=now), writes=True)
    return LoginResponse(token=done.token, expires_at=done.expires_at, account=account_public(done.account))


@router.post("/auth/logout", summary="Revoke the token this request carries")
def logout(account: CurrentAccount, session: DbSession, credentials: Bearer, actor: AccountActor, now: Now) -> StatusMessage:
    logins.log_out(session, actor, account, credentials.credentials, now=now)
    return StatusMessage(status="logged out")


@router.get("/me", summary="The account behind this token")
def me(account: CurrentAccount) -> AccountPublic:
    return account_public(account)


@router.post("/me/password", summary="Change my password; my other tokens end, this one stays")
def change_password(body: PasswordChange, account: CurrentAccount, session: DbSession, credentials: Bearer, actor: AccountActor,
                    now: Now) -> PasswordChanged:
    keep = token_id_of(session, credentials.credentials)
    ended = change_own_password(session, actor, account, body.current_password, body.new_password, now=now, keep_token=keep)
    return PasswordChanged(ended_tokens=ended)


@router.get("/me/tokens", summary="My API tokens that still work, oldest first (never their secret)")
def my_tokens(account: CurrentAccount, session: ReadSession, credentials: Bearer, now: Now) -> list[ApiTokenPublic]:
    current = token_id_of(session, credentials.credentials)
    return [api_token_public(t, current) for t in live_tokens(session, account, now=now)]


@router.delete("/tokens/{token_id}", summary="Revoke an API token (my own; an admin's, anyone's)")
def revoke(token_id: RowId, account: CurrentAccount, session: DbSession, credentials: Bearer, actor: AccountActor,
           now: Now) -> ApiTokenPublic:
    row = revoke_token(session, actor, account, token_id, now=now)
    return api_token_public(row, token_id_of(session, credentials.credentials))


@router.get("/me/ssh-keys", summary="My SSH public keys (used for remote sessions)")
def list_ssh_keys(account: CurrentAccount) -> list[SshKeyPublic]:
    return [ssh_keys.ssh_key_public(k) for k in account.ssh_keys]


@router.post("/me/ssh-keys", status_code=201, summary="Add an SSH public key")
def add_ssh_key(body: SshKeyCreate, account: CurrentAccount, session: DbSession, actor: AccountActor, now: Now) -> SshKeyPublic:
    return ssh_keys.ssh_key_public(ssh_keys.add_ssh_key(session, actor, account, body.public_key, now=now))


@router.delete("/me/ssh-keys/{key_id}", summary="Remove one of my SSH public keys")
def remove_ssh_key(key_id: RowId, account: CurrentAccount, session: DbSession, actor: AccountActor) -> StatusMessage:
    ssh_keys.remove_ssh_key(session, actor, account, key_id)
    return StatusMessage(status="removed")
