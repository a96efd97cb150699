"""The server calls of a user's remote session, made by the agent service with the PC's identity.

A session runs in the approving user's own ``helpline session`` process (the
SSH host, the shell as that user, the mirror, the consent prompt); the service
never starts one. What that process cannot do itself is sign: the PC's key is
the service's. So the service makes the session's few server calls for it —
offer, the events long-poll, the answer, a fresh relay pass, chat, scopes, the
end and the recording — each checked against the caller's uid:

* an offer is made only on a ticket the caller may use (their own; root: any),
  under the caller's account name as the kernel tells it, and the service
  remembers which uid offered the session id the server gave back;
* every later call names a session id, and only the uid that offered it (or
  root) is answered for it; an id the service did not offer is unknown;
* the grant in a request event is handed over as the server signed it: the
  user's process verifies it against the pinned server key (public, given with
  the link and with every batch of events) before the user is asked;
* a relay pass is one-time and short-lived; the user's process opens the
  WebSocket with it; the service never carries the session's bytes;
* the recording arrives as a file the caller opened (a descriptor), bounded in
  size (:data:`MAX_RECORDING_BYTES`).

The calls are bounded like every call on the socket, and the long-polls more so:
at most :data:`MAX_POLLS` at once, :data:`MAX_POLLS_PER_UID` of them one user's,
each waiting at most the server's own long-poll time.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol.errors import ConfigError, InvalidInputError, NotFoundError, TooLargeError, UnavailableError
from protocol.schemas import parse_input
from protocol.sessions import MAX_WAIT_SECONDS, ChatMessage, ConsentAnswer, ScopeChange, SessionEnd, SessionOffer

from .wire import Peer

if TYPE_CHECKING:
    from agent.client import HelplineClient

logger = logging.getLogger("helpline.service.sessions")

#: Session ids the service remembers (who offered each); the oldest is forgotten past this.
MAX_REMEMBERED = 1024
#: Event long-polls served at once, for everyone and for one uid.
MAX_POLLS = 8
MAX_POLLS_PER_UID = 3
#: The largest recording the service hands on (the server's own default cap).
MAX_RECORDING_BYTES = 64 << 20
#: The calls this module serves on the socket.
OPS = ("session_offer", "session_events", "session_answer", "session_relay", "session_chat", "session_scopes",
       "session_end", "session_recording")


class SessionOwners:
    """Which uid offered each session id through the socket (in memory: a restarted service knows none)."""

    def __init__(self, limit: int = MAX_REMEMBERED):
        self.limit = limit
        self._owners: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, session_id: str, uid: int) -> None:
        with self._lock:
            self._owners[session_id] = uid
            self._owners.move_to_end(session_id)
            while len(self._owners) > self.limit:
                self._owners.popitem(last=False)

    def check(self, session_id: object, peer: Peer) -> str:
        """``session_id`` if ``peer`` offered it (root: any the service offered); NotFoundError otherwise.

        Another user's session is answered exactly as an unknown one: the caller learns nothing of it."""
        if not isinstance(session_id, str) or not 0 < len(session_id) <= 100:
            raise InvalidInputError("The call needs the session's id.")
        with self._lock:
            uid = self._owners.get(session_id)
        if uid is None or (uid != peer.uid and not peer.is_admin):
            raise NotFoundError("This PC's agent service has offered no such session for you.",
                                hint="Run `helpline session` again to offer a new one.")
        return session_id


