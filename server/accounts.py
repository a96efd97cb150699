"""Engineer and admin accounts (their SSH public keys are in :mod:`server.ssh_keys`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.schemas import AccountCreate, AccountPublic, AccountUpdate, Role, password_problem
from protocol.errors import Audience, AuthError, ConflictError, InvalidInputError, NotFoundError
from protocol.untrusted import shown
from server.api_tokens import end_account_tokens
from server.audit import Actor, record
from server.db import end_reads, utcnow
from server.models import Account
from server.refusals import refusal
from server.security import hash_password, verify_password

_PASSWORD_HINT = "Use a passphrase of a few unrelated words, at least 12 characters."


def check_new_password(password: str, username: str) -> None:
    """Raise InvalidInputError, in plain English, if ``password`` is too weak for ``username`` (see password_problem)."""
    problem = password_problem(password, username)
    if problem is not None:
        raise InvalidInputError(problem, hint=_PASSWORD_HINT)


def account_public(account: Account) -> AccountPublic:
    return AccountPublic(
        username=account.username, display_name=account.display_name, email=account.email,
        organisation=account.organisation, role=Role(account.role), disabled=account.disabled,
        created_at=account.created_at,
    )


def get_account(session: Session, username: str) -> Account:
    account = session.scalar(select(Account).where(Account.username == username.lower()))
    if account is None:
        raise NotFoundError(f"There is no account {shown(username)}.", hint="Check the username.", hints={
            Audience.ENGINEER: "Check the username; an admin can list the accounts.",
            Audience.ADMIN: "List accounts with `helpline account list`.",
        })
    return account


def create_account(session: Session, actor: Actor, data: AccountCreate) -> Account:
    if session.scalar(select(Account.id).where(Account.username == data.username)) is not None:
        raise ConflictError(f"The account '{data.username}' already exists.")
    check_new_password(data.password, data.username)
    end_reads(session)  # scrypt below holds no connection or lock (server.db.end_reads)
    password_hash = hash_password(data.password)
    account = Account(
        username=data.username, display_name=data.display_name or data.username, email=data.email,
        organisation=data.organisation, role=data.role.value, password_hash=password_hash,
        disabled=False, created_at=utcnow(),
    )
    session.add(account)
    session.flush()
    record(session, actor, "account.create", "account", account.username, role=account.role)
    return account


def update_account(session: Session, actor: Actor, account: Account, data: AccountUpdate, *, now: datetime) -> Account:
    """Apply an admin's changes to ``account`` at ``now``.

    A password reset or disabling the account ends all its tokens (revoked, so
    enabling it again brings none back).
    """
    new_hash = None
    if data.password is not None:
        check_new_password(data.password, account.username)
        end_reads(session)  # scrypt below holds no connection or lock (server.db.end_reads)
        new_hash = hash_password(data.password)
    changed = []
    for field in ("role", "disabled", "display_name", "email", "organisation"):
        value = getattr(data, field)
        if value is not None:
            setattr(account, field, value.value if isinstance(value, Role) else value)
            changed.append(field)
    if new_hash is not None:
        account.password_hash = new_hash
        changed.append("password")
    record(session, actor, "account.update", "account", account.username, fields=changed)
    if new_hash is not None:
        end_account_tokens(session, actor, account, "password-reset", now=now)
    elif data.disabled:
        end_account_tokens(session, actor, account, "disabled", now=now)
    return account


def change_own_password(session: Session, actor: Actor, account: Account, current: str, new: str, *, now: datetime,
                        keep_token: int | None) -> int:
    """Change ``account``'s password at ``now``, proven by ``current``; end its other tokens and return how many.

    The token the request carries (``keep_token``) stays valid, so the person
    who changed it stays logged in where they did. Raise AuthError (audited) if
    ``current`` is wrong, InvalidInputError if ``new`` is too weak.
    """
    check_new_password(new, account.username)
    end_reads(session)  # scrypt below holds no connection or lock (server.db.end_reads)
    if not verify_password(current, account.password_hash):
        problem = AuthError("Your current password is not right.", hint="Type the password you log in with now.")
        raise refusal(session, problem, actor=actor, action="account.password_change_refused", target_type="account",
                      target_id=account.username, now=now)
    if verify_password(new, account.password_hash):
        raise InvalidInputError("The new password is the same as the current one.", hint=_PASSWORD_HINT)
    new_hash = hash_password(new)
    account.password_hash = new_hash
    record(session, actor, "account.password_change", "account", account.username)
    return end_account_tokens(session, actor, account, "password-change", now=now, keep=keep_token)
