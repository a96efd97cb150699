"""Logging in and out: API tokens for engineers and admins, with failed attempts counted.

A login has three phases so that the slow part holds nothing of the database:
:func:`start_login` counts the attempt and reads the password hash in one
short write, :func:`password_matches` runs scrypt with no session at all, and
:func:`finish_login` records the outcome (a token, giving the counts back, or
the failure's audit event) in another. The API runs each phase on its own
(server.api.auth); :func:`log_in` chains them on one session for other callers.

Wrong passwords are limited so that brute force stays bounded and nobody can
keep an owner out: a count that refuses belongs to one address (for one
username, or for all); the count over all addresses for a username only slows
the addresses that have failed before, to one attempt every few seconds. The
right password from an address without failures is always checked, and so
always accepted. See docs/threat-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import times
from protocol.errors import AuthError
from server import ratelimit
from server.audit import Actor, record
from server.models import Account, ApiToken
from server.ratelimit import RetryAfter
from server.refusals import rate_limited, refusal
from server.security import DUMMY_PASSWORD_HASH, TOKEN_PREFIX_USER, new_token, token_digest, verify_password
from server.settings import ServerSettings


@dataclass(frozen=True)
class Login:
    """A new API token (shown once) and the account it acts for."""

    token: str
    expires_at: datetime
    account: Account


@dataclass(frozen=True)
class LoginAttempt:
    """What the first phase of a login found: who asks for which username, and the hash to check against.

    ``counted`` are the rate-limit keys (with window seconds) the attempt was counted against until it succeeds.
    """

    username: str
    ip: str | None
    account_id: int | None
    stored_hash: str
    counted: tuple[tuple[str, int], ...]


def start_login(session: Session, settings: ServerSettings, ip: str | None, username: str, *, now: datetime) -> LoginAttempt:
    """Count the attempt for ``username`` from ``ip`` as a failure until it succeeds, and read the password hash.

    The attempt is counted first, in one short write (``session`` must be a write
    session, committed before the password is checked), so that however many
    attempts arrive at once each is checked against the ones before it; a
    login that succeeds gives its counts back. RetryAfter, with nothing
    counted, when refused outright (an address with ``login_per_user_address``
    wrong passwords for this username, or ``login_per_address`` for any) or
    slowed (once a username has ``login_per_user_free`` wrong passwords in the
    window, addresses that failed for it before, or in an IPv6 /48 that did
    often, get one attempt per ``login_user_slow_seconds`` between them).
    Unknown usernames go the same way.
    """
    limits = settings.rate_limits
    window, slow = limits.login_window_seconds, limits.login_user_slow_seconds
    username = username.lower()
    source = ratelimit.source_of(ip)
    user_address_key = f"login-ua:{username}:{source.address}"
    address_key = f"login-addr:{source.address}"
    network_key = f"login-un:{username}:{source.network}" if source.network else None
    user_key, slow_key = f"login-user:{username}", f"login-slow:{username}"
    actor = Actor.anonymous(ip)

    def refuse(message: str, key: str, key_window: int, hint: str | None = None) -> RetryAfter:
        wait = ratelimit.seconds_left(session, key, key_window, now=now)
        problem = RetryAfter(message, wait, hint=hint.format(wait=times.duration(wait)) if hint else None)
        return rate_limited(session, problem, actor=actor, action="auth.login_rate_limited", target_type="account",
                            target_id=username, key=key, window_seconds=key_window, now=now)

    tried_here = ratelimit.hit(session, user_address_key, window, now=now)
    if tried_here > limits.login_per_user_address:
        raise refuse("Too many failed login attempts for this username from this address.", user_address_key, window,
                     "Wait {wait}, or log in from another network.")
    if ratelimit.hit(session, address_key, window, now=now) > limits.login_per_address:
        raise refuse("Too many failed login attempts from this address.", address_key, window)
    counted = [(user_address_key, window), (address_key, window), (user_key, window)]
    failed_before = tried_here > 1
    if network_key is not None:
        counted.append((network_key, window))
        failed_before = failed_before or ratelimit.hit(session, network_key, window, now=now) - 1 >= limits.login_network_clean
    tried_for_user = ratelimit.hit(session, user_key, window, now=now)
    if failed_before and tried_for_user - 1 >= limits.login_per_user_free:
        counted.append((slow_key, slow))
        if ratelimit.hit(session, slow_key, slow, now=now) > 1:
            raise refuse("Too many failed login attempts for this username; this address failed before, so it waits its turn.",
                         slow_key, slow)
    account = session.scalar(select(Account).where(Account.username == username))
    stored = account.password_hash if account is not None else DUMMY_PASSWORD_HASH
    return LoginAttempt(username, ip, account.id if account is not None else None, stored, tuple(counted))


def password_matches(attempt: LoginAttempt, password: str) -> bool:
    """Whether ``password`` matches the hash the read phase found: the slow part, with no session.

    An unknown username is checked against a dummy hash, so it takes as long.
    """
    return verify_password(password, attempt.stored_hash)


def finish_login(
    session: Session, settings: ServerSettings, attempt: LoginAttempt, matched: bool, token_name: str, *, now: datetime,
) -> Login:
    """Record the outcome of ``attempt``: a token valid ``token_ttl_hours`` from ``now``, or a refusal.

    Raise AuthError for a wrong password, an unknown or a disabled account (the
    same answer for all three, audited as a kept trace; :func:`start_login`
    counted it already). A success gives back what start_login counted. A
    password changed since start_login counts as wrong: the check was against the old one.
    """
    account = session.get(Account, attempt.account_id) if attempt.account_id is not None else None
    if not matched or account is None or account.disabled or account.password_hash != attempt.stored_hash:
        problem = AuthError("Wrong username or password.",
                            hint="Check both and try again; repeated failures from one address are paused for a while.")
        raise refusal(session, problem, actor=Actor.anonymous(attempt.ip), action="auth.login_failed", target_type="account",
                      target_id=attempt.username[:64], now=now)
    for key, window_seconds in attempt.counted:
        ratelimit.give_back(session, key, window_seconds, now=now)
    token = new_token(TOKEN_PREFIX_USER)
    expires = now + timedelta(hours=settings.token_ttl_hours)
    session.add(ApiToken(account=account, token_hash=token_digest(token), name=token_name, created_at=now, expires_at=expires))
    record(session, Actor.of_account(account, attempt.ip), "auth.login", "account", account.username, token_name=token_name)
    return Login(token, expires, account)


def log_in(
    session: Session, settings: ServerSettings, ip: str | None, username: str, password: str, token_name: str,
    *, now: datetime,
) -> Login:
    """Exchange a username and password for an API token, all three phases on ``session`` (a write session).

    The first phase is committed before the password is checked, so hashing
    holds no connection, transaction or lock. Raise AuthError or RetryAfter as
    :func:`start_login` and :func:`finish_login` do.
    """
    attempt = start_login(session, settings, ip, username, now=now)
    session.commit()
    return finish_login(session, settings, attempt, password_matches(attempt, password), token_name, now=now)


def log_out(session: Session, actor: Actor, account: Account, token: str, *, now: datetime) -> None:
    """Revoke ``token`` (the one the request carries) at ``now``."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    row.revoked_at = now
    record(session, actor, "auth.logout", "account", account.username)
