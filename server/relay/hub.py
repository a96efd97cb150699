"""The relay's pairing and splice: the two sides of one session meet here and their frames pass through.

The first side to arrive waits (at most RELAY_PAIR_SECONDS) for the other; the
second starts the splice, which forwards each binary frame the moment it arrives,
counts bytes each way, and closes both sides as soon as either leaves, the grant's
time is up, or the session is ended through the API. Both sides must reach the
same server process: the hub lives in memory (docs/design.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from protocol.sessions import RELAY_ENDED, RELAY_NO_PEER, RELAY_PAIR_SECONDS, RELAY_TIME_UP, RelaySide
from server.relay.doorbell import Doorbells

NORMAL_CLOSE = 1000


def end_key(session_id: str) -> str:
    """The doorbell the API rings when a session is ended, so its splice closes both sides."""
    return f"end:{session_id}"


@dataclass
class Side:
    """One connected side waiting for, or spliced to, the other."""

    websocket: WebSocket
    side: RelaySide
    principal: str
    paired: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Splice:
    """What a finished splice moved and why it stopped."""

    bytes_to_pc: int = 0
    bytes_from_pc: int = 0
    reason: str = "ended"
    started: bool = False


class RelayHub:
    """The sides present in this process, per session; the doorbells of this process's long-polls."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[RelaySide, Side]] = {}
        self.doorbells = Doorbells()

    def join(self, session_id: str, me: Side) -> Side | None | bool:
        """Add ``me``; return the other side if it is here, None if ``me`` is first, False if ``me``'s side is taken."""
        sides = self.sides.setdefault(session_id, {})
        if me.side in sides:
            return False
        sides[me.side] = me
        return sides.get(RelaySide.ENGINEER if me.side == RelaySide.PC else RelaySide.PC)

    def leave(self, session_id: str, *gone: Side) -> None:
        sides = self.sides.get(session_id, {})
        for side in gone:
            if sides.get(side.side) is side:
                del sides[side.side]
        if not sides:
            self.sides.pop(session_id, None)

    async def wait_for_partner(self, session_id: str, me: Side, timeout: float = RELAY_PAIR_SECONDS) -> bool:
        """Wait until the other side starts the splice (then until it is over); False if it never came."""
        try:
            await asyncio.wait_for(me.paired.wait(), timeout)
        except TimeoutError:
            self.leave(session_id, me)
            await close(me.websocket, RELAY_NO_PEER, "the other side did not join")
            return False
        await me.done.wait()
        return True

    async def splice(self, session_id: str, pc: Side, engineer: Side, seconds_left: float) -> Splice:
        """Pass frames both ways until one side leaves, ``seconds_left`` run out or the session is ended."""
        result = Splice(started=True)

        async def pump(source: WebSocket, sink: WebSocket, to_pc: bool) -> None:
            receive, send = source.receive, sink.send
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                data = message.get("bytes")
                if data is None:  # text frames are not part of the relay protocol
                    continue
                if to_pc:
                    result.bytes_to_pc += len(data)
                else:
                    result.bytes_from_pc += len(data)
                await send({"type": "websocket.send", "bytes": data})

        with self.doorbells.listening(end_key(session_id)) as ended:
            tasks = {
                asyncio.create_task(_quietly(pump(pc.websocket, engineer.websocket, False)), name="from-pc"),
                asyncio.create_task(_quietly(pump(engineer.websocket, pc.websocket, True)), name="to-pc"),
                asyncio.create_task(ended.wait(), name="ended"),
            }
            done, pending = await asyncio.wait(tasks, timeout=max(0.0, seconds_left), return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        names = {t.get_name() for t in done}
        if not done:
            result.reason, code = "the granted time is over", RELAY_TIME_UP
        elif "ended" in names:
            result.reason, code = "ended", RELAY_ENDED
        elif "from-pc" in names:
            result.reason, code = "the PC left the relay", NORMAL_CLOSE
        else:
            result.reason, code = "the engineer left the relay", NORMAL_CLOSE
        await asyncio.gather(close(pc.websocket, code, result.reason), close(engineer.websocket, code, result.reason))
        return result


async def _quietly(work: Any) -> None:
    """Run a pump; a side that vanished mid-send ends it like a close does."""
    with contextlib.suppress(Exception):
        await work


async def close(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close a side, whatever state it is in (it may have gone already)."""
    with contextlib.suppress(Exception):
        await websocket.close(code, reason[:100])


def relay_hub(app: Any) -> RelayHub:
    """The hub of this app (one per server process)."""
    hub = getattr(app.state, "relay_hub", None)
    if hub is None:
        hub = app.state.relay_hub = RelayHub()
    return hub
