"""Signed webhooks: endpoints, the event outbox, delivery with back-off, and the first-response deadline events.

**Outbox.** :func:`emit` is called after a state change, in the same transaction: it writes the event and
one pending delivery per endpoint that asked for its kind, so an event is sent if and only if the change
committed. The ``webhook-deliver`` job (server/jobs.py, once per deployment) sends what is due.

**Delivery.** An HTTP POST of the JSON event, signed as protocol/webhooks.py describes (HMAC-SHA256 over
``timestamp.body``), with short timeouts and redirects never followed (a 3xx is a failed attempt). A
failed attempt is retried with exponential back-off and jitter (half the delay fixed, half random) until
``max_attempts`` attempts or ``max_age_hours`` after the event, then the delivery is marked failed and shown
by ``helpline webhook deliveries --failed`` with the receiver's last answer (untrusted text).

**Secrets.** The server signs with the endpoint's secret, so it must be able to read it: it is generated
here, shown to the admin once, and stored sealed (AES-256-GCM, bound to the endpoint's id) with a key
derived (HKDF-SHA256) from the server's signing key, like escrowed passwords (server/escrow.py): a stolen
database alone gives no secret. Replacing the signing key makes the secrets unreadable: such endpoints'
deliveries fail with a message saying to add them again.

**Where it may connect (SSRF).** Only http and https URLs without credentials in them. Unless
``[webhooks] allow_private_networks`` is true, an endpoint whose host is, or resolves to, a loopback, private,
link-local, multicast or reserved address is refused when added and again before every attempt: an admin's
URL must not become a way to reach the server's own network. (A name that resolves differently between the
check and the connection is a remaining gap; IP-literal URLs have none.)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session

from protocol.errors import InvalidInputError, NotFoundError
from protocol.tickets import ticket_label
from protocol.webhooks import (
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    TEST_KIND,
    TIMESTAMP_HEADER,
    DeliveryState,
    WebhookCreate,
    WebhookDeliveryPublic,
    WebhookKind,
    WebhookPublic,
    signature,
)
from server import __version__
from server.audit import Actor, record
from server.db import session_now
from server.models import Ticket, WebhookDelivery, WebhookEndpoint, WebhookEvent
from server.settings import ServerSettings, WebhookSettings

log = logging.getLogger("helpline.server.webhooks")

_KEY_INFO = b"helpline webhook secret key v1"
_KEY_ID_INFO = b"helpline webhook secret key id v1"
_NONCE_BYTES = 12
SECRET_PREFIX = "hlw_"
ERROR_CHARS = 500  # of a receiver's answer kept as the delivery's last error
#: Overdue and due-soon events are looked for among tickets due at most this long ago (older ones were told).
DEADLINE_LOOKBACK = timedelta(days=7)
KINDS = frozenset(k.value for k in WebhookKind)


class WebhookKey:
    """Seals and opens endpoints' signing secrets with a key derived from the server's signing key."""

    def __init__(self, signing_key: Ed25519PrivateKey):
        raw = signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
        self._key = HKDF(hashes.SHA256(), 32, salt=None, info=_KEY_INFO).derive(raw)
        self.key_id = HKDF(hashes.SHA256(), 16, salt=None, info=_KEY_ID_INFO).derive(raw).hex()

    def __repr__(self) -> str:
        return f"WebhookKey({self.key_id})"

    def seal(self, endpoint_id: int, secret: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + AESGCM(self._key).encrypt(nonce, secret.encode(), _bound(endpoint_id))

    def open(self, endpoint_id: int, sealed: bytes) -> str:
        """The secret sealed for ``endpoint_id``; ValueError if it does not open with this key."""
        try:
            return AESGCM(self._key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _bound(endpoint_id)).decode()
        except (InvalidTag, UnicodeDecodeError) as exc:
            raise ValueError("the webhook secret does not open with this server's key") from exc


def _bound(endpoint_id: int) -> bytes:
    return b"helpline webhook\0" + str(endpoint_id).encode()


# --- where endpoints may be -----------------------------------------------------------------


def check_url(url: str, settings: WebhookSettings, *, resolve: Callable[[str, int], Sequence[str]] | None = None) -> str:
    """Return ``url`` if deliveries may go there; InvalidInputError saying why not otherwise."""
    hint = "Use an http:// or https:// URL without a user name or password, such as https://helpdesk.example.org/hook."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"The webhook URL is not valid: {exc}.", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("A webhook URL must be http:// or https:// with a host.", hint=hint)
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError("A webhook URL must not hold a user name or password.", hint=hint)
    if parts.fragment or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidInputError("A webhook URL must not hold a fragment, spaces or control characters.", hint=hint)
    if not settings.allow_private_networks:
        host = parts.hostname
        addresses = (resolve or _resolve)(host, port or (443 if parts.scheme == "https" else 80))
        if not addresses:
            raise InvalidInputError(f"The webhook host {host} does not resolve.", hint="Check the name.")
        for address in addresses:
            if not _public(address):
                raise InvalidInputError(
                    f"The webhook host {host} is a private or local address ({address}); this server delivers to "
                    "public addresses only.",
                    hint="An administrator can allow the server's own networks with `allow_private_networks = true` "
                         "under [webhooks] in server.toml.")
    return url


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except (OSError, UnicodeError, ValueError):  # no such name, an over-long label, a character no resolver takes
        return []


# --- endpoints (admins) ---------------------------------------------------------------------


def add_endpoint(session: Session, key: WebhookKey, settings: ServerSettings, actor: Actor, body: WebhookCreate,
                 *, now: datetime) -> tuple[WebhookEndpoint, str]:
    """Register ``body``'s URL; return the endpoint and its new signing secret (shown once)."""
    url = check_url(body.url, settings.webhooks)
    events = sorted({k.value for k in body.events})
    endpoint = WebhookEndpoint(url=url, events=events, description=body.description, key_id=key.key_id,
                               created_by=actor.id, created_at=now)
    session.add(endpoint)
    session.flush()
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    endpoint.sealed_secret = key.seal(endpoint.id, secret)
    record(session, actor, "webhook.add", "webhook", endpoint.id, url=url, events=events)
    return endpoint, secret


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFoundError(f"Webhook {endpoint_id} does not exist.", hint="List them with `helpline webhook list`.")
    return endpoint


