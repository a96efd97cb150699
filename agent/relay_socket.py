"""One side of a session's relay: a WebSocket to the server that carries the SSH bytes, end to end.

Both the PC (its embedded SSH server) and the engineer (`helpline relay`, the
ProxyCommand of their own ssh) dial out to the server's relay with a one-time
relay ticket; the relay pairs the two and splices binary frames. The ticket's
token travels in the Authorization header only, never in a URL or an argv.

:func:`open_relay` gives a :class:`RelayStream` (send, recv, close);
:meth:`RelayStream.bridge_to_socket` turns it into a plain socket, pumped by two
threads, for code that wants one (paramiko's Transport, a stdin/stdout pump).
Frames are forwarded as they arrive, with TCP_NODELAY, no compression (SSH
traffic is encrypted) and no copies beyond what the socket calls make.
"""

from __future__ import annotations

import inspect
import os
import socket
import ssl
import threading
from urllib.parse import urlsplit

from agent import __version__
from agent.http import normalize_url
from protocol.errors import AuthError, ConfigError, ConflictError, ExitStatus, HelplineError, UnavailableError
from protocol.sessions import RELAY_BAD_TOKEN, RELAY_ENDED, RELAY_NO_PEER, RELAY_SIDE_TAKEN, RELAY_TIME_UP, RelayTicket

#: The largest frame accepted from the relay (the other side sends what its socket read gave it).
MAX_FRAME = 4 << 20
#: How much one read from the local socket may take before it is sent as one frame.
READ_SIZE = 256 << 10


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


def _closed_error(exc: Exception) -> RelayClosed | None:
    """The error a close by the relay stands for; None for a normal end."""
    from websockets.exceptions import ConnectionClosed

    if not isinstance(exc, ConnectionClosed):
        return RelayClosed("The connection to the relay broke off.", None, hint="Try again.")
    code = exc.rcvd.code if exc.rcvd is not None else None
    if code == RELAY_BAD_TOKEN:
        return RelayClosed("The relay refused this side's ticket (unknown, used or expired).", code,
                           hint="Ask for a new relay ticket.")
    if code == RELAY_SIDE_TAKEN:
        return RelayClosed("Another connection already holds this side of the session.", code,
                           hint="Only one connection per side is let in; end the other one first.")
    if code == RELAY_NO_PEER:
        return RelayClosed("The other side did not join the session in time.", code, hint="Try again.")
    if code in (RELAY_TIME_UP, RELAY_ENDED):
        return None
    if code is None or code in (1000, 1001, 1005):
        return None
    return RelayClosed(f"The relay closed the session (code {code}).", code)


class RelayStream:
    """A connected relay side: bytes in, bytes out, in the order sent."""

    def __init__(self, connection) -> None:
        self._ws = connection
        self._pending = memoryview(b"")
        self.sent = 0
        self.received = 0
        self.close_code: int | None = None
        self._closed = threading.Event()

    def send(self, data: bytes) -> None:
        """Send ``data`` as one binary frame; RelayClosed if the relay has closed this side."""
        if not data:
            return
        try:
            self._ws.send(data)
        except Exception as exc:
            error = _closed_error(exc) or RelayClosed("The session has ended.", None)
            raise error from exc
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
                message = self._ws.recv()
            except ConnectionClosed as exc:
                self.close_code = exc.rcvd.code if exc.rcvd is not None else None
                self._closed.set()
                error = _closed_error(exc)
                if error is not None:
                    raise error from exc
                return None
            except (OSError, RuntimeError) as exc:
                self._closed.set()
                raise RelayClosed("The connection to the relay broke off.", None, hint="Try again.") from exc
            if isinstance(message, str):  # the relay sends binary frames only
                continue
            self.received += len(message)
            return message

    def close(self) -> None:
        """End this side; the relay then closes the other side."""
        self._closed.set()
        try:
            self._ws.close()
        except Exception:  # already broken: nothing left to end
            pass

    def __enter__(self) -> RelayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bridge_to_socket(self) -> socket.socket:
        """Return one end of a socket pair whose other end is pumped to and from the relay by two threads.

        Closing the returned socket ends this relay side; the relay ending
        closes the pair, so a reader of the returned socket sees end of file.
        """
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

        def relay_to_socket() -> None:
            try:
                while frame := self.recv_frame():
                    ours.sendall(frame)
            except (HelplineError, OSError):
                pass
            finally:
                try:
                    ours.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.close()

        def socket_to_relay() -> None:
            try:
                while data := ours.recv(READ_SIZE):
                    self.send(data)
            except (HelplineError, OSError):
                pass
            finally:
                self.close()
                try:
                    ours.close()
                except OSError:
                    pass

        threading.Thread(target=relay_to_socket, name="relay-in", daemon=True).start()
        threading.Thread(target=socket_to_relay, name="relay-out", daemon=True).start()
        return theirs


def open_relay(ticket: RelayTicket, *, open_timeout: float = 30.0, ping_interval: float | None = 20.0) -> RelayStream:
    """Connect one side to the relay with ``ticket``; UnavailableError if the relay cannot be reached.

    The token goes in the Authorization header. A refused ticket shows up as
    RelayClosed at the first recv or send (the relay accepts, then closes with 4401/4409).
    """
    from websockets.exceptions import InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    url = _checked_url(ticket.url)
    # websockets 17 asks callers that keep the connection themselves to say so.
    legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    try:
        connection = connect(
            url, ssl=_ssl_context(url), additional_headers={"Authorization": f"Bearer {ticket.token}"},
            user_agent_header=f"helpline/{__version__}", compression=None, max_size=MAX_FRAME,
            open_timeout=open_timeout, ping_interval=ping_interval, ping_timeout=ping_interval, close_timeout=2,
            **legacy,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError("The relay refused this side's ticket.", hint="Ask for a new relay ticket.") from exc
        if status == 409:
            raise ConflictError("Another connection already holds this side of the session.") from exc
        raise UnavailableError(f"The relay answered {status}.", hint="Try again in a minute.") from exc
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        host = urlsplit(url).hostname
        raise UnavailableError(f"Cannot reach the session relay at {host}.",
                               hint="Check the network connection; the relay uses the server's own address.") from exc
    sock = connection.socket
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # the relay closed this side already; the first recv tells why
        pass
    return RelayStream(connection)
