"""Engineer and admin accounts, and their SSH public keys."""

from __future__ import annotations

import base64
import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.schemas import AccountCreate, AccountPublic, AccountUpdate, Role
from protocol.errors import ConflictError, InvalidInputError, NotFoundError
from server.audit import Actor, record
from server.db import utcnow
from server.models import Account
from server.security import hash_password

SSH_KEY_TYPES = {
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}


def account_public(account: Account) -> AccountPublic:
    return AccountPublic(
        username=account.username, display_name=account.display_name, email=account.email,
        organisation=account.organisation, role=Role(account.role), disabled=account.disabled,
        created_at=account.created_at,
    )


def get_account(session: Session, username: str) -> Account:
    account = session.scalar(select(Account).where(Account.username == username.lower()))
    if account is None:
        raise NotFoundError(f"There is no account '{username}'.", hint="List accounts with `helpline account list`.")
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


def parse_ssh_public_key(line: str) -> tuple[str, str, str]:
    """Return (algorithm, SHA256 fingerprint, comment) of an OpenSSH public key line."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise InvalidInputError("That is not an OpenSSH public key.", hint="Paste the one line of your ~/.ssh/id_ed25519.pub.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise InvalidInputError("The key's base64 part is damaged.") from exc
    # The blob starts with the algorithm name as an SSH string; a mismatch means a mangled paste.
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")] != parts[0].encode():
        raise InvalidInputError("The key's type does not match its data.")
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return parts[0], fp, parts[2] if len(parts) > 2 else ""
