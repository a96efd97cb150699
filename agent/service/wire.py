"""The local socket's wire: where it is, who is calling, and how one message travels.

One connection carries one call. The caller sends one line of JSON
(``{"op": ..., "args": {...}}``), with at most one open file descriptor
attached (SCM_RIGHTS) when the call hands the service a file; the service
answers with lines of JSON: zero or more ``{"progress": [done, total]}`` and
then one ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``.
Every line is bounded (:data:`MAX_MESSAGE_BYTES`) and every read has a
deadline, on both sides.

The caller's identity is never something it says: the service reads the
peer's uid from the kernel (``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on
macOS) for every connection.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from protocol import errors as E

#: Overrides where the socket is (tests, demos); the service and the user's commands read the same variable.
SOCKET_ENV = "HELPLINE_AGENT_SOCKET"
#: The one line of a request or an answer, at most (a reply's attachment, base64, fits with room to spare).
MAX_MESSAGE_BYTES = 1024 * 1024
#: File descriptors one request may carry (a bundle to deliver); more are closed unread and refused.
MAX_FDS = 1
_CHUNK = 64 * 1024


def socket_path() -> Path:
    """The service's socket: HELPLINE_AGENT_SOCKET, else /run/helpline/agent.sock (/var/run/… on macOS)."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env)
    return Path("/var/run/helpline/agent.sock" if sys.platform == "darwin" else "/run/helpline/agent.sock")


#: Set to 1 by the service's unit (which also points HELPLINE_AGENT_DIR at /var/lib/helpline-agent): this process
#: is the PC's installed agent service.
SERVICE_ENV = "HELPLINE_AGENT_SERVICE"


def is_installed_service() -> bool:
    """True for the PC's installed agent service: root, and either marked so by its unit (HELPLINE_AGENT_SERVICE=1)
    or on the default state (no HELPLINE_AGENT_DIR). Tests and a user's own agent are not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    return os.environ.get(SERVICE_ENV) == "1" or os.environ.get("HELPLINE_AGENT_DIR") is None


@dataclass(frozen=True)
class Peer:
    """The OS user at the other end of a connection, as the kernel tells it."""

    uid: int
    gid: int
    pid: int | None = None

    @property
    def is_admin(self) -> bool:
        """Root, the PC's administrator: sees and acts on every user's tickets."""
        return self.uid == 0


def peer_of(conn: socket.socket) -> Peer:
    """The credentials of the process that connected ``conn``; ForbiddenError where the kernel cannot tell."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return Peer(uid=uid, gid=gid, pid=pid)
    if sys.platform == "darwin":  # struct xucred {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16];}
        local_peercred, sol_local = 0x001, 0
        raw = conn.getsockopt(sol_local, local_peercred, struct.calcsize("=IIh2x16I"))
        fields = struct.unpack("=IIh2x16I", raw)
        return Peer(uid=fields[1], gid=fields[3] if fields[2] else -1)
    raise E.ForbiddenError("This system does not tell the agent service who is calling; it refuses the call.")


# -- errors travel by class name, limited to protocol.errors' own classes ------------------------------------------

_ERRORS: dict[str, type[E.HelplineError]] = {
    name: cls for name, cls in vars(E).items() if isinstance(cls, type) and issubclass(cls, E.HelplineError)
}


def error_to_wire(exc: E.HelplineError) -> dict:
    return {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint, "status": int(exc.status)}


def error_from_wire(data: object) -> E.HelplineError:
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return E.HelplineError("The agent service gave an answer this command does not understand.")
    cls = _ERRORS.get(str(data.get("kind")), E.HelplineError)
    hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    exc = cls(data["message"], hint=hint)
    status = data.get("status")
    if cls is E.HelplineError and isinstance(status, int) and status in {s.value for s in E.ExitStatus}:
        exc.status = E.ExitStatus(status)
    return exc


# -- one bounded line, with a deadline ------------------------------------------------------------------------------


def send_line(sock: socket.socket, message: dict, *, fds: tuple[int, ...] = ()) -> None:
    """Send ``message`` as one JSON line (with ``fds`` attached to its first bytes); TooLargeError if over the bound."""
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise E.TooLargeError(f"A message to the agent service may be at most {MAX_MESSAGE_BYTES // 1024} KiB.")
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        sock.sendall(data)


class LineReader:
    """Reads bounded JSON lines from one connection, collecting the file descriptors that arrive with them."""

    def __init__(self, sock: socket.socket, *, max_bytes: int = MAX_MESSAGE_BYTES, accept_fds: bool = False):
        self.sock = sock
        self.max_bytes = max_bytes
        self.accept_fds = accept_fds
        self.fds: list[int] = []
        self._buffer = b""

    def read(self, timeout: float | None) -> dict | None:
        """The next message (a JSON object), or None when the other side closed before sending one.

        TooLargeError past ``max_bytes``, UnavailableError past ``timeout`` seconds, InvalidInputError for a line
        that is not a JSON object. File descriptors beyond :data:`MAX_FDS` are closed and refused.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if len(self._buffer) > self.max_bytes:
                raise E.TooLargeError(f"A message over {self.max_bytes // 1024} KiB was refused.")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise E.UnavailableError("The other side of the agent socket sent no complete message in time.")
                self.sock.settimeout(left)
            try:
                if self.accept_fds:
                    chunk, fds, _flags, _addr = socket.recv_fds(self.sock, _CHUNK, MAX_FDS + 1)
                    self._take_fds(fds)
                else:
                    chunk = self.sock.recv(_CHUNK)
            except TimeoutError:
                raise E.UnavailableError("The other side of the agent socket sent no complete message in time.") from None
            if not chunk:
                if self._buffer:
                    raise E.InvalidInputError("The agent socket closed in the middle of a message.")
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        if len(line) > self.max_bytes:
            raise E.TooLargeError(f"A message over {self.max_bytes // 1024} KiB was refused.")
        try:
            message = json.loads(line)
        except ValueError:
            raise E.InvalidInputError("A message on the agent socket is not JSON.") from None
        if not isinstance(message, dict):
            raise E.InvalidInputError("A message on the agent socket is not a JSON object.")
        return message

    def _take_fds(self, fds: list[int]) -> None:
        self.fds.extend(fds)
        if len(self.fds) > MAX_FDS:
            self.close_fds()
            raise E.InvalidInputError(f"A request may carry at most {MAX_FDS} file.")

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