def remove_endpoint(session: Session, actor: Actor, endpoint_id: int) -> WebhookEndpoint:
    """Delete the endpoint and its deliveries (pending ones are not sent)."""
    endpoint = get_endpoint(session, endpoint_id)
    public = endpoint_public(session, endpoint)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    record(session, actor, "webhook.remove", "webhook", endpoint_id, url=endpoint.url)
    return public


def endpoint_public(session: Session, endpoint: WebhookEndpoint) -> WebhookPublic:
    counts = dict(session.execute(select(WebhookDelivery.state, func.count()).where(
        WebhookDelivery.endpoint_id == endpoint.id).group_by(WebhookDelivery.state)).all())
    return WebhookPublic(id=endpoint.id, url=endpoint.url, events=list(endpoint.events), description=endpoint.description,
                         created_by=endpoint.created_by, created_at=endpoint.created_at,
                         pending=counts.get(DeliveryState.PENDING.value, 0), failed=counts.get(DeliveryState.FAILED.value, 0))


def list_endpoints(session: Session) -> list[WebhookPublic]:
    return [endpoint_public(session, e) for e in session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))]


def send_test(session: Session, actor: Actor, endpoint_id: int, *, now: datetime) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to one endpoint, due at once; return its delivery."""
    endpoint = get_endpoint(session, endpoint_id)
    event = _event(session, TEST_KIND, {"message": "A test event from Helpline.", "webhook": endpoint.id}, now)
    delivery = _delivery(event, endpoint, now)
    session.add(delivery)
    session.flush()
    record(session, actor, "webhook.test", "webhook", endpoint.id, event_id=event.id)
    return delivery


def list_deliveries(session: Session, *, endpoint_id: int | None = None, failed: bool = False,
                    limit: int = 50) -> list[WebhookDeliveryPublic]:
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if failed:
        query = query.where(WebhookDelivery.state == DeliveryState.FAILED.value)
    return [delivery_public(d) for d in session.scalars(query)]


def delivery_public(delivery: WebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=delivery.id, event_id=delivery.event_id, kind=delivery.event.kind, endpoint_id=delivery.endpoint_id,
        url=delivery.endpoint.url, state=DeliveryState(delivery.state), attempts=delivery.attempts,
        created_at=delivery.created_at, next_attempt_at=delivery.next_attempt_at,
        last_attempt_at=delivery.last_attempt_at, last_status=delivery.last_status, last_error=delivery.last_error)


# --- the outbox ----------------------------------------------------------------------------


def emit(session: Session, kind: str, payload: dict[str, Any]) -> WebhookEvent:
    """Write event ``kind`` and a pending delivery to every endpoint that asked for it, in ``session``'s transaction.

    Call it after the state change the event tells of, in the same transaction. ``payload`` holds ids,
    numbers, titles and links: never a secret, never diagnostics content.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown webhook event kind {kind!r}")
    kind = WebhookKind(kind).value
    now = session_now(session)
    event = _event(session, kind, payload, now)
    for endpoint in session.scalars(select(WebhookEndpoint)):
        if kind in endpoint.events:
            session.add(_delivery(event, endpoint, now))
    return event


