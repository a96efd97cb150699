"""Agent requests signed with the PC's own key, and the server's answers signed with its key.

An agent never sends a bearer secret once it has an agent id: each request
carries the agent id, a date, a random nonce and the SHA-256 of its body, and
an Ed25519 signature over those with the method and the path and query as
sent. The server refuses a request outside the clock-skew window or whose
nonce it has seen, so a captured request is worth nothing elsewhere or later.

The server answers such a request with a signature over what it received (the
request's nonce and signature, method, target and body digest) and what it
answers (status and body digest). The agent checks that against the server key
it pinned, so an answer cannot be altered, forged or replayed for another
request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import signing

AGENT_HEADER = "Helpline-Agent"
DATE_HEADER = "Helpline-Date"
NONCE_HEADER = "Helpline-Nonce"
CONTENT_HEADER = "Helpline-Content-SHA256"
SIGNATURE_HEADER = "Helpline-Signature"
#: Which running copy of the agent signs (one installation on one boot; see agent.store.instance_id), signed with
#: the request when present: the server tells a cloned identity (two copies alternating) from a restart by it.
INSTANCE_HEADER = "Helpline-Instance"
RESPONSE_SIGNATURE_HEADER = "Helpline-Response-Signature"

#: How far a request's date may be from the server's clock, either way; nonces are kept this long after it.
CLOCK_SKEW = timedelta(minutes=5)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INSTANCE = re.compile(r"^[0-9a-f]{16,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_MAX_AGENT_ID = 64
_MAX_SIGNATURE = 100


def new_nonce() -> str:
    """A fresh random nonce (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def format_date(moment: datetime) -> str:
    """``moment`` as the request date: UTC to the second, ``2026-03-02T09:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(text: str) -> datetime | None:
    """The moment a request date names, or None if it is not one."""
    if not _DATE.match(text):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def request_payload(*, agent_id: str, method: str, target: str, content_sha256: str, date: str, nonce: str,
                    instance: str | None = None) -> dict:
    """What an agent signs for one request; ``target`` is the path and query exactly as sent.

    The instance is signed when the agent sends one (agents before it send none, and sign the rest alone).
    """
    payload = {"purpose": "agent-request", "agent": agent_id, "method": method.upper(), "target": target,
               "content_sha256": content_sha256, "date": date, "nonce": nonce}
    if instance is not None:
        payload["instance"] = instance
    return payload


def response_payload(*, nonce: str, request_signature: str, method: str, target: str, content_sha256: str,
                     status: int, body_sha256: str) -> dict:
    """What the server signs for its answer to one agent request: the request as received, the answer as sent."""
    return {"purpose": "agent-response", "nonce": nonce, "request_signature": request_signature,
            "method": method.upper(), "target": target, "content_sha256": content_sha256,
            "status": status, "body_sha256": body_sha256}


@dataclass(frozen=True)
class SignedRequest:
    """The signature headers of one agent request, as received; :meth:`parse` checks their shape only."""

    agent_id: str
    date: str
    nonce: str
    content_sha256: str
    signature: str
    instance: str | None = None

    @classmethod
    def parse(cls, headers: dict[str, str]) -> SignedRequest | str:
        """The signed request in ``headers`` (lower-case names), or the reason it is not one."""
        values = {name: headers.get(name.lower(), "") for name in
                  (AGENT_HEADER, DATE_HEADER, NONCE_HEADER, CONTENT_HEADER, SIGNATURE_HEADER)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            return f"it carries no {missing[0]} header"
        agent_id, date, nonce = values[AGENT_HEADER], values[DATE_HEADER], values[NONCE_HEADER]
        content, signature = values[CONTENT_HEADER].lower(), values[SIGNATURE_HEADER]
        if len(agent_id) > _MAX_AGENT_ID or not agent_id.isascii() or not agent_id.isprintable():
            return "its agent id is malformed"
        if parse_date(date) is None:
            return "its date is malformed"
        if not _NONCE.match(nonce):
            return "its nonce is malformed"
        if not _SHA256.match(content):
            return "its content digest is malformed"
        if len(signature) > _MAX_SIGNATURE:
            return "its signature is malformed"
        instance = headers.get(INSTANCE_HEADER.lower())
        if instance is not None and not _INSTANCE.match(instance):
            return "its instance is malformed"
        return cls(agent_id, date, nonce, content, signature, instance)

    def payload(self, method: str, target: str) -> dict:
        return request_payload(agent_id=self.agent_id, method=method, target=target,
                               content_sha256=self.content_sha256, date=self.date, nonce=self.nonce,
                               instance=self.instance)


def sign_request(key: Ed25519PrivateKey, *, agent_id: str, method: str, target: str, content_sha256: str,
                 now: datetime, nonce: str | None = None, instance: str | None = None) -> dict[str, str]:
    """The headers that sign one request as agent ``agent_id`` at ``now`` (from running copy ``instance``)."""
    date, nonce = format_date(now), nonce or new_nonce()
    payload = request_payload(agent_id=agent_id, method=method, target=target, content_sha256=content_sha256,
                              date=date, nonce=nonce, instance=instance)
    headers = {AGENT_HEADER: agent_id, DATE_HEADER: date, NONCE_HEADER: nonce, CONTENT_HEADER: content_sha256,
               SIGNATURE_HEADER: signing.sign(key, payload)}
    if instance is not None:
        headers[INSTANCE_HEADER] = instance
    return headers


def sign_response(key: Ed25519PrivateKey, payload: dict) -> str:
    return signing.sign(key, payload)


def verify(public_b64: str, payload: dict, signature: str) -> bool:
    """Whether ``signature`` is that key's signature of ``payload`` (False for anything malformed)."""
    return signing.verify(public_b64, payload, signature)


def body_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

