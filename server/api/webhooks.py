"""Webhooks, for admins: add, list, remove and test endpoints; see deliveries (the failed ones first of all)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from protocol.webhooks import WebhookCreate, WebhookCreated, WebhookDeliveryPublic, WebhookPublic
from server import webhooks as svc
from server.api.deps import AccountActor, AdminAccount, DbSession, Now, ReadSession, RowId, State

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, summary="Register a webhook endpoint; its signing secret is in this answer only")
def add_webhook(body: WebhookCreate, admin: AdminAccount, session: DbSession, state: State, actor: AccountActor,
                now: Now) -> WebhookCreated:
    endpoint, secret = svc.add_endpoint(session, svc.WebhookKey(state.signing_key), state.settings, actor, body, now=now)
    session.flush()
    return WebhookCreated(secret=secret, **svc.endpoint_public(session, endpoint).model_dump())


@router.get("", summary="List webhook endpoints (never their secrets)")
def list_webhooks(admin: AdminAccount, session: ReadSession) -> list[WebhookPublic]:
    return svc.list_endpoints(session)


@router.delete("/{webhook_id}", summary="Remove a webhook endpoint and its deliveries")
def remove_webhook(webhook_id: RowId, admin: AdminAccount, session: DbSession, actor: AccountActor) -> WebhookPublic:
    return svc.remove_endpoint(session, actor, webhook_id)


@router.post("/{webhook_id}/test", status_code=202, summary="Queue a test event to one endpoint")
def test_webhook(webhook_id: RowId, admin: AdminAccount, session: DbSession, actor: AccountActor,
                 now: Now) -> WebhookDeliveryPublic:
    return svc.delivery_public(svc.send_test(session, actor, webhook_id, now=now))


@router.get("/deliveries", summary="Recent webhook deliveries, newest first; the last error is the receiver's text")
def list_deliveries(
    admin: AdminAccount,
    session: ReadSession,
    webhook: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    failed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[WebhookDeliveryPublic]:
    return svc.list_deliveries(session, endpoint_id=webhook, failed=failed, limit=limit)