def _event(session: Session, kind: str, payload: dict[str, Any], now: datetime) -> WebhookEvent:
    subject = str((payload.get("ticket") or {}).get("number", ""))[:100]
    event = WebhookEvent(id=str(uuid.uuid4()), kind=kind, subject=subject, payload=payload, created_at=now)
    session.add(event)
    return event


def _delivery(event: WebhookEvent, endpoint: WebhookEndpoint, now: datetime) -> WebhookDelivery:
    return WebhookDelivery(event=event, endpoint=endpoint, state=DeliveryState.PENDING.value, attempts=0,
                           next_attempt_at=now, created_at=now, last_error="")


def ticket_data(ticket: Ticket, settings: ServerSettings | None = None) -> dict[str, Any]:
    """What payloads say about a ticket: its number, title (untrusted text), priority, status and due time."""
    data: dict[str, Any] = {
        "number": ticket_label(ticket.number), "title": ticket.title, "priority": ticket.priority,
        "status": ticket.status, "channel": ticket.channel,
        "first_response_due": ticket.first_response_due.isoformat() if ticket.first_response_due else None,
    }
    base = settings.webhooks.public_url if settings is not None else None
    if base:
        data["link"] = f"{base}/v1/tickets/{ticket_label(ticket.number)}"
    return data


def ticket_payload(db: Session, ticket: Ticket, /, **more: Any) -> dict[str, Any]:
    """A payload naming ``ticket`` (with a link when ``[webhooks] public_url`` is set) and ``more``."""
    return {"ticket": ticket_data(ticket, db.info.get(SETTINGS_INFO)), **more}


#: ``Session.info`` key under which a runtime's sessions carry its settings (for links in payloads).
SETTINGS_INFO = "helpline.settings"


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    delivery_id: int
    url: str
    secret: str | None  # None: the secret does not open with this server's key
    event_id: str
    kind: str
    body: bytes


def backoff(settings: WebhookSettings, attempts: int, rng: random.Random) -> timedelta:
    """How long after failed attempt number ``attempts`` (1, 2, …) the next one is made: doubling, with jitter."""
    delay = min(settings.backoff_max_seconds, settings.backoff_seconds * 2 ** (attempts - 1))
    return timedelta(seconds=delay / 2 + rng.uniform(0, delay / 2))


_rng = random.SystemRandom()


def deliver_due(sessions, key: WebhookKey, settings: WebhookSettings, *, now: Callable[[], datetime],
                transport: httpx.BaseTransport | None = None, rng: random.Random = _rng,
                resolve: Callable[[str, int], Sequence[str]] | None = None) -> tuple[int, int, int]:
    """Send the deliveries due at ``now()``; return (delivered, retried later, failed for good).

    The database is read before and written after the HTTP calls, never held open across them.
    """
    from server.db import transaction

    with transaction(sessions) as session:
        due = list(session.scalars(select(WebhookDelivery).where(
            WebhookDelivery.state == DeliveryState.PENDING.value, WebhookDelivery.next_attempt_at <= now())
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(settings.batch)))
        attempts = [_prepare(d, key) for d in due]
    if not attempts:
        return 0, 0, 0
    outcomes: list[tuple[_Attempt, int | None, str]] = []
    with httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False, trust_env=False,
                      transport=transport) as client:
        for attempt in attempts:
            status, error = _send(client, attempt, settings, resolve)
            outcomes.append((attempt, status, error))
    delivered = retried = failed = 0
    with transaction(sessions) as session:
        for attempt, status, error in outcomes:
            delivery = session.get(WebhookDelivery, attempt.delivery_id)
            if delivery is None or delivery.state != DeliveryState.PENDING.value:
                continue  # the endpoint was removed meanwhile
            at = now()
            delivery.attempts += 1
            delivery.last_attempt_at, delivery.last_status = at, status
            if status is not None and 200 <= status < 300:
                delivery.state, delivery.finished_at, delivery.next_attempt_at = DeliveryState.DELIVERED.value, at, None
                delivery.last_error = ""
                delivered += 1
                continue
            delivery.last_error = error[:ERROR_CHARS]
            next_at = at + backoff(settings, delivery.attempts, rng)
            too_old = next_at > delivery.event.created_at + timedelta(hours=settings.max_age_hours)
            if delivery.attempts >= settings.max_attempts or too_old or attempt.secret is None:
                delivery.state, delivery.finished_at, delivery.next_attempt_at = DeliveryState.FAILED.value, at, None
                record(session, Actor.system("webhooks"), "webhook.failed", "webhook", delivery.endpoint_id,
                       event_id=attempt.event_id, kind=attempt.kind, attempts=delivery.attempts, status=status)
                failed += 1
            else:
                delivery.next_attempt_at = next_at
                retried += 1
    return delivered, retried, failed


