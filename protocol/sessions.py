"""Wire schemas of remote sessions: the PC's offer, the engineer's grant request, consent, relay tickets, chat.

A session is offered by the user's own `helpline session` process (signed agent
requests), asked for by an engineer (a grant the server signs, protocol.grants),
answered by the user, and then carried end to end over the server's relay: the
relay pairs the two sides by one-time tokens and splices bytes, it never sees
the SSH keys.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from protocol.errors import InvalidInputError
from protocol.grants import Scope, SignedGrant, openssh_fingerprint
from protocol.schemas import _Model
from protocol.tickets import canonical_ticket

#: The longest a PC's offer waits for an engineer without being renewed.
OFFER_MINUTES = 30
#: The longest a long-poll waits on the server before answering with what it has (maybe nothing).
MAX_WAIT_SECONDS = 25
#: The longest a chat message may be.
MAX_CHAT_CHARS = 2000
#: The WebSocket close codes of the relay: a token that is unknown, used or expired; a side already taken.
RELAY_BAD_TOKEN = 4401
RELAY_SIDE_TAKEN = 4409
#: The relay closes a side that waited this long without the other side arriving (close code RELAY_NO_PEER).
RELAY_PAIR_SECONDS = 60
RELAY_NO_PEER = 4408
#: The relay closes both sides when the grant's maximum duration is over, or the session was ended.
RELAY_TIME_UP = 4410
#: Why a session ended at its granted duration, whichever side noticed first (the PC or the relay).
TIME_UP_REASON = "the session reached its maximum duration"
RELAY_ENDED = 4000


class SessionState(StrEnum):
    WAITING = "waiting"  # offered by the PC, no engineer has asked yet
    REQUESTED = "requested"  # an engineer asked: the user is being asked to consent
    APPROVED = "approved"  # the user said yes; the relay waits for both sides
    ACTIVE = "active"  # both sides joined the relay
    ENDED = "ended"


class RelaySide(StrEnum):
    PC = "pc"
    ENGINEER = "engineer"


def _one_printable_line(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text on one line")
    return value


class SessionOffer(_Model):
    """What the PC's `helpline session` tells the server: ready for help on this ticket, with this host key."""

    ticket: str = Field(description="The ticket this session is for, as T-1042.")
    host_key: str = Field(min_length=1, max_length=16384,
                          description="The OpenSSH public key line of the host key made for this session.")
    platform: str = Field(default="", max_length=100)
    username: str = Field(default="", max_length=200, description="The OS user running the session (shown, untrusted).")

    @field_validator("ticket")
    @classmethod
    def _canonical(cls, value: str) -> str:
        try:
            return canonical_ticket(value)
        except InvalidInputError as exc:
            raise ValueError(exc.message) from None

    @field_validator("host_key")
    @classmethod
    def _openssh_line(cls, value: str) -> str:
        value = value.strip()
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line")
        try:
            openssh_fingerprint(value)
        except InvalidInputError as exc:
            raise ValueError("is not an OpenSSH public key line") from exc
        return value

    @field_validator("platform", "username")
    @classmethod
    def _printable(cls, value: str) -> str:
        return _one_printable_line(value)


class SessionPublic(_Model):
    id: str
    ticket: str
    agent_id: str
    hostname: str = Field(description="The PC's hostname as it reported it (untrusted).")
    username: str = Field(description="The OS user on the PC as it reported it (untrusted).")
    platform: str = ""
    state: SessionState
    host_key_fingerprint: str
    created_at: datetime
    last_seen_at: datetime
    offer_expires_at: datetime
    grant_id: str | None = None
    engineer: str | None = Field(default=None, description="The username of the engineer the current grant names.")
    scopes: list[str] = []
    grant_expires_at: datetime | None = Field(default=None, description="Until when the grant's consent and connect window is open.")
    max_duration_seconds: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    bytes_to_pc: int = 0
    bytes_from_pc: int = 0
    recording: bool = Field(default=False, description="Whether a recording is attached.")


class GrantRequest(_Model):
    """An engineer asks to connect, with one of their own registered SSH keys."""

    key_fingerprint: str = Field(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$",
                                 description="One of your registered SSH keys (`helpline ssh-key list`).")
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.VIEW], min_length=1, max_length=8)
    max_minutes: int = Field(default=60, ge=1, le=480)


class GrantIssued(_Model):
    session: SessionPublic
    grant: SignedGrant
    host_key: str = Field(description="The session host key's OpenSSH line, to pin in known_hosts.")
    verification: str = Field(description="The string the user's screen shows once your key has authenticated.")


class SessionEvent(_Model):
    seq: int
    kind: Literal["request", "chat", "cancelled", "ended"]
    at: datetime
    grant: SignedGrant | None = None
    engineer_name: str | None = None
    engineer_username: str | None = None
    ticket_title: str | None = Field(default=None, description="Free text anyone with the ticket wrote: show it labelled, made printable.")
    text: str | None = None
    reason: str | None = None


class ConsentAnswer(_Model):
    grant_id: str = Field(min_length=1, max_length=200)
    approved: bool
    reason: str = Field(default="", max_length=200)


class RelayTicket(_Model):
    """A one-time pass to the relay for one side of one session; sent as a bearer header, never in a URL."""

    url: str = Field(description="The ws:// or wss:// address of the relay.")
    token: str
    expires_at: datetime
    side: RelaySide | None = None


class ChatMessage(_Model):
    text: str = Field(min_length=1, max_length=MAX_CHAT_CHARS)

    @field_validator("text")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return _one_printable_line(value)


class ChatEntry(_Model):
    seq: int
    at: datetime
    sender: Literal["engineer", "user"]
    name: str
    text: str


class ScopeChange(_Model):
    """What remains granted after the user took some scopes back (view always stays)."""

    scopes: list[Scope] = Field(max_length=8)


class SessionEnd(_Model):
    reason: str = Field(default="ended", max_length=200)
    bytes_to_pc: int = Field(default=0, ge=0)
    bytes_from_pc: int = Field(default=0, ge=0)
