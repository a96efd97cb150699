"""Escrow of snapshot repository passwords: sealed at rest, released only for a replacement restore.

A PC's server-side restic repository is encrypted with a password only the PC
knows. With escrow on (``[snapshots] escrow``, the default), the PC hands that
password to the server over its signed channel so an engineer can restore its
files onto a replacement PC when it is gone, and so the server can read the
dates of the snapshots it stores (server.restic_rest.inspect). The server can
then read every escrowing PC's snapshots: admins are told so (README,
docs/threat-model.md) and can turn escrow off.

At rest a password is sealed by envelope encryption: a fresh data key encrypts
it (AES-256-GCM), and the server's escrow key encrypts the data key (AES-256-GCM).
Both seals are bound to the agent's id, so a row copied onto another agent does
not open. The escrow key is derived (HKDF-SHA256) from the server's Ed25519
signing key, which lives in its own file and never in the database: a stolen
database alone opens nothing, and there is no second secret to back up.
Rotating the signing key (server.keys) keeps the old key as retired, so the
passwords sealed before still open; new seals use the new key. Replacing the
key by hand (without a rotation) makes stored passwords unreadable (PCs escrow
again on their next run). Passwords never reach a log or an audit event.

Turning escrow off refuses new passwords (403) and the ``escrow-purge`` job
deletes the ones stored, each deletion audited: an admin who turns escrow off
means the server should no longer be able to read PCs' data.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from protocol.errors import ForbiddenError, HelplineError, NotFoundError
from server.audit import Actor, record
from server.blobs import BlobStore
from server.models import Agent, EscrowedPassword
from server.refusals import refusal
from server.restic_rest import hooks
from server.settings import SnapshotSettings

log = logging.getLogger("helpline.server.escrow")
E = TypeVar("E", bound=HelplineError)

_NONCE_BYTES = 12
_KEY_INFO = b"helpline snapshot escrow key v1"
_KEY_ID_INFO = b"helpline snapshot escrow key id v1"

ESCROW_OFF = "This server does not keep snapshot passwords (escrow is turned off)."
ESCROW_OFF_HINT = ("The PC keeps its repository password only locally; an administrator can turn escrow on "
                   "with `escrow = true` under [snapshots] in server.toml.")

#: ``Session.info`` key under which a runtime's sessions carry its :class:`EscrowContext` (server.runtime),
#: for callers that hold only a session (the server's prune job, the snapshot upload check).
SESSION_INFO = "helpline.escrow"


@dataclass(frozen=True)
class EscrowContext:
    """What work on escrowed passwords needs: the key, whether escrow is on, and the blobs holding the repositories."""

    key: EscrowKey
    settings: SnapshotSettings
    blobs: BlobStore


class EscrowKey:
    """The server's escrow key, derived from its signing key; seals and opens repository passwords.

    ``retired`` are signing keys the server used before a rotation (server.keys):
    passwords sealed with a key derived from one of them still open, and new
    seals always use the current key.
    """

    def __init__(self, signing_key: Ed25519PrivateKey, retired: Iterable[Ed25519PrivateKey] = (),
                 before_use: Callable[[], None] = lambda: None):
        #: Called before each use: the key ring (server.keys) re-reads its files there if another process rotated.
        self._before_use = before_use
        self._use(signing_key, retired)

    def _use(self, signing_key: Ed25519PrivateKey, retired: Iterable[Ed25519PrivateKey]) -> None:
        current_id, current = _derive(signing_key)
        known = dict(_derive(key) for key in retired)
        known[current_id] = current
        #: (current key id, key id -> key), replaced in one assignment so a reader never sees half of a change.
        self._state = (current_id, known)

    @property
    def key_id(self) -> str:
        """Names the current key without revealing it, so a seal made with another key is told apart from damage."""
        self._before_use()
        return self._state[0]

    def knows(self, key_id: str) -> bool:
        """Whether a seal made under ``key_id`` opens here (the current key or a retired one)."""
        self._before_use()
        return key_id in self._state[1]

    def __repr__(self) -> str:
        return f"EscrowKey({self.key_id})"

    def seal_with_id(self, agent_id: str, password: str) -> tuple[str, bytes, bytes]:
        """Return (key id, sealed data key, sealed password) for ``agent_id``'s ``password``, with the current key."""
        self._before_use()
        key_id, known = self._state
        data_key = AESGCM.generate_key(256)
        sealed_key = _seal(known[key_id], data_key, _bound(agent_id, b"data key"))
        sealed_password = _seal(data_key, password.encode("utf-8"), _bound(agent_id, b"password"))
        return key_id, sealed_key, sealed_password

    def seal(self, agent_id: str, password: str) -> tuple[bytes, bytes]:
        """Return (sealed data key, sealed password) for ``agent_id``'s ``password``."""
        return self.seal_with_id(agent_id, password)[1:]

    def open(self, agent_id: str, sealed_key: bytes, sealed_password: bytes, key_id: str | None = None) -> str:
        """Return the password sealed for ``agent_id`` (under ``key_id``, default the current key); ValueError if
        the seals do not open with that key."""
        self._before_use()
        current_id, known = self._state
        key = known.get(key_id or current_id)
        if key is None:
            raise ValueError("the escrowed password was sealed with a key this server does not hold")
        try:
            data_key = _open(key, sealed_key, _bound(agent_id, b"data key"))
            return _open(data_key, sealed_password, _bound(agent_id, b"password")).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError) as exc:
            raise ValueError("the escrowed password does not open with this server's key") from exc