def _prepare(delivery: WebhookDelivery, key: WebhookKey) -> _Attempt:
    event, endpoint = delivery.event, delivery.endpoint
    body = json.dumps({"id": event.id, "kind": event.kind, "created_at": event.created_at.isoformat(),
                       "data": event.payload}, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        secret = key.open(endpoint.id, endpoint.sealed_secret or b"") if endpoint.key_id == key.key_id else None
    except ValueError:
        secret = None
    return _Attempt(delivery.id, endpoint.url, secret, event.id, event.kind, body)


def _send(client: httpx.Client, attempt: _Attempt, settings: WebhookSettings,
          resolve: Callable[[str, int], Sequence[str]] | None) -> tuple[int | None, str]:
    """POST one attempt; return (HTTP status or None, what went wrong in words, or "")."""
    if attempt.secret is None:
        return None, ("The endpoint's secret does not open with this server's signing key (was the key replaced?): "
                      "remove the webhook and add it again.")
    try:
        check_url(attempt.url, settings, resolve=resolve)
    except InvalidInputError as exc:
        return None, exc.message
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": f"Helpline-Webhooks/{__version__}",
               ID_HEADER: attempt.event_id, EVENT_HEADER: attempt.kind, TIMESTAMP_HEADER: timestamp,
               SIGNATURE_HEADER: signature(attempt.secret, timestamp, attempt.body)}
    try:
        response = client.post(attempt.url, content=attempt.body, headers=headers)
    except httpx.TimeoutException:
        return None, f"No answer within {settings.timeout_seconds:g} s."
    except httpx.HTTPError as exc:
        return None, f"Could not connect: {type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    if 300 <= response.status_code < 400:
        return response.status_code, (f"HTTP {response.status_code}: redirects are not followed (to "
                                      f"{response.headers.get('location', '?')[:200]}).")
    return response.status_code, f"HTTP {response.status_code}: {response.text[:ERROR_CHARS]}"


# --- first-response deadlines --------------------------------------------------------------


def watch_deadlines(session: Session, settings: ServerSettings, *, now: datetime) -> tuple[int, int]:
    """Emit ``ticket.first_response_due_soon`` and ``ticket.overdue`` once per ticket; return how many of each."""
    from server.tickets import awaiting_answer

    soon = now + timedelta(minutes=settings.webhooks.due_soon_minutes)
    counts = []
    for kind, condition in ((WebhookKind.FIRST_RESPONSE_DUE_SOON, and_(Ticket.first_response_due > now,
                                                                        Ticket.first_response_due <= soon)),
                            (WebhookKind.OVERDUE, and_(Ticket.first_response_due <= now,
                                                       Ticket.first_response_due > now - DEADLINE_LOOKBACK))):
        told = select(WebhookEvent.subject).where(WebhookEvent.kind == kind.value)
        tickets = list(session.scalars(select(Ticket).where(awaiting_answer(), condition).order_by(Ticket.number)
                                       .limit(500)))
        told_now = set(session.scalars(told.where(WebhookEvent.subject.in_([ticket_label(t.number) for t in tickets]))))
        fresh = [t for t in tickets if ticket_label(t.number) not in told_now]
        for ticket in fresh:
            emit(session, kind.value, ticket_payload(session, ticket))
        counts.append(len(fresh))
    return counts[0], counts[1]


def sweep_old(session: Session, *, before: datetime, limit: int = 1000) -> int:
    """Delete events (and their deliveries) made before ``before`` whose deliveries are all finished."""
    pending = select(WebhookDelivery.event_id).where(WebhookDelivery.state == DeliveryState.PENDING.value)
    ids = list(session.scalars(select(WebhookEvent.id).where(WebhookEvent.created_at < before,
                                                             WebhookEvent.id.not_in(pending)).limit(limit)))
    if not ids:
        return 0
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(ids)))
    return len(ids)
