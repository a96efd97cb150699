"""Accounts, managed by admins."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from protocol.schemas import AccountCreate, AccountPublic, AccountUpdate, ApiTokenPublic
from protocol.errors import ConflictError
from server.accounts import account_public, create_account, get_account, update_account
from server.api.deps import AdminAccount, Bearer, ClientIP, DbSession, Now, ReadSession
from server.api_tokens import api_token_public, live_tokens, token_id_of
from server.audit import Actor
from server.models import Account

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("", summary="List accounts")
def list_accounts(admin: AdminAccount, session: ReadSession) -> list[AccountPublic]:
    return [account_public(a) for a in session.scalars(select(Account).order_by(Account.username))]


@router.post("", status_code=201, summary="Create an engineer or admin account")
def create(body: AccountCreate, admin: AdminAccount, session: DbSession, ip: ClientIP) -> AccountPublic:
    return account_public(create_account(session, Actor.of_account(admin, ip), body))


@router.patch("/{username}", summary="Change an account's role, status, password or details")
def update(username: str, body: AccountUpdate, admin: AdminAccount, session: DbSession, ip: ClientIP, now: Now) -> AccountPublic:
    account = get_account(session, username)
    if account.id == admin.id and (body.disabled or (body.role is not None and body.role.value != "admin")):
        raise ConflictError("You cannot disable or demote your own account.", hint="Ask another admin.")
    return account_public(update_account(session, Actor.of_account(admin, ip), account, body, now=now))


@router.get("/{username}/tokens", summary="An account's API tokens that still work, oldest first (never their secret)")
def account_tokens(username: str, admin: AdminAccount, session: ReadSession, credentials: Bearer, now: Now) -> list[ApiTokenPublic]:
    account = get_account(session, username)
    current = token_id_of(session, credentials.credentials)
    return [api_token_public(t, current) for t in live_tokens(session, account, now=now)]
