"""One side of a session's relay: a WebSocket to the server that carries the SSH bytes, end to end.

Both the PC (its embedded SSH server) and the engineer (`helpline relay`, the
ProxyCommand of their own ssh) dial out to the server's relay with a one-time
relay ticket; the relay pairs the two and splices binary frames. The ticket's
token travels in the Authorization header only, never in a URL or an argv.

:func:`open_relay` gives a :class:`RelayStream` (send, recv, close);
:meth:`RelayStream.bridge_to_socket` turns it into a plain socket for code that
wants one (paramiko's Transport); :meth:`RelayStream.splice_pipes` carries a
pair of pipes (a ProxyCommand's standard input and output) on the stream's own
loop, with no thread and no socket in between. Frames are forwarded as they
arrive, with TCP_NODELAY (asyncio's default) and no compression (SSH traffic is
encrypted).

The WebSocket runs on an event loop of its own, in one thread per stream: the
sending and the receiving directions never wait for each other, so both can be
full at once (an upload and a download through one session) without deadlock,
which a blocking client that holds one lock while it writes cannot promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent import __version__
from agent.http import normalize_url
from protocol.errors import AuthError, ConfigError, ConflictError, ExitStatus, UnavailableError
from protocol.sessions import RELAY_BAD_TOKEN, RELAY_ENDED, RELAY_NO_PEER, RELAY_SIDE_TAKEN, RELAY_TIME_UP, RelayTicket

#: The largest frame accepted from the relay (the other side sends what its socket read gave it).
MAX_FRAME = 4 << 20
#: How much one read from the local socket may take before it is sent as one frame.
READ_SIZE = 256 << 10
#: Socket buffer asked for on each end of the bridge pair (the system caps it at net.core.wmem_max/rmem_max):
#: a few reads' worth, so neither the SSH transport nor the pump waits on the other for every block.
BRIDGE_BUFFER = 4 << 20
T = TypeVar("T")


class RelayClosed(UnavailableError):
    """The relay closed this side for a reason other than a normal end (see :attr:`code`)."""

    def __init__(self, message: str, code: int | None, hint: str | None = None):
        status = {RELAY_BAD_TOKEN: ExitStatus.AUTH, RELAY_SIDE_TAKEN: ExitStatus.CONFLICT}.get(code or 0)
        super().__init__(message, hint=hint, status=status)
        self.code = code


def _checked_url(url: str) -> str:
    """The relay URL if it is ws:// or wss:// and plain ws is to loopback (or allowed); ConfigError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"The server gave a relay address that is not a WebSocket address ({url[:80]!r}).",
                          hint="The server and this program may be of different versions.")
    normalize_url(url.replace("ws", "http", 1))  # the same rule as the API: plain text to loopback only
    return url


def _ssl_context(url: str) -> ssl.SSLContext | None:
    if not url.startswith("wss:"):
        return None
    # The same trust as the API client: the system's CAs, or HELPLINE_CA_BUNDLE.
    return ssl.create_default_context(cafile=os.environ.get("HELPLINE_CA_BUNDLE") or None)


def _close_code(exc: BaseException) -> int | None:
    rcvd = getattr(exc, "rcvd", None)
    return rcvd.code if rcvd is not None else None


