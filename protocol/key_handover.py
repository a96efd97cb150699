"""Hand-overs from one server signing key to the next, and how an agent follows them.

When an administrator rotates the server's signing key, the server writes a
hand-over statement ``{old key, new key, issued_at, not_after}`` and signs it
with the OLD key (the one agents pinned: that signature is what makes the new
key trustworthy) and with the NEW key (proof that whoever wrote it holds the
new private key, so nobody can hand agents over to a key they cannot use).
The server publishes every hand-over it made; an agent whose pinned key no
longer signs the server's answers walks the chain from its pinned key, checking
each link with :func:`protocol.signing.signed_by` against the key it trusts at
that point, and pins where the chain ends. A link not signed by the key the
agent trusts, expired (``not_after``) or issued in the future is never taken.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from protocol import signing

PURPOSE = "server-key-handover"
#: Clock difference between an agent and the server tolerated for ``issued_at``.
SKEW = timedelta(minutes=10)
#: The longest chain an agent walks (a server rotating more often than this between two contacts is not expected).
MAX_CHAIN = 64


class Handover(BaseModel):
    """One signed hand-over, as the server publishes it."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    old_key: str = Field(description="The retired key (base64 raw Ed25519), the one agents pinned.")
    new_key: str = Field(description="The key that replaces it.")
    issued_at: datetime
    not_after: datetime = Field(description="Agents do not follow this hand-over after this moment.")
    old_signature: str = Field(description="The old key's signature of the statement.")
    new_signature: str = Field(description="The new key's signature of the statement.")

    def statement(self) -> dict[str, Any]:
        return statement(self.old_key, self.new_key, self.issued_at, self.not_after)

    @property
    def old_fingerprint(self) -> str:
        return signing.fingerprint(self.old_key)

    @property
    def new_fingerprint(self) -> str:
        return signing.fingerprint(self.new_key)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def statement(old_key: str, new_key: str, issued_at: datetime, not_after: datetime) -> dict[str, Any]:
    """The payload both keys sign (times as UTC ISO-8601 to the second)."""
    return {"purpose": PURPOSE, "old_key": old_key, "new_key": new_key, "issued_at": _iso(issued_at),
            "not_after": _iso(not_after)}


def make_handover(old: Ed25519PrivateKey, new: Ed25519PrivateKey, *, issued_at: datetime, valid_for: timedelta) -> Handover:
    """The hand-over from ``old`` to ``new``, signed by both."""
    issued_at = issued_at.astimezone(UTC).replace(microsecond=0)
    not_after = issued_at + valid_for
    payload = statement(signing.public_key_b64(old), signing.public_key_b64(new), issued_at, not_after)
    return Handover(old_key=payload["old_key"], new_key=payload["new_key"], issued_at=issued_at, not_after=not_after,
                    old_signature=signing.sign(old, payload), new_signature=signing.sign(new, payload))


def valid_link(handover: Handover, trusted: str, now: datetime) -> bool:
    """Whether ``handover`` hands the key ``trusted`` over: signed by it (and by the new key), and current."""
    if handover.old_key != trusted or handover.new_key == trusted:
        return False
    if not handover.issued_at - SKEW <= now <= handover.not_after:
        return False
    payload = handover.statement()
    return signing.signed_by(trusted, payload, handover.old_signature) and \
        signing.signed_by(handover.new_key, payload, handover.new_signature)


def follow(pinned: str, handovers: list[Handover], now: datetime) -> str | None:
    """The key the chain of valid hand-overs leads to from ``pinned``; None if no valid hand-over starts there.

    Each step takes a hand-over signed by the key trusted at that point; a key
    seen before ends the walk (no loops), and so does :data:`MAX_CHAIN`.
    """
    trusted, seen = pinned, {pinned}
    for _ in range(MAX_CHAIN):
        step = next((h for h in handovers if valid_link(h, trusted, now) and h.new_key not in seen), None)
        if step is None:
            break
        trusted = step.new_key
        seen.add(trusted)
    return None if trusted == pinned else trusted


class KeyRotated(BaseModel):
    """What a rotation did: the key the server signs with now, the one it retired, and the hand-over between them."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    fingerprint: str
    previous_fingerprint: str
    handover: Handover
