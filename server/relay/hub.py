"""The relay's pairing and splice: the two sides of one session meet here and their frames pass through.

Each side's connection handler reads its own WebSocket and forwards every
binary frame to the other side the moment it arrives, counting bytes. Until the
other side arrives (at most RELAY_PAIR_SECONDS), a side's frames are held (an
SSH client speaks first) and its leaving is noticed at once, so a reconnecting
side is never refused for a ghost of itself. When the second side arrives it
first passes on what was held, then both directions flow. Either side leaving,
the grant's time running out, or the session being ended through the API closes
both. The hub lives in memory: with several server processes, a side that
reaches another process is forwarded here by it (server.relay.forward), so the
two sides always meet in one hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from protocol.sessions import RELAY_ENDED, RELAY_NO_PEER, RELAY_PAIR_SECONDS, RELAY_TIME_UP, TIME_UP_REASON, RelaySide
from server.doorbell import Doorbell

NORMAL_CLOSE = 1000
TOO_BIG = 1009
#: The most a side may send before the other side is there (an SSH client's banner and key exchange offer).
EARLY_LIMIT = 256 << 10


def end_key(session_id: str) -> str:
    """The doorbell the API rings when a session is ended, so its relay closes both sides."""
    return f"end:{session_id}"


@dataclass(eq=False)
class Side:
    """One connected side: its socket, what it sent before the other side came, and where its frames go."""

    websocket: WebSocket
    side: RelaySide
    principal: str
    early: list[bytes] = field(default_factory=list)
    early_bytes: int = 0
    partner: Side | None = None
    sent: int = 0  # bytes this side sent into the relay
    finished: bool = False


@dataclass(eq=False)
class Pair:
    """The sides of one session present in this process, and how their splice ends."""

    session_id: str
    sides: dict[RelaySide, Side] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    close_code: int = NORMAL_CLOSE
    watcher: asyncio.Task | None = None

    def other(self, me: Side) -> Side | None:
        return self.sides.get(RelaySide.ENGINEER if me.side == RelaySide.PC else RelaySide.PC)

    @property
    def bytes_to_pc(self) -> int:
        engineer = self.sides.get(RelaySide.ENGINEER)
        return engineer.sent if engineer else 0

    @property
    def bytes_from_pc(self) -> int:
        pc = self.sides.get(RelaySide.PC)
        return pc.sent if pc else 0

    async def end(self, reason: str, code: int = NORMAL_CLOSE) -> None:
        """Close every side (the first reason given is the one kept)."""
        if self.reason is None:
            self.reason, self.close_code = reason, code
        if self.watcher is not None and self.watcher is not asyncio.current_task():
            self.watcher.cancel()
        await asyncio.gather(*(close(s.websocket, self.close_code, self.reason) for s in list(self.sides.values())))


class RelayHub:
    """The pairs of this process, per session; the doorbells of this process's long-polls."""

    def __init__(self, doorbells: Doorbell | None = None) -> None:
        self.pairs: dict[str, Pair] = {}
        #: The server's one doorbell (its rings reach the other server processes through server.bus).
        self.doorbells = doorbells if doorbells is not None else Doorbell()

    def join(self, session_id: str, me: Side) -> Pair | None:
        """Add ``me`` to its session's pair; None if a connection already holds ``me``'s side."""
        pair = self.pairs.setdefault(session_id, Pair(session_id))
        if me.side in pair.sides or pair.reason is not None:
            return None
        pair.sides[me.side] = me
        return pair

    def leave(self, pair: Pair, me: Side, *, done: bool) -> bool:
        """Take ``me`` out; return True when it was the last side of a pair that is over (``done``)."""
        if not done:  # left before the splice: the side is free for the next connection
            if pair.sides.get(me.side) is me:
                del pair.sides[me.side]
            if not pair.sides and self.pairs.get(pair.session_id) is pair:
                del self.pairs[pair.session_id]
            return False
        me.finished = True
        if all(s.finished for s in pair.sides.values()):
            if self.pairs.get(pair.session_id) is pair:
                del self.pairs[pair.session_id]
            return True
        return False

    async def connect(self, pair: Pair, me: Side, other: Side, seconds_left: float) -> None:
        """``me`` arrived second: pass on what ``other`` sent so far, then let frames flow both ways."""
        while other.early:
            data = other.early.pop(0)
            other.early_bytes -= len(data)
            await me.websocket.send({"type": "websocket.send", "bytes": data})
        # No await between the last held frame and these: nothing can slip in out of order.
        other.partner, me.partner = me, other
        pair.started.set()
        pair.watcher = asyncio.create_task(self._watch(pair, seconds_left))

    async def _watch(self, pair: Pair, seconds_left: float) -> None:
        """End the splice when the grant's time is over or the session is ended through the API."""
        with self.doorbells.listening(end_key(pair.session_id)) as ended:
            try:
                await asyncio.wait_for(ended.wait(), max(0.0, seconds_left))
            except TimeoutError:
                await pair.end(TIME_UP_REASON, RELAY_TIME_UP)
                return
        await pair.end("ended", RELAY_ENDED)

    async def run(self, pair: Pair, me: Side, *, first: bool) -> bool:
        """Forward ``me``'s frames until it or the pair ends; return whether the splice ever started."""
        pump = asyncio.create_task(self._pump(me))
        if first:
            started = asyncio.create_task(pair.started.wait())
            done, _ = await asyncio.wait({pump, started}, timeout=RELAY_PAIR_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if not pair.started.is_set():
                if pump not in done:  # nobody came: tell this side why
                    await close(me.websocket, RELAY_NO_PEER, "the other side did not join")
                with contextlib.suppress(BaseException):
                    await pump
                return False
        with contextlib.suppress(BaseException):
            await pump
        # This side left (or was closed): the other side goes too.
        await pair.end("the PC left the relay" if me.side == RelaySide.PC else "the engineer left the relay")
        return True

    async def _pump(self, me: Side) -> None:
        websocket = me.websocket
        receive = websocket.receive
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                data = message.get("bytes")
                if data is None:  # text frames are not part of the relay protocol
                    continue
                me.sent += len(data)
                partner = me.partner
                if partner is None:
                    me.early.append(data)
                    me.early_bytes += len(data)
                    if me.early_bytes > EARLY_LIMIT:
                        await close(websocket, TOO_BIG, "too much before the other side joined")
                        return
                    continue
                await partner.websocket.send({"type": "websocket.send", "bytes": data})
        except Exception:  # a side that vanished mid-send or mid-read ends the splice like a close does
            pass


async def close(websocket: WebSocket | None, code: int, reason: str = "") -> None:
    """Close a side, whatever state it is in (it may have gone already)."""
    if websocket is None:
        return
    with contextlib.suppress(Exception):
        await websocket.close(code, reason[:100])


def relay_hub(app: Any) -> RelayHub:
    """The hub of this app (one per server process)."""
    hub = getattr(app.state, "relay_hub", None)
    if hub is None:
        runtime = getattr(app.state, "helpline", None)
        hub = app.state.relay_hub = RelayHub(runtime.doorbell if runtime is not None else None)
    return hub
