"""The session grant: the server's signed permission for one engineer key to open one PC's session host.

A grant names the agent, the PC's session host key, the ticket, the engineer and
their SSH key, the scopes, the validity window and a nonce. The server signs it
with its Ed25519 key; the PC accepts it only when the signature is by the server
key it pinned and the grant names this PC and this session's host key, so a grant
for another PC or another session opens nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from protocol.errors import AuthError, ForbiddenError, InvalidInputError
from protocol.signing import sign, signed_by

GRANT_PURPOSE = "session-grant"


class Scope(str, Enum):
    """What a session may do; view is always part of a grant."""

    VIEW = "view"
    CONTROL = "control"
    FILES = "files"
    FORWARD = "forward"


def openssh_key_blob(line: str) -> tuple[str, bytes]:
    """Return (key type, key blob) of an OpenSSH one-line public key; raise InvalidInputError if it is not one."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise InvalidInputError("The engineer key is not an OpenSSH public key line.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("The engineer key is not an OpenSSH public key line.") from exc
    # The blob starts with the key type as an SSH string; it must match the line's first word.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != parts[0].encode("ascii", "replace"):
        raise InvalidInputError("The engineer key's type does not match its data.")
    return parts[0], blob


def openssh_fingerprint(line: str) -> str:
    """Return ``SHA256:…`` of an OpenSSH public key line, as ``ssh-keygen -lf`` prints it."""
    _, blob = openssh_key_blob(line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


class SessionGrant(BaseModel):
    """One engineer key's permission to open one PC's session host, for some scopes and a while."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    grant_id: str = Field(min_length=1, max_length=200)
    nonce: str = Field(min_length=16, max_length=200)
    agent_id: str = Field(min_length=1, max_length=200)
    host_key_fingerprint: str = Field(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")
    ticket: str = Field(min_length=1, max_length=200)
    engineer_username: str = Field(min_length=1, max_length=200)
    engineer_name: str = Field(max_length=200)
    organisation: str = Field(max_length=200)
    engineer_key: str = Field(min_length=1, max_length=16384)
    engineer_key_fingerprint: str
    scopes: frozenset[Scope] = frozenset({Scope.VIEW})
    not_before: datetime
    expires_at: datetime
    max_duration_seconds: int = Field(gt=0, le=7 * 24 * 3600)

    @field_validator("scopes", mode="after")
    @classmethod
    def _view_is_implied(cls, scopes: frozenset[Scope]) -> frozenset[Scope]:
        return scopes | {Scope.VIEW}

    @field_validator("not_before", "expires_at", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a time zone")
        return value.astimezone(timezone.utc)

    @field_validator("engineer_key", mode="after")
    @classmethod
    def _one_line_key(cls, value: str) -> str:
        if "\n" in value.strip() or "\r" in value:
            raise ValueError("must be one line")
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> SessionGrant:
        if self.expires_at <= self.not_before:
            raise ValueError("expires_at must be after not_before")
        try:
            actual = openssh_fingerprint(self.engineer_key)
        except InvalidInputError as exc:
            raise ValueError(exc.message) from exc
        if actual != self.engineer_key_fingerprint:
            raise ValueError("engineer_key_fingerprint does not match engineer_key")
        return self

    @field_serializer("scopes")
    def _sorted_scopes(self, scopes: frozenset[Scope]) -> list[str]:
        return sorted(scope.value for scope in scopes)

    def allows(self, scope: Scope | str) -> bool:
        return Scope(scope) in self.scopes


class SignedGrant(BaseModel):
    """A grant as it travels: the exact payload the server signed and the base64 signature."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    payload: dict[str, Any]
    signature: str


def _signed_payload(payload: dict[str, Any]) -> dict[str, Any]:
    # The purpose keeps a grant signature from being valid as any other server signature, and back.
    return {"purpose": GRANT_PURPOSE, "grant": payload}


def sign_grant(server_key: Ed25519PrivateKey, grant: SessionGrant) -> SignedGrant:
    """Sign ``grant`` with the server key; the PC checks it with :func:`verify_grant`."""
    payload = grant.model_dump(mode="json")
    return SignedGrant(payload=payload, signature=sign(server_key, _signed_payload(payload)))


def verify_grant(
    signed: SignedGrant,
    *,
    pinned_server_key: str | Ed25519PublicKey,
    agent_id: str,
    host_key_fingerprint: str,
    now: datetime,
    skew: timedelta = timedelta(seconds=60),
) -> SessionGrant:
    """Return the grant if the pinned server key signed it for this agent and host key and it is valid at ``now``.

    ``pinned_server_key`` is the pinned base64 raw public key (or that key object).
    Raise AuthError for a bad signature or a grant outside its window (``skew`` either
    side), ForbiddenError for a grant naming another agent or host key, InvalidInputError
    for a grant this version cannot read (an unknown scope, a missing field).
    """
    if now.tzinfo is None:
        raise InvalidInputError("The time to check a grant at must carry a time zone.")
    if not signed_by(pinned_server_key, _signed_payload(signed.payload), signed.signature):
        raise AuthError("The session grant is not signed by this PC's server.")
    try:
        grant = SessionGrant.model_validate(signed.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "grant"
        raise InvalidInputError(f"The session grant is unreadable ({where}: {first['msg']}).") from exc
    if grant.agent_id != agent_id:
        raise ForbiddenError("The session grant is for another PC.")
    if grant.host_key_fingerprint != host_key_fingerprint:
        raise ForbiddenError("The session grant is for another session host key.")
    if now < grant.not_before - skew:
        raise AuthError("The session grant is not valid yet (or expired: check this PC's clock).")
    if now >= grant.expires_at + skew:
        raise AuthError("The session grant has expired.")
    return grant


def verification_string(grant: SessionGrant, engineer_key: str) -> str:
    """The short string both sides show, e.g. ``482 019 736``, to check the caller is the person connected.

    It is an HMAC keyed by the grant's nonce over the grant id, the session host key
    fingerprint and the engineer key's fingerprint: nobody without that grant can
    produce it, and it differs for any other engineer key. ``engineer_key`` is the
    OpenSSH line of the key that authenticated, or its ``SHA256:`` fingerprint.
    """
    key_fp = engineer_key if engineer_key.startswith("SHA256:") else openssh_fingerprint(engineer_key)
    message = "\n".join(("helpline-session-verification", grant.grant_id, grant.host_key_fingerprint, key_fp))
    digest = hmac.new(grant.nonce.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    number = int.from_bytes(digest[:8], "big") % 10**9
    digits = f"{number:09d}"
    return " ".join(digits[i : i + 3] for i in range(0, 9, 3))
