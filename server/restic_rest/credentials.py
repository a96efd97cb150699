"""Short-lived HTTP Basic credentials for one agent's restic repository.

restic 0.14 reads the REST credential from the repository URL only, so the
secret travels as ``https://USER:SECRET@host/v1/restic/<agent>/``. Each one is
issued per run over the agent's signed channel, lives hours at most, is stored
as a SHA-256 digest, and opens only ``/v1/restic/<that agent>/`` in one mode:

- ``append`` — the caller's own repository, for backup and check;
- ``read`` — the caller's own repository for a restore, or another agent's
  when an engineer's replacement-restore request names the caller as target;
- ``admin`` — the server's own, for its prune; never handed to an agent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from protocol.errors import AuthError, ForbiddenError, UnavailableError
from protocol.schemas import AgentStatus
from server.fleet.reimage import replaced_chain
from protocol.snapshots import RESTIC_PREFIX, CredentialRequest, RepositoryCredential, RepositoryMode, is_agent_id
from server import audit
from server.audit import Actor
from server.models import Agent, ResticCredential, ResticRepository
from server.restic_rest import hooks
from server.security import token_digest
from server.settings import ServerSettings, SnapshotSettings

USERNAME_PREFIX = "hr-"
#: Expired credentials are deleted this long after they expire (their audit events stay).
KEEP_EXPIRED = timedelta(days=1)
_DUMMY_DIGEST = token_digest(secrets.token_urlsafe(32))


@dataclass(frozen=True)
class Grant:
    """What a checked credential lets its bearer do: ``mode`` on ``repository`` (an agent id) until ``expires_at``."""

    credential_id: int
    repository: str
    mode: RepositoryMode
    issued_to: str | None
    expires_at: datetime


class RecentGrants:
    """Credentials checked in the last few seconds, so restic's many small requests skip the database.

    restic restores a blob per request; a database round trip for each would
    cost more than the read itself. A credential that expires is refused at
    once (its expiry is kept with it); one whose PC is revoked meanwhile is
    refused within ``seconds``. Keys are digests of the repository and the
    header, never the secret itself.
    """

    def __init__(self, seconds: float = 10.0, size: int = 4096):
        self.seconds, self.size = seconds, size
        self._grants: dict[str, tuple[Grant, float]] = {}

    @staticmethod
    def _key(repository: str, header: str) -> str:
        return token_digest(f"{repository}\0{header}")

    def get(self, repository: str, header: str | None, now: datetime) -> Grant | None:
        if not header:
            return None
        key = self._key(repository, header)
        found = self._grants.get(key)
        if found is None:
            return None
        grant, until = found
        if time.monotonic() >= until or now >= grant.expires_at:
            self._grants.pop(key, None)
            return None
        return grant

    def put(self, header: str, grant: Grant) -> None:
        if len(self._grants) >= self.size:
            self._grants.clear()  # a burst of many credentials: start again rather than track ages
        self._grants[self._key(grant.repository, header)] = (grant, time.monotonic() + self.seconds)

    def forget(self) -> None:
        self._grants.clear()


#: The server process's recently checked credentials (see :class:`RecentGrants`).
recent_grants = RecentGrants()


def ensure_repository(session: Session, agent_id: str, now: datetime) -> ResticRepository:
    """The usage row of ``agent_id``'s repository, made if it has none yet."""
    row = session.get(ResticRepository, agent_id)
    if row is None:
        row = ResticRepository(agent_id=agent_id, created_at=now, bytes=0)
        session.add(row)
        session.flush()
    return row


def _new(session: Session, *, repository: str, issued_to: str | None, mode: RepositoryMode, purpose: str,
         request_id: str | None, lifetime: timedelta, now: datetime) -> tuple[ResticCredential, str, str]:
    username = USERNAME_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ResticCredential(username=username, secret_hash=token_digest(secret), repository_id=repository,
                           issued_to=issued_to, mode=mode.value, purpose=purpose, request_id=request_id,
                           created_at=now, expires_at=now + lifetime)
    session.add(row)
    session.flush()
    return row, username, secret


