"""Engineers' SSH public keys, which remote sessions will let in."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from sqlalchemy.orm import Session

from protocol.errors import ConflictError, InvalidInputError, NotFoundError
from protocol.schemas import SshKeyPublic
from server.audit import Actor, record
from server.models import Account, SshKey

SSH_KEY_TYPES = {
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}


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


def ssh_key_public(key: SshKey) -> SshKeyPublic:
    return SshKeyPublic(id=key.id, algorithm=key.algorithm, fingerprint=key.fingerprint, comment=key.comment,
                        created_at=key.created_at)


def add_ssh_key(session: Session, actor: Actor, account: Account, public_key: str, *, now: datetime) -> SshKey:
    """Add an OpenSSH public key line to ``account``; InvalidInputError if it is not one, ConflictError if it has it."""
    algorithm, fp, comment = parse_ssh_public_key(public_key)
    if any(k.fingerprint == fp for k in account.ssh_keys):
        raise ConflictError(f"You already have the key {fp}.")
    key = SshKey(account=account, algorithm=algorithm, public_key=public_key, fingerprint=fp, comment=comment, created_at=now)
    session.add(key)
    session.flush()
    record(session, actor, "ssh_key.add", "account", account.username, fingerprint=fp)
    return key


def remove_ssh_key(session: Session, actor: Actor, account: Account, key_id: int) -> None:
    """Remove ``account``'s key ``key_id``; NotFoundError if it has no such key."""
    key = session.get(SshKey, key_id)
    if key is None or key.account_id != account.id:
        raise NotFoundError(f"You have no SSH key with id {key_id}.")
    session.delete(key)
    record(session, actor, "ssh_key.remove", "account", account.username, fingerprint=key.fingerprint)
