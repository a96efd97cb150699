"""Logging in and out, who am I, and my SSH public keys."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from protocol.schemas import AccountPublic, LoginRequest, LoginResponse, SshKeyCreate, SshKeyPublic, StatusMessage
from protocol.errors import AuthError, ConflictError, NotFoundError
from server import ratelimit
from server.accounts import account_public, parse_ssh_public_key
from server.api.deps import RowId, COMMIT_ON_ERROR, AccountActor, Bearer, ClientIP, CurrentAccount, DbSession, State
from server.audit import Actor, record
from server.db import utcnow
from server.models import Account, ApiToken, SshKey
from server.security import DUMMY_PASSWORD_HASH, TOKEN_PREFIX_USER, new_token, token_digest, verify_password

router = APIRouter(prefix="/v1", tags=["auth"])


@router.post("/auth/login", summary="Exchange a username and password for an API token")
def login(body: LoginRequest, session: DbSession, state: State, ip: ClientIP) -> LoginResponse:
    limits = state.settings.rate_limits
    user_key, ip_key = f"login-user:{body.username.lower()}", f"login-ip:{ip}"
    ratelimit.check(session, user_key, limits.login_per_user, limits.login_window_seconds, "login")
    ratelimit.check(session, ip_key, limits.login_per_ip, limits.login_window_seconds, "login")
    account = session.scalar(select(Account).where(Account.username == body.username.lower()))
    ok = verify_password(body.password, account.password_hash if account else DUMMY_PASSWORD_HASH)
    if not ok or account is None or account.disabled:
        ratelimit.hit(session, user_key, limits.login_window_seconds)
        ratelimit.hit(session, ip_key, limits.login_window_seconds)
        record(session, Actor.anonymous(ip), "auth.login_failed", "account", body.username.lower()[:64])
        session.info[COMMIT_ON_ERROR] = True
        raise AuthError("Wrong username or password.", hint="Check both and try again; repeated failures are locked out for a while.")
    token = new_token(TOKEN_PREFIX_USER)
    expires = utcnow() + timedelta(hours=state.settings.token_ttl_hours)
    session.add(ApiToken(account=account, token_hash=token_digest(token), name=body.token_name, created_at=utcnow(), expires_at=expires))
    record(session, Actor.of_account(account, ip), "auth.login", "account", account.username, token_name=body.token_name)
    return LoginResponse(token=token, expires_at=expires, account=account_public(account))


@router.post("/auth/logout", summary="Revoke the token this request carries")
def logout(account: CurrentAccount, session: DbSession, credentials: Bearer, actor: AccountActor) -> StatusMessage:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(credentials.credentials)))
    row.revoked_at = utcnow()
    record(session, actor, "auth.logout", "account", account.username)
    return StatusMessage(status="logged out")


@router.get("/me", summary="The account behind this token")
def me(account: CurrentAccount) -> AccountPublic:
    return account_public(account)


@router.get("/me/ssh-keys", summary="My SSH public keys (used for remote sessions)")
def list_ssh_keys(account: CurrentAccount) -> list[SshKeyPublic]:
    return [SshKeyPublic(id=k.id, algorithm=k.algorithm, fingerprint=k.fingerprint, comment=k.comment, created_at=k.created_at)
            for k in account.ssh_keys]


@router.post("/me/ssh-keys", status_code=201, summary="Add an SSH public key")
def add_ssh_key(body: SshKeyCreate, account: CurrentAccount, session: DbSession, actor: AccountActor) -> SshKeyPublic:
    algorithm, fp, comment = parse_ssh_public_key(body.public_key)
    if any(k.fingerprint == fp for k in account.ssh_keys):
        raise ConflictError(f"You already have the key {fp}.")
    key = SshKey(account=account, algorithm=algorithm, public_key=body.public_key, fingerprint=fp, comment=comment, created_at=utcnow())
    session.add(key)
    session.flush()
    record(session, actor, "ssh_key.add", "account", account.username, fingerprint=fp)
    return SshKeyPublic(id=key.id, algorithm=algorithm, fingerprint=fp, comment=comment, created_at=key.created_at)


@router.delete("/me/ssh-keys/{key_id}", summary="Remove one of my SSH public keys")
def remove_ssh_key(key_id: RowId, account: CurrentAccount, session: DbSession, actor: AccountActor) -> StatusMessage:
    key = session.get(SshKey, key_id)
    if key is None or key.account_id != account.id:
        raise NotFoundError(f"You have no SSH key with id {key_id}.")
    session.delete(key)
    record(session, actor, "ssh_key.remove", "account", account.username, fingerprint=key.fingerprint)
    return StatusMessage(status="removed")