class SessionCalls:
    """The session calls of the socket, on the PC's identity; ``client`` opens a signed client, ``own_ticket`` checks
    that a ticket reference is one the caller may use (and returns its number)."""

    def __init__(self, client: Callable[[], HelplineClient], own_ticket: Callable[[object, Peer], str]):
        self._client = client
        self._own_ticket = own_ticket
        self.owners = SessionOwners()
        self._polls = threading.BoundedSemaphore(MAX_POLLS)
        self._polling: Counter[int] = Counter()
        self._polling_lock = threading.Lock()

    def ops(self) -> dict[str, Callable]:
        return {name: getattr(self, f"op_{name}") for name in OPS}

    @staticmethod
    def _account(peer: Peer) -> str:
        try:
            return pwd.getpwuid(peer.uid).pw_name[:200]
        except KeyError:
            return f"uid {peer.uid}"

    def op_session_offer(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        number = self._own_ticket(args.get("ticket"), peer)
        host_key, platform = args.get("host_key"), args.get("platform") or ""
        if not isinstance(host_key, str) or not isinstance(platform, str):
            raise InvalidInputError("An offer gives the session's host key and platform as text.")
        body = parse_input(SessionOffer, ticket=number, host_key=host_key, platform=platform[:100],
                           username=self._account(peer))  # who runs the session: the kernel's word, not the caller's
        with self._client() as client:
            session = client.offer_session(body)
        self.owners.record(session.id, peer.uid)
        logger.info("uid %d offered session %s on %s", peer.uid, session.id, number)
        return session.model_dump(mode="json")

    def op_session_events(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        """The session's events after ``after``, waiting up to ``wait`` seconds; with the server key pinned now."""
        session_id = self.owners.check(args.get("session_id"), peer)
        after, wait = args.get("after", 0), args.get("wait", 0)
        if not isinstance(after, int) or after < 0 or not isinstance(wait, (int, float)) or wait < 0:
            raise InvalidInputError("The events call gives after as a count and wait as seconds.")
        with self._polling_lock:
            if self._polling[peer.uid] >= MAX_POLLS_PER_UID:
                raise UnavailableError("Too many sessions of yours wait on this PC's agent service at once.",
                                       hint="End one of your other `helpline session` runs.")
            self._polling[peer.uid] += 1
        try:
            if not self._polls.acquire(timeout=1):
                raise UnavailableError("The agent service is busy with other sessions.", hint="Try again in a moment.")
            try:
                with self._client() as client:
                    events = client.session_events(session_id, after=after, wait=min(float(wait), MAX_WAIT_SECONDS))
                    pinned = client.pinned_server_key
            finally:
                self._polls.release()
        finally:
            with self._polling_lock:
                self._polling[peer.uid] -= 1
                if self._polling[peer.uid] <= 0:
                    del self._polling[peer.uid]
        return {"events": [e.model_dump(mode="json") for e in events], "server_key": pinned}

    def op_session_answer(self, peer: Peer, args: dict, fd: int | None, progress) -> dict | None:
        session_id = self.owners.check(args.get("session_id"), peer)
        body = parse_input(ConsentAnswer, **_fields(args.get("answer"), ("grant_id", "approved", "reason")))
        with self._client() as client:
            ticket = client.answer_session(session_id, body)
        logger.info("uid %d %s the request on session %s", peer.uid, "approved" if body.approved else "refused", session_id)
        return None if ticket is None else ticket.model_dump(mode="json")

    def op_session_relay(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        """A fresh one-time pass for the PC's side of the relay, for the uid that offered the session alone."""
        session_id = self.owners.check(args.get("session_id"), peer)
        with self._client() as client:
            return client.session_relay_ticket(session_id).model_dump(mode="json")

    def op_session_chat(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        session_id = self.owners.check(args.get("session_id"), peer)
        body = parse_input(ChatMessage, text=args.get("text"))
        with self._client() as client:
            return client.send_session_chat(session_id, body).model_dump(mode="json")

    def op_session_scopes(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        session_id = self.owners.check(args.get("session_id"), peer)
        body = parse_input(ScopeChange, scopes=args.get("scopes"))
        with self._client() as client:
            return client.change_session_scopes(session_id, body).model_dump(mode="json")

    def op_session_end(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        session_id = self.owners.check(args.get("session_id"), peer)
        body = parse_input(SessionEnd, **_fields(args.get("end"), ("reason", "bytes_to_pc", "bytes_from_pc")))
        with self._client() as client:
            ended = client.end_session(session_id, body)
        logger.info("uid %d ended session %s", peer.uid, session_id)
        return ended.model_dump(mode="json")

    def op_session_recording(self, peer: Peer, args: dict, fd: int | None, progress) -> dict:
        """Attach the recording the caller opened (``fd``, a regular file of at most MAX_RECORDING_BYTES)."""
        session_id = self.owners.check(args.get("session_id"), peer)
        if fd is None:
            raise InvalidInputError("A recording is handed over as an open file; none came with the call.")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError("The recording handed to the agent service is not a regular file.")
        if info.st_size > MAX_RECORDING_BYTES:
            raise TooLargeError(f"The recording is {info.st_size / 1e6:.1f} MB; the agent service hands on at most "
                                f"{MAX_RECORDING_BYTES / 1e6:.0f} MB.", hint="It stays on this PC in your data folder.")
        data = _read_bounded(fd, MAX_RECORDING_BYTES)
        with self._client() as client:
            done = client.upload_recording(session_id, data)
        logger.info("uid %d attached a recording of %d bytes to session %s", peer.uid, len(data), session_id)
        return done.model_dump(mode="json")


def _fields(value: object, names: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError("The call's body must be an object.")
    return {k: value[k] for k in names if k in value}


def _read_bounded(fd: int, limit: int) -> bytes:
    """The file's bytes from its start, at most ``limit`` (TooLargeError if it grew past it meanwhile)."""
    chunks, offset = [], 0
    while True:
        try:
            chunk = os.pread(fd, min(1 << 20, limit + 1 - offset), offset)
        except OSError as exc:
            raise ConfigError(f"The recording cannot be read: {exc.strerror}.") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
        if offset > limit:
            raise TooLargeError(f"The recording grew past {limit / 1e6:.0f} MB while it was handed over.")
