"""Webhooks on the wire: event kinds, the admin's schemas, and how a delivery is signed and verified.

A delivery is an HTTP POST of a JSON body ``{"id", "kind", "created_at", "data"}`` with these headers:

- ``Helpline-Webhook-Id``: the event's id (the same on every retry: receivers drop repeats by it);
- ``Helpline-Webhook-Event``: the event's kind (``ticket.opened`` …);
- ``Helpline-Webhook-Timestamp``: when this attempt was signed, in Unix seconds;
- ``Helpline-Webhook-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the endpoint's secret, of
  ``<timestamp>.<body>`` (the timestamp's digits, a dot, then the raw body bytes).

To verify, a receiver recomputes the HMAC over the raw body it received (before parsing it), compares it in
constant time (:func:`verify`), and refuses timestamps more than a few minutes from its own clock, so a
recorded delivery cannot be replayed later. Payloads carry ids, numbers, titles and links, never secrets or
diagnostics content; titles and hostnames come from users and PCs and are untrusted text.

Only the standard library and pydantic are used, so a receiver can copy :func:`verify` as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from protocol.schemas import _Model

ID_HEADER = "Helpline-Webhook-Id"
EVENT_HEADER = "Helpline-Webhook-Event"
TIMESTAMP_HEADER = "Helpline-Webhook-Timestamp"
SIGNATURE_HEADER = "Helpline-Webhook-Signature"
SIGNATURE_VERSION = "v1"
#: A delivery signed longer ago than this (or this far in the future) is refused by :func:`verify`.
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookKind(StrEnum):
    TICKET_OPENED = "ticket.opened"
    FIRST_RESPONSE_DUE_SOON = "ticket.first_response_due_soon"
    OVERDUE = "ticket.overdue"
    DIAGNOSTICS_ARRIVED = "diagnostics.arrived"
    SESSION_ENDED = "session.ended"
    RESTORE_DONE = "restore.done"


#: The kind of the event ``helpline webhook test`` sends (to one endpoint, whatever its kinds).
TEST_KIND = "webhook.test"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookCreate(_Model):
    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    events: list[WebhookKind] = Field(min_length=1, max_length=len(WebhookKind))
    description: Annotated[str, StringConstraints(max_length=200)] = ""


class WebhookPublic(_Model):
    id: int
    url: str
    events: list[str]
    description: str
    created_by: str
    created_at: datetime
    pending: int = 0
    failed: int = 0


class WebhookCreated(WebhookPublic):
    """The endpoint just added, with its signing secret: shown this once, never again."""

    secret: str


class WebhookDeliveryPublic(_Model):
    id: int
    event_id: str
    kind: str
    endpoint_id: int
    url: str
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str = Field(description="The receiver's answer or the connection error: untrusted text.")


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``Helpline-Webhook-Signature`` value of ``body`` signed at ``timestamp`` with ``secret``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(secret: str, timestamp: str, body: bytes, header: str, *, now: float | None = None,
           tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` with ``secret``, and ``timestamp`` is near ``now``."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.strip().encode())