def _closed_error(exc: BaseException) -> RelayClosed | None:
    """The error a close by the relay stands for; None for a normal end."""
    from websockets.exceptions import ConnectionClosed

    if not isinstance(exc, ConnectionClosed):
        return RelayClosed("The connection to the relay broke off.", None, hint="Try again.")
    code = _close_code(exc)
    if code == RELAY_BAD_TOKEN:
        return RelayClosed("The relay refused this side's ticket (unknown, used or expired).", code,
                           hint="Ask for a new relay ticket.")
    if code == RELAY_SIDE_TAKEN:
        return RelayClosed("Another connection already holds this side of the session.", code,
                           hint="Only one connection per side is let in; end the other one first.")
    if code == RELAY_NO_PEER:
        return RelayClosed("The other side did not join the session in time.", code, hint="Try again.")
    if code is None or code in (1000, 1001, 1005, RELAY_TIME_UP, RELAY_ENDED):
        return None
    return RelayClosed(f"The relay closed the session (code {code}).", code)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it moves each frame with less CPU), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Loop:
    """An event loop running in a daemon thread of its own, for one relay side."""

    def __init__(self) -> None:
        self.loop = _new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="relay-loop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``work`` on the loop and wait for its result; RelayClosed once the loop has stopped."""
        if self.loop.is_closed() or not self.thread.is_alive():
            work.close()
            raise RelayClosed("The session has ended.", None)
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def submit(self, work: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(5)


class RelayStream:
    """A connected relay side: bytes in, bytes out, in the order sent.

    ``send`` and ``recv`` may be called from two threads at once (one each).
    """

    def __init__(self, loop: _Loop, connection: Any) -> None:
        self._loop = loop
        self._ws = connection
        self._pending = memoryview(b"")
        self.sent = 0
        self.received = 0
        self.close_code: int | None = None
        self._closed = False
        self._bridge: Future | None = None

    def send(self, data: bytes) -> None:
        """Send ``data`` as one binary frame; RelayClosed if the relay has closed this side."""
        if not data:
            return
        view = memoryview(data)
        try:
            for start in range(0, len(view), MAX_FRAME):  # the other side takes frames of at most MAX_FRAME
                self._loop.run(self._ws.send(view[start:start + MAX_FRAME]))
        except Exception as exc:
            raise (_closed_error(exc) or RelayClosed("The session has ended.", _close_code(exc))) from exc
        self.sent += len(data)

    def recv(self, max_bytes: int = 1 << 20) -> bytes:
        """Up to ``max_bytes`` bytes from the other side; b"" once the session ended normally.

        RelayClosed if the relay refused this side or the connection broke.
        """
        if not self._pending:
            frame = self._next_frame()
            if frame is None:
                return b""
            if len(frame) <= max_bytes:
                return frame
            self._pending = memoryview(frame)
        chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return bytes(chunk)

    def recv_frame(self) -> bytes:
        """The next whole frame from the other side (b"" at the end): what a pump forwards without splitting."""
        if self._pending:
            chunk, self._pending = self._pending, memoryview(b"")
            return bytes(chunk)
        frame = self._next_frame()
        return b"" if frame is None else frame

    def _next_frame(self) -> bytes | None:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = self._loop.run(self._ws.recv())
            except ConnectionClosed as exc:
                self.close_code = _close_code(exc)
                error = _closed_error(exc)
                if error is not None:
                    raise error from exc
                return None
            except (OSError, RuntimeError) as exc:
                raise RelayClosed("The connection to the relay broke off.", None, hint="Try again.") from exc
            if isinstance(message, str):  # the relay sends binary frames only
                continue
            self.received += len(message)
            return message

    def close(self) -> None:
        """End this side; the relay then closes the other side."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.run(self._ws.close(), timeout=5)
        if self._bridge is None:
            self._loop.stop()

    def __enter__(self) -> RelayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def splice_pipes(self, read_fd: int, write_fd: int) -> None:
        """Carry ``read_fd`` to the relay and the relay to ``write_fd`` until either ends, then end this side.

        Both are pipes (a ProxyCommand's standard input and output, as ssh makes them);
        the loop reads and writes them itself, so each chunk crosses no thread and
        no extra socket. The end of ``read_fd`` ends this relay side; the relay's
        end stops the writes (``write_fd`` stays open: its owner closes it). The
        descriptors are duplicated, never closed here.
        """
        self._bridge = self._loop.submit(self._splice(os.dup(read_fd), os.dup(write_fd)))
        try:
            self._bridge.result()
        finally:
            self._loop.stop()

    async def _splice(self, read_fd: int, write_fd: int) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        try:
            reader = _PipeReader(READ_SIZE)
            source, _ = await loop.connect_read_pipe(lambda: reader, open(read_fd, "rb", buffering=0))
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        try:
            sink, writer = await loop.connect_write_pipe(_PipeWriter, open(write_fd, "wb", buffering=0))
        except BaseException:
            source.close()
            os.close(write_fd)
            raise

        async def relay_to_pipe() -> None:
            try:
                while not writer.lost:
                    message = await self._ws.recv()
                    if isinstance(message, str):
                        continue
                    self.received += len(message)
                    sink.write(message)
                    await writer.drain()
            except ConnectionClosed as exc:
                self.close_code = _close_code(exc)

        async def pipe_to_relay() -> None:
            while data := await reader.next_chunk():
                await self._ws.send(data)
                self.sent += len(data)

        try:
            await self._both_ways(relay_to_pipe(), pipe_to_relay())
        finally:
            source.close()
            sink.close()  # what the relay sent last still reaches the pipe: closing waits for the writes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer.gone), 5)

    async def _both_ways(self, *directions) -> None:
        """Run the two directions of a splice until either ends; then stop the other and close this relay side."""
        tasks = [asyncio.create_task(direction) for direction in directions]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            self._closed = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)

    def bridge_to_socket(self) -> socket.socket:
        """Return one end of a socket pair whose other end is pumped to and from the relay.

        Closing the returned socket ends this relay side; the relay ending
        closes the pair, so a reader of the returned socket sees end of file.
        Use the returned socket instead of send and recv, not alongside them.
        """
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BRIDGE_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BRIDGE_BUFFER)
        ours.setblocking(False)
        self._bridge = self._loop.submit(self._pump(ours))
        return theirs

    async def _pump(self, ours: socket.socket) -> None:
        from websockets.exceptions import ConnectionClosed

        reader, writer = await asyncio.open_connection(sock=ours, limit=READ_SIZE)

        async def relay_to_socket() -> None:
            try:
                while True:
                    message = await self._ws.recv()
                    if isinstance(message, str):
                        continue
                    self.received += len(message)
                    writer.write(message)
                    await writer.drain()
            except ConnectionClosed as exc:
                self.close_code = _close_code(exc)

        async def socket_to_relay() -> None:
            while data := await reader.read(READ_SIZE):
                await self._ws.send(data)
                self.sent += len(data)

        try:
            await self._both_ways(relay_to_socket(), socket_to_relay())
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            asyncio.get_running_loop().call_soon(self._loop.loop.stop)


class _PipeReader(asyncio.Protocol):
    """What the loop reads from a pipe, chunk by chunk as read (no copy into a stream buffer), paused when
    ``limit`` bytes wait to be sent."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._ended = False
        self._paused = False
        self._waiter: asyncio.Future | None = None
        self._transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self._limit and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_chunk(self) -> bytes:
        """The next chunk read, b"" at the end of the pipe."""
        while not self._chunks:
            if self._ended:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size < self._limit and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data


class _PipeWriter(asyncio.Protocol):
    """Flow control for a pipe the loop writes: ``drain`` waits while the pipe's reader is behind."""

    def __init__(self) -> None:
        self._paused = False
        self._waiter: asyncio.Future | None = None
        self.lost = False
        self.gone = asyncio.get_running_loop().create_future()  # set once the transport has closed

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        if not self.gone.done():
            self.gone.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def drain(self) -> None:
        while self._paused and not self.lost:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


def open_relay(ticket: RelayTicket, *, open_timeout: float = 30.0, ping_interval: float | None = 5.0) -> RelayStream:
    """Connect one side to the relay with ``ticket``; UnavailableError if the relay cannot be reached.

    A ping every ``ping_interval`` seconds, unanswered for twice that, ends the
    stream: a relay that vanished without closing is noticed within seconds.

    The token goes in the Authorization header. A refused ticket shows up as
    RelayClosed at the first recv or send (the relay accepts, then closes with 4401/4409).
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    from agent.config import configured_proxy

    url = _checked_url(ticket.url)
    proxy: str | bool = configured_proxy() or True  # True: the system's proxy variables, as for every request
    loop = _Loop()

    async def dial() -> Any:
        return await connect(
            url, ssl=_ssl_context(url), additional_headers={"Authorization": f"Bearer {ticket.token}"},
            user_agent_header=f"helpline/{__version__}", compression=None, max_size=MAX_FRAME,
            open_timeout=open_timeout, ping_interval=ping_interval,
            ping_timeout=2 * ping_interval if ping_interval else None, close_timeout=2, proxy=proxy,
        )

    try:
        connection = loop.run(dial())
    except InvalidStatus as exc:
        loop.stop()
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError("The relay refused this side's ticket.", hint="Ask for a new relay ticket.") from exc
        if status == 409:
            raise ConflictError("Another connection already holds this side of the session.") from exc
        raise UnavailableError(f"The relay answered {status}.", hint="Try again in a minute.") from exc
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        loop.stop()
        host = urlsplit(url).hostname
        raise UnavailableError(f"Cannot reach the session relay at {host}.",
                               hint="Check the network connection; the relay uses the server's own address.") from exc
    except BaseException:
        loop.stop()
        raise
    return RelayStream(loop, connection)