def repository_url(base_url: str, agent_id: str, username: str, secret: str) -> str:
    """``base_url`` (scheme, host, port, perhaps a path) with the credential and the repository's path."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnavailableError(f"The server's URL for repositories is not an http(s) URL: {base_url!r}.",
                               hint="Set [snapshots] public_url in the server's settings.")
    host = parts.netloc.rpartition("@")[2]  # never keep credentials a base URL might carry
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{quote(username, safe='')}:{quote(secret, safe='')}@{host}{path}{RESTIC_PREFIX}/{agent_id}/"


def issue_for_agent(session: Session, settings: ServerSettings, caller: Agent, body: CredentialRequest, *,
                    base_url: str, ip: str | None, now: datetime) -> RepositoryCredential:
    """A credential for the repository ``body`` asks for, if ``caller`` may have it; audited.

    Purposes backup and check give append mode on the caller's own repository,
    restore gives read mode on it, and on the repositories of the agents the caller replaced (a re-imaged
    PC, server.fleet.reimage); a ``request_id`` gives read mode on the
    repository of the agent that replacement-restore request names as source
    (:func:`server.restic_rest.hooks.replacement_source`), for restore only.
    """
    options = settings.snapshots
    if not options.enabled:
        raise UnavailableError("Server-side snapshots are turned off on this server.",
                               hint="Keep snapshots in the local repository, or ask an administrator to turn them on.")
    if body.request_id is not None:
        if body.purpose != "restore":
            raise ForbiddenError("A replacement-restore request gives a credential for restoring only.")
        repository = hooks.replacement_source(session, caller, body.request_id)
        if body.agent_id is not None and body.agent_id != repository:
            raise ForbiddenError("That replacement-restore request names another PC's snapshots.")
        mode = RepositoryMode.READ
    else:
        repository = body.agent_id or caller.id
        if repository != caller.id and not (body.purpose == "restore" and repository in replaced_chain(session, caller)):
            raise ForbiddenError("A PC gets a credential for its own snapshots only (and, to restore, for those of "
                                 "the agent it replaced after a re-image).",
                                 hint="Another PC's snapshots open only for an engineer's replacement restore naming this PC.")
        mode = RepositoryMode.READ if body.purpose == "restore" else RepositoryMode.APPEND
    if not is_agent_id(repository) or session.get(Agent, repository) is None:
        raise ForbiddenError("There is no such PC's repository on this server.")
    minutes = options.restore_credential_minutes if body.purpose == "restore" else options.backup_credential_minutes
    if mode is RepositoryMode.APPEND:
        ensure_repository(session, repository, now)
    row, username, secret = _new(session, repository=repository, issued_to=caller.id, mode=mode, purpose=body.purpose,
                                 request_id=body.request_id, lifetime=timedelta(minutes=minutes), now=now)
    audit.record(session, Actor.of_agent(caller, ip), "restic.credential.issue", "agent", repository,
                 credential=row.id, mode=mode.value, purpose=body.purpose, request_id=body.request_id,
                 expires_at=row.expires_at.isoformat())
    return RepositoryCredential(agent_id=repository, url=repository_url(base_url, repository, username, secret),
                                mode=mode, expires_at=row.expires_at)


def issue_admin(session: Session, options: SnapshotSettings, repository: str, *, base_url: str, purpose: str,
                now: datetime) -> tuple[int, str]:
    """The server's own admin credential for ``repository``: (its id, the repository URL carrying it)."""
    row, username, secret = _new(session, repository=repository, issued_to=None, mode=RepositoryMode.ADMIN,
                                 purpose=purpose, request_id=None,
                                 lifetime=timedelta(minutes=options.admin_credential_minutes), now=now)
    return row.id, repository_url(base_url, repository, username, secret)


def end_credential(session: Session, credential_id: int, now: datetime) -> None:
    """Make a credential expire now (the server's prune ends its own when done)."""
    row = session.get(ResticCredential, credential_id)
    if row is not None and row.expires_at > now:
        row.expires_at = now


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(username, secret) of an ``Authorization: Basic`` header, or None if it is not one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 512:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, secret = decoded.partition(":")
    return (username, secret) if sep else None


def authenticate(session: Session, repository: str, header: str | None, now: datetime) -> Grant:
    """The grant of the credential in ``header`` for ``repository``; AuthError or ForbiddenError otherwise.

    The secret is compared in constant time against its stored digest, and a
    missing user costs the same comparison.
    """
    basic = parse_basic(header)
    if basic is None:
        raise AuthError("This repository needs the credential the PC was given for it.",
                        hint="The agent asks for one per run; an expired one cannot be renewed by restic.")
    username, secret = basic
    row = None
    if username.startswith(USERNAME_PREFIX) and len(username) <= 40:
        row = session.scalar(select(ResticCredential).where(ResticCredential.username == username))
    matches = hmac.compare_digest(token_digest(secret), row.secret_hash if row is not None else _DUMMY_DIGEST)
    if row is None or not matches:
        raise AuthError("The repository credential is not valid.")
    if row.expires_at <= now:
        raise AuthError("The repository credential has expired.", hint="The agent asks for a fresh one on its next run.")
    if row.repository_id != repository:
        raise ForbiddenError("This credential opens another PC's repository only.")
    if row.issued_to is not None:
        holder = session.get(Agent, row.issued_to)
        if holder is None or holder.status != AgentStatus.ACTIVE.value:
            raise AuthError("The PC this credential was issued to is no longer trusted.")
    return Grant(row.id, row.repository_id, RepositoryMode(row.mode), row.issued_to, row.expires_at)


def sweep_expired(session: Session, now: datetime) -> int:
    """Delete credentials that expired more than a day ago; return how many."""
    result = session.execute(delete(ResticCredential).where(ResticCredential.expires_at < now - KEEP_EXPIRED))
    return result.rowcount or 0
