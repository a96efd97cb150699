"""The relay's WebSocket route, ``/v1/relay``: a one-time pass in the Authorization header, then binary frames only.

Refusals are close codes after the handshake: RELAY_BAD_TOKEN (4401) for a pass
that is missing, unknown, used or expired, or whose session is no longer approved;
RELAY_SIDE_TAKEN (4409) for a second claimant of a side already connected
(audited as ``session.relay_refused``).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from protocol.sessions import RELAY_BAD_TOKEN, RELAY_SIDE_TAKEN
from server import sessions as svc
from server.api.deps import in_session
from server.forwarding import client_address, parse_networks
from server.relay.hub import Side, close, relay_hub
from server.runtime import ServerRuntime

router = APIRouter()


def _token(websocket: WebSocket) -> str:
    value = websocket.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _ip(websocket: WebSocket, state: ServerRuntime) -> str | None:
    peer = websocket.client.host if websocket.client else None
    return client_address(peer, websocket.headers.getlist("x-forwarded-for"),
                          parse_networks(tuple(state.settings.trusted_proxies)))


@router.websocket("/v1/relay")
async def relay(websocket: WebSocket) -> None:
    state: ServerRuntime = websocket.app.state.helpline
    hub = relay_hub(websocket.app)
    token, ip = _token(websocket), _ip(websocket, state)
    claim = await in_session(state, lambda s: svc.claim_relay_token(s, token, ip=ip, now=state.clock()), writes=True)
    await websocket.accept()
    if isinstance(claim, str):
        await close(websocket, RELAY_BAD_TOKEN, "relay pass refused")
        return
    me = Side(websocket, claim.side, claim.principal)
    pair = hub.join(claim.session_id, me)
    if pair is None:
        await in_session(state, lambda s: svc.relay_refused(s, claim.session_id, claim.side.value, claim.principal,
                                                             "this side is connected already", ip), writes=True)
        await close(websocket, RELAY_SIDE_TAKEN, "this side is connected already")
        return
    other = pair.other(me)
    started = False
    try:
        if other is not None:
            ends_at = await in_session(state, lambda s: svc.relay_started(s, claim.session_id, now=state.clock()),
                                       writes=True)
            await hub.connect(pair, me, other, (ends_at - state.clock()).total_seconds())
        started = await hub.run(pair, me, first=other is None)
    finally:
        if hub.leave(pair, me, done=started):
            await in_session(state, lambda s: svc.relay_finished(
                s, claim.session_id, bytes_to_pc=pair.bytes_to_pc, bytes_from_pc=pair.bytes_from_pc,
                reason=pair.reason or "ended", now=state.clock()), writes=True)
            hub.doorbells.ring(claim.session_id)