def _derive(signing_key: Ed25519PrivateKey) -> tuple[str, bytes]:
    """(key id, escrow key) derived from a signing key."""
    raw = signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    key = HKDF(hashes.SHA256(), 32, salt=None, info=_KEY_INFO).derive(raw)
    return HKDF(hashes.SHA256(), 16, salt=None, info=_KEY_ID_INFO).derive(raw).hex(), key


def _bound(agent_id: str, what: bytes) -> bytes:
    return b"helpline escrow\0" + agent_id.encode() + b"\0" + what


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)


def store_password(session: Session, key: EscrowKey, settings: SnapshotSettings, agent: Agent, password: str,
                   actor: Actor, *, now: datetime) -> bool:
    """Seal and keep ``agent``'s repository password (replacing one it sent before); True if it replaced one.

    Raise ForbiddenError (audited) when escrow is off. Audited as
    ``snapshot.escrow.stored``; no part of the password is recorded anywhere.
    """
    if not settings.escrow:
        raise refusal(session, ForbiddenError(ESCROW_OFF, hint=ESCROW_OFF_HINT), actor=actor,
                      action="snapshot.escrow.refused", target_type="agent", target_id=agent.id, now=now,
                      reason="escrow is off")
    key_id, sealed_key, sealed_password = key.seal_with_id(agent.id, password)
    replaced = session.get(EscrowedPassword, agent.id) is not None
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[session.get_bind().dialect.name]
    values = {"key_id": key_id, "sealed_key": sealed_key, "sealed_password": sealed_password, "updated_at": now}
    session.execute(insert(EscrowedPassword).values(agent_id=agent.id, created_at=now, **values)
                    .on_conflict_do_update(index_elements=[EscrowedPassword.agent_id], set_=values))
    record(session, actor, "snapshot.escrow.stored", "agent", agent.id, replaced=replaced)
    return replaced


def open_password(session: Session, key: EscrowKey, agent_id: str) -> str | None:
    """``agent_id``'s escrowed password, or None if none is stored or it was sealed with another server key."""
    row = session.get(EscrowedPassword, agent_id)
    if row is None:
        return None
    if not key.knows(row.key_id):
        log.warning("the escrowed password of agent %s was sealed with another server key; it waits for the PC "
                    "to escrow it again", agent_id)
        return None
    try:
        return key.open(agent_id, row.sealed_key, row.sealed_password, row.key_id)
    except ValueError:
        log.warning("the escrowed password of agent %s does not open (damaged); it waits for the PC to escrow it "
                    "again", agent_id)
        return None


def session_escrow(session: Session) -> EscrowContext | None:
    """The escrow context the session's runtime put in ``session.info`` (None outside a runtime)."""
    return session.info.get(SESSION_INFO)


def escrowed_password(session: Session, agent_id: str) -> str | None:
    """The repository password ``agent_id`` escrowed, for the server's own work on its repository (prune).

    None when escrow is off, when the PC escrowed nothing, or when the seal was
    made with another server key. Uses the key the session's runtime carries.
    """
    escrow = session_escrow(session)
    if escrow is None or not escrow.settings.escrow:
        return None
    return open_password(session, escrow.key, agent_id)


def escrow_release_allowed(session: Session, caller: Agent, request_id: str) -> str:
    """The agent whose password ``caller`` may have for the replacement restore ``request_id``; ForbiddenError otherwise.

    Allowed only when an engineer's replacement-restore request names ``caller``
    as its target PC and is still live; the request says which old PC's
    repository it restores from. The same decision hands out the read-only
    credential for that repository (server.restic_rest.hooks.replacement_source,
    filled by the engineer -> PC request channel); until that channel exists
    every release is refused.
    """
    return hooks.replacement_source(session, caller, request_id)


def release_password(session: Session, key: EscrowKey, settings: SnapshotSettings, caller: Agent, request_id: str,
                     actor: Actor, *, now: datetime) -> str:
    """The password of the repository ``caller`` restores from for request ``request_id``; audited.

    ForbiddenError (audited) when escrow is off or the request does not name
    ``caller``; NotFoundError when the old PC escrowed nothing the server can open.
    """
    def refused(error: E, reason: str) -> E:
        return refusal(session, error, actor=actor, action="snapshot.escrow.release_refused", target_type="agent",
                       target_id=caller.id, now=now, request_id=request_id, reason=reason)

    if not settings.escrow:
        raise refused(ForbiddenError(ESCROW_OFF, hint="Restore from the old PC's local repository, or with its password."),
                      "escrow is off")
    try:
        source = escrow_release_allowed(session, caller, request_id)
    except HelplineError as exc:
        raise refused(exc, "no replacement restore names this PC") from None
    password = open_password(session, key, source)
    if password is None:
        raise refused(NotFoundError("The server holds no snapshot password for the PC this restore reads from.",
                                    hint="Restore with the old PC's password, or from its local repository."),
                      "no escrowed password")
    record(session, actor, "snapshot.escrow.released", "agent", source, request_id=request_id, to_agent=caller.id)
    return password


def purge(session: Session, actor: Actor) -> int:
    """Delete every escrowed password (escrow was turned off), each deletion audited; return how many."""
    removed = 0
    for row in session.scalars(select(EscrowedPassword).order_by(EscrowedPassword.agent_id)):
        record(session, actor, "snapshot.escrow.purged", "agent", row.agent_id, reason="escrow is off")
        session.delete(row)
        removed += 1
    return removed
