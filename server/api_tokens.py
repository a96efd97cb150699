"""Engineers' and admins' API tokens: listing them, revoking one, and ending all of an account's.

A token ends by being revoked (``revoked_at``), never by the account's state
alone, so enabling a disabled account or undoing a reset brings no old token back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import NotFoundError
from protocol.schemas import ApiTokenPublic, Role
from server.audit import Actor, record
from server.models import Account, ApiToken
from server.security import token_digest

_NO_TOKEN_HINT = "List tokens with `helpline token list`."


def api_token_public(row: ApiToken, current_id: int | None) -> ApiTokenPublic:
    return ApiTokenPublic(id=row.id, account=row.account.username, name=row.name, created_at=row.created_at,
                          expires_at=row.expires_at, last_used_at=row.last_used_at, current=row.id == current_id)


def live_tokens(session: Session, account: Account, *, now: datetime) -> list[ApiToken]:
    """``account``'s tokens that still work at ``now`` (neither revoked nor expired), oldest first."""
    query = (select(ApiToken).where(ApiToken.account_id == account.id, ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)
             .order_by(ApiToken.id))
    return list(session.scalars(query))


def revoke_token(session: Session, actor: Actor, requester: Account, token_id: int, *, now: datetime) -> ApiToken:
    """Revoke token ``token_id`` at ``now``: the requester's own, or anyone's for an admin.

    Another account's token gets the same NotFoundError as a missing one for a
    non-admin, so ids tell nothing about other people's tokens. Revoking an
    already ended token changes nothing.
    """
    row = session.get(ApiToken, token_id)
    if row is None or (row.account_id != requester.id and requester.role != Role.ADMIN.value):
        raise NotFoundError(f"There is no token {token_id} you can revoke.", hint=_NO_TOKEN_HINT)
    if row.revoked_at is None:
        row.revoked_at = now
        record(session, actor, "token.revoke", "account", row.account.username, token_id=row.id, token_name=row.name)
    return row


def end_account_tokens(session: Session, actor: Actor, account: Account, reason: str, *, now: datetime,
                       keep: int | None = None) -> int:
    """Revoke every live token of ``account`` at ``now`` except the one with id ``keep``; return how many ended.

    ``reason`` (``password-change``, ``password-reset``, ``disabled``) goes into the audit event.
    """
    ended = 0
    for row in live_tokens(session, account, now=now):
        if row.id != keep:
            row.revoked_at = now
            ended += 1
    record(session, actor, "account.tokens_ended", "account", account.username, reason=reason, count=ended)
    return ended


def token_id_of(session: Session, token: str) -> int | None:
    """The id of the API token ``token`` (the one a request carries), None if it is unknown."""
    return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == token_digest(token)))
