"""The relay across server processes: a session's bytes are spliced in the one process that holds its first side.

The process a side reaches claims the side's one-time pass as usual, then
looks up the session's route (``relay_routes``). If no live process holds the
session, it records itself and splices here; if another does, it opens a
WebSocket to that process's internal endpoint ``/v1/relay/replica`` and pipes
frames both ways, so the hub there pairs and splices as it does for sides that
reached it directly, and its close codes come back unchanged.

Processes trust each other through a **forward pass**: the claimed side
(session, side, principal, the client's address), the holder it is meant for
(its advertise URL) and a short expiry, signed with the server's signing key
that every process of a deployment shares. The holder checks the signature
with its own key, that the pass names it, that it has not expired and that its
nonce was not used before. Nothing a client or a load balancer sends can make
one: a header only carries a pass, it never is one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete
from sqlalchemy.orm import Session
from starlette.websockets import WebSocket

from protocol import signing
from protocol.sessions import RELAY_PAIR_SECONDS, RelaySide

log = logging.getLogger("helpline.server.relay")

#: The internal endpoint a process forwards a side to; refused without a valid forward pass.
REPLICA_PATH = "/v1/relay/replica"
#: The header that carries the forward pass.
FORWARD_HEADER = "helpline-forward"
PURPOSE = "helpline-relay-forward-v1"
#: How long a route lasts while its first side waits for the second (it is renewed when a side joins).
ROUTE_HOLD = timedelta(seconds=RELAY_PAIR_SECONDS + 30)
#: Clock difference between processes a pass's expiry tolerates.
SKEW = timedelta(seconds=5)
#: Frames larger than this are refused on the forward (the relay's clients send at most 4 MiB).
MAX_FRAME = 16 << 20
HOLDER_GONE = 1011


@dataclass(frozen=True)
class ForwardedSide:
    """A side another process claimed and forwarded here."""

    session_id: str
    side: RelaySide
    principal: str
    ip: str | None


# --- forward passes -----------------------------------------------------------------------------------


def forward_pass(key: Ed25519PrivateKey, side: ForwardedSide, *, holder: str, now: datetime, seconds: int) -> str:
    """A pass for ``holder`` (its advertise URL) to take ``side``: the payload and its signature by the server key."""
    payload = {"purpose": PURPOSE, "session_id": side.session_id, "side": side.side.value, "principal": side.principal,
               "ip": side.ip, "holder": holder, "expires_at": (now + timedelta(seconds=seconds)).isoformat(),
               "nonce": secrets.token_hex(16)}
    encoded = base64.urlsafe_b64encode(signing.canonical_json(payload)).decode("ascii")
    return f"{encoded}.{signing.sign(key, payload)}"


class UsedNonces:
    """Forward passes' nonces seen by this process until their passes expire (a pass works once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, datetime] = {}

    def first_use(self, nonce: str, expires_at: datetime, now: datetime) -> bool:
        with self._lock:
            for old in [n for n, until in self._seen.items() if until < now - SKEW]:
                del self._seen[old]
            if nonce in self._seen:
                return False
            self._seen[nonce] = expires_at
            return True


def check_forward_pass(value: str, *, public_key: str, me: str, now: datetime, longest: int,
                       nonces: UsedNonces) -> ForwardedSide | str:
    """The side a forward pass hands this process (advertised as ``me``), or why it is refused."""
    encoded, _, signature = value.partition(".")
    if not encoded or not signature or len(value) > 4096:
        return "malformed forward pass"
    try:
        payload = json.loads(base64.urlsafe_b64decode(encoded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        return "malformed forward pass"
    if not isinstance(payload, dict) or not signing.signed_by(public_key, payload, signature):
        return "forward pass not signed by the server key"
    if payload.get("purpose") != PURPOSE:
        return "not a forward pass"
    if payload.get("holder") != me:
        return "forward pass meant for another process"
    try:
        expires_at = datetime.fromisoformat(payload["expires_at"])
        side = RelaySide(payload["side"])
        session_id, principal, nonce = str(payload["session_id"]), str(payload["principal"]), str(payload["nonce"])
        ip = payload.get("ip")
    except (KeyError, TypeError, ValueError):
        return "malformed forward pass"
    if expires_at.tzinfo is None or expires_at + SKEW <= now:
        return "expired forward pass"
    if expires_at - now > timedelta(seconds=longest) + SKEW:
        return "forward pass lasts too long"
    if not nonces.first_use(nonce, expires_at, now):
        return "used forward pass"
    return ForwardedSide(session_id, side, principal, ip if isinstance(ip, str) else None)


# --- routes -------------------------------------------------------------------------------------------


def hold_or_find(session: Session, session_id: str, me: str, *, now: datetime,
                 until: datetime | None = None, unless_held_by: str | None = None) -> str | None:
    """The advertise URL of the live process holding ``session_id``'s relay; None after recording ``me`` as holder.

    ``unless_held_by``: a holder that could not be reached, taken over when it is still the one named.
    """
    from server.models import RelayRoute

    row = session.get(RelayRoute, session_id, with_for_update=True)
    if (row is not None and row.replica_url != me and row.expires_at > now
            and row.replica_url != unless_held_by):
        return row.replica_url
    expires = max(until or now, now + ROUTE_HOLD)
    if row is None:
        session.add(RelayRoute(session_id=session_id, replica_url=me, claimed_at=now, expires_at=expires))
        return None
    if row.replica_url == me:
        expires = max(expires, row.expires_at)  # a splice running here keeps its longer hold
    else:
        row.claimed_at = now
    row.replica_url, row.expires_at = me, expires
    return None


def release(session: Session, session_id: str, me: str) -> None:
    """This process's splice of ``session_id`` is over: forget its route (if it is still this process's)."""
    from server.models import RelayRoute

    session.execute(delete(RelayRoute).where(RelayRoute.session_id == session_id, RelayRoute.replica_url == me))


# --- the forward itself ----------------------------------------------------------------------------------


def replica_ws_url(holder: str) -> str:
    return ("wss" if holder.startswith("https://") else "ws") + holder[holder.index(":"):] + REPLICA_PATH


async def connect_holder(holder: str, token: str) -> Any:
    """Open the WebSocket to ``holder``'s internal relay endpoint; raise OSError if it cannot be reached."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    try:
        return await connect(replica_ws_url(holder), additional_headers={FORWARD_HEADER: token}, compression=None,
                             max_size=MAX_FRAME, open_timeout=10, ping_interval=5, ping_timeout=10, close_timeout=2,
                             user_agent_header="helpline-replica")
    except (InvalidHandshake, TimeoutError) as exc:
        raise OSError(f"the relay holder {holder} did not answer: {exc}") from exc


async def pipe(websocket: WebSocket, upstream: Any) -> None:
    """Pass frames between a client's side and the holder until either closes; the holder's close code goes on."""
    from websockets.exceptions import ConnectionClosed

    async def down() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send({"type": "websocket.send", "bytes": message})

    async def up() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] != "websocket.receive":
                return
            data = message.get("bytes")
            if data is not None:
                await upstream.send(data)

    tasks = {asyncio.create_task(down()), asyncio.create_task(up())}
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    await upstream.close()
    code, reason = upstream.close_code, upstream.close_reason or ""
    if code is None or code == 1006:
        code, reason = HOLDER_GONE, "the relay's other process went away"
    with contextlib.suppress(Exception):
        await websocket.close(code, reason[:100])
