"""Logging in and out: API tokens for engineers and admins, with failed attempts counted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import AuthError
from server import ratelimit
from server.audit import Actor, record
from server.models import Account, ApiToken
from server.refusals import refusal
from server.security import DUMMY_PASSWORD_HASH, TOKEN_PREFIX_USER, new_token, token_digest, verify_password
from server.settings import ServerSettings


@dataclass(frozen=True)
class Login:
    """A new API token (shown once) and the account it acts for."""

    token: str
    expires_at: datetime
    account: Account


def log_in(
    session: Session, settings: ServerSettings, ip: str | None, username: str, password: str, token_name: str,
    *, now: datetime,
) -> Login:
    """Exchange a username and password for an API token valid ``token_ttl_hours`` from ``now``.

    Raise AuthError for a wrong password, an unknown or a disabled account (the
    same answer for all three), counted per username and per address and audited
    as a kept trace; RetryAfter once either count is used up.
    """
    limits = settings.rate_limits
    window = limits.login_window_seconds
    username = username.lower()
    user_key, ip_key = f"login-user:{username}", f"login-ip:{ip}"
    ratelimit.check(session, user_key, limits.login_per_user, window, "login", now=now)
    ratelimit.check(session, ip_key, limits.login_per_ip, window, "login", now=now)
    account = session.scalar(select(Account).where(Account.username == username))
    ok = verify_password(password, account.password_hash if account else DUMMY_PASSWORD_HASH)
    if not ok or account is None or account.disabled:
        problem = AuthError("Wrong username or password.", hint="Check both and try again; repeated failures are locked out for a while.")
        raise refusal(session, problem, actor=Actor.anonymous(ip), action="auth.login_failed", target_type="account",
                      target_id=username[:64], counted=[(user_key, window), (ip_key, window)], now=now)
    token = new_token(TOKEN_PREFIX_USER)
    expires = now + timedelta(hours=settings.token_ttl_hours)
    session.add(ApiToken(account=account, token_hash=token_digest(token), name=token_name, created_at=now, expires_at=expires))
    record(session, Actor.of_account(account, ip), "auth.login", "account", account.username, token_name=token_name)
    return Login(token, expires, account)


def log_out(session: Session, actor: Actor, account: Account, token: str, *, now: datetime) -> None:
    """Revoke ``token`` (the one the request carries) at ``now``."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    row.revoked_at = now
    record(session, actor, "auth.logout", "account", account.username)
