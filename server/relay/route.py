"""The relay's WebSocket routes: ``/v1/relay`` (a one-time pass in the Authorization header, then binary frames
only) and ``/v1/relay/replica`` (a side another server process forwards here with a forward pass).

Refusals are close codes after the handshake: RELAY_BAD_TOKEN (4401) for a pass
that is missing, unknown, used or expired, or whose session is no longer approved
(and for a forward pass that is forged, expired, used or meant for another
process); RELAY_SIDE_TAKEN (4409) for a second claimant of a side already
connected (audited as ``session.relay_refused``).

On PostgreSQL several processes may serve: the first side of a session records
this process as the session's holder (``relay_routes``); a side that reaches
another process is forwarded here (server.relay.forward), so both are spliced
in one process.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import IntegrityError

from protocol.sessions import RELAY_BAD_TOKEN, RELAY_SIDE_TAKEN, RelaySide
from server import sessions as svc
from server.api.deps import in_session
from server.forwarding import client_address, parse_networks
from server.relay import forward
from server.relay.hub import RelayHub, Side, close, relay_hub
from server.runtime import ServerRuntime

router = APIRouter()
log = logging.getLogger("helpline.server.relay")

#: A running splice's route outlives the grant's time by this much (sides ending late still find it).
ROUTE_AFTER_END = timedelta(seconds=60)


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
    await _serve(websocket, state, hub, claim.session_id, claim.side, claim.principal, ip, forwardable=True)


@router.websocket(forward.REPLICA_PATH)
async def replica(websocket: WebSocket) -> None:
    """A side another server process claimed and forwards here, because this process holds its session."""
    state: ServerRuntime = websocket.app.state.helpline
    hub = relay_hub(websocket.app)
    nonces = getattr(websocket.app.state, "forward_nonces", None)
    if nonces is None:
        nonces = websocket.app.state.forward_nonces = forward.UsedNonces()
    side = forward.check_forward_pass(
        websocket.headers.get(forward.FORWARD_HEADER, ""), public_key=state.public_key,
        me=state.advertise_url, now=state.clock(), longest=state.settings.bus.forward_token_seconds,
        nonces=nonces)
    await websocket.accept()
    if isinstance(side, str):
        log.warning("refused a forwarded relay side from %s: %s", websocket.client.host if websocket.client else "?", side)
        await close(websocket, RELAY_BAD_TOKEN, "forward pass refused")
        return
    await _serve(websocket, state, hub, side.session_id, side.side, side.principal, side.ip, forwardable=False)


def _routed(state: ServerRuntime) -> bool:
    """Whether several server processes may serve this deployment (PostgreSQL); SQLite means one."""
    return state.engine.dialect.name != "sqlite"


async def _hold_or_find(state: ServerRuntime, session_id: str, **options) -> str | None:
    me = state.advertise_url
    for attempt in range(2):  # two processes recording the first route at once: the loser reads the winner's
        try:
            return await in_session(state, lambda s: forward.hold_or_find(s, session_id, me, now=state.clock(), **options),
                                    writes=True)
        except IntegrityError:
            if attempt:
                raise
    return None


async def _forward(websocket: WebSocket, state: ServerRuntime, holder: str, side: forward.ForwardedSide) -> bool:
    """Pipe this side to ``holder``; False (nothing sent) if the holder cannot be reached."""
    token = forward.forward_pass(state.signing_key, side, holder=holder, now=state.clock(),
                                 seconds=state.settings.bus.forward_token_seconds)
    try:
        upstream = await forward.connect_holder(holder, token)
    except OSError as exc:
        log.warning("the process holding session %s's relay is unreachable (%s); this process takes it over",
                    side.session_id, exc)
        return False
    await forward.pipe(websocket, upstream)
    return True


async def _serve(websocket: WebSocket, state: ServerRuntime, hub: RelayHub, session_id: str, side: RelaySide,
                 principal: str, ip: str | None, *, forwardable: bool) -> None:
    """Splice this side here, or (``forwardable``, and another live process holds the session) forward it there."""
    routed = _routed(state)
    if routed:
        holder = await _hold_or_find(state, session_id)
        if holder is not None and forwardable:
            if await _forward(websocket, state, holder, forward.ForwardedSide(session_id, side, principal, ip)):
                return
            await _hold_or_find(state, session_id, unless_held_by=holder)
        elif holder is not None:  # forwarded here, but another process took the session over meanwhile
            log.warning("a side of session %s was forwarded here while %s holds it; it waits here", session_id, holder)
    me = Side(websocket, side, principal)
    pair = hub.join(session_id, me)
    if pair is None:
        await in_session(state, lambda s: svc.relay_refused(s, session_id, side.value, principal,
                                                             "this side is connected already", ip), writes=True)
        await close(websocket, RELAY_SIDE_TAKEN, "this side is connected already")
        return
    other = pair.other(me)
    started = False
    advertised = state.advertise_url

    def start(s) -> object:
        ends_at = svc.relay_started(s, session_id, now=state.clock())
        if routed:  # the route lasts as long as the splice may
            forward.hold_or_find(s, session_id, advertised, now=state.clock(), until=ends_at + ROUTE_AFTER_END)
        return ends_at

    def finish(s) -> None:
        svc.relay_finished(s, session_id, bytes_to_pc=pair.bytes_to_pc, bytes_from_pc=pair.bytes_from_pc,
                           reason=pair.reason or "ended", now=state.clock())
        if routed:
            forward.release(s, session_id, advertised)

    try:
        if other is not None:
            ends_at = await in_session(state, start, writes=True)
            await hub.connect(pair, me, other, (ends_at - state.clock()).total_seconds())
        started = await hub.run(pair, me, first=other is None)
    finally:
        if hub.leave(pair, me, done=started):
            await in_session(state, finish, writes=True)
            hub.doorbells.ring(session_id)
        elif routed and not started and session_id not in hub.pairs:  # nobody waits here any more
            await in_session(state, lambda s: forward.release(s, session_id, advertised), writes=True)
