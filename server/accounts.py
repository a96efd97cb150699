"""Engineer and admin accounts (their SSH public keys are in :mod:`server.ssh_keys`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.schemas import AccountCreate, AccountPublic, AccountUpdate, Role
from protocol.errors import Audience, ConflictError, NotFoundError
from server.audit import Actor, record
from server.db import utcnow
from server.models import Account
from server.security import hash_password


def account_public(account: Account) -> AccountPublic:
    return AccountPublic(
        username=account.username, display_name=account.display_name, email=account.email,
        organisation=account.organisation, role=Role(account.role), disabled=account.disabled,
        created_at=account.created_at,
    )


def get_account(session: Session, username: str) -> Account:
    account = session.scalar(select(Account).where(Account.username == username.lower()))
    if account is None:
        raise NotFoundError(f"There is no account '{username}'.", hint="Check the username.", hints={
            Audience.ENGINEER: "Check the username; an admin can list the accounts.",
            Audience.ADMIN: "List accounts with `helpline account list`.",
        })
    return account


def create_account(session: Session, actor: Actor, data: AccountCreate) -> Account:
    if session.scalar(select(Account.id).where(Account.username == data.username)) is not None:
        raise ConflictError(f"The account '{data.username}' already exists.")
    account = Account(
        username=data.username, display_name=data.display_name or data.username, email=data.email,
        organisation=data.organisation, role=data.role.value, password_hash=hash_password(data.password),
        disabled=False, created_at=utcnow(),
    )
    session.add(account)
    session.flush()
    record(session, actor, "account.create", "account", account.username, role=account.role)
    return account


def update_account(session: Session, actor: Actor, account: Account, data: AccountUpdate) -> Account:
    changed = []
    for field in ("role", "disabled", "display_name", "email", "organisation"):
        value = getattr(data, field)
        if value is not None:
            setattr(account, field, value.value if isinstance(value, Role) else value)
            changed.append(field)
    if data.password is not None:
        account.password_hash = hash_password(data.password)
        changed.append("password")
    record(session, actor, "account.update", "account", account.username, fields=changed)
    return account
