"""The PC's side of a remote session: offer it, wait for an engineer, ask the user, relay, serve, end, attach.

It runs in the user's own ``helpline session`` process. :class:`SessionOffer`
makes a host key for this session, offers the session on the ticket (the server
learns the host key over the PC's signed channel, so the grant can pin it) and
long-polls the session's events (each poll keeps the offer open on the server). An engineer's ``request`` is checked before the
user hears of it: the grant must be signed by the server key this PC pinned, name
this agent and this host key, be within its window and never used before; a
request that fails is refused without a prompt. What the user is asked about comes
from the verified grant only (engineer, organisation, ticket, scopes, duration);
the ticket's title is free text and is passed on as such.

On the user's yes, :meth:`SessionOffer.answer` claims the grant (used once,
remembered across restarts), sends the answer, and returns a :class:`LiveSession`:
the :class:`~agent.session.host.SessionHost` served over the relay (reconnecting
the PC's side for each engineer connection while the grant's window is open),
chat and scope changes, and at the end the ``end`` report with the bytes carried
and the recording uploaded to the ticket. Nothing here prints: the caller gets
callbacks and errors.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paramiko

from agent.session.grants import UsedGrants
from agent.session.host import SessionHost, new_host_key
from agent.session.recording import Recording
from protocol.errors import AuthError, ConflictError, ForbiddenError, HelplineError, InvalidInputError, NotFoundError
from protocol.grants import Scope, SessionGrant, verify_grant
from protocol.sessions import (
    RELAY_ENDED,
    RELAY_NO_PEER,
    ChatMessage,
    ConsentAnswer,
    RelayTicket,
    ScopeChange,
    SessionEnd,
    SessionEvent,
    SessionPublic,
)

log = logging.getLogger(__name__)

WINDOWS_MESSAGE = "Remote sessions are not available on Windows yet."
#: The long-poll's wait: the server answers at once when an event is there.
EVENT_WAIT = 25
#: Consecutive failures to reach the relay (or the events) after which the session ends.
MAX_RELAY_FAILURES = 3
MAX_EVENT_FAILURES = 5
RETRY_PAUSE = 1.0
#: The longest the user's end waits for the server to hear why (the PC takes nothing more in the meantime).
END_REPORT_SECONDS = 1.0

# The reasons the server and the engineer read when the user does not approve.
REFUSED = "refused by the user"
TIMED_OUT = "timed out"
CTRL_C = "cancelled with Ctrl-C"
NO_ANSWER = "no answer (the input ended)"
NO_TERMINAL = "no terminal to ask the user"
WITHDRAWN = "the engineer withdrew the request"


def check_platform() -> None:
    """InvalidInputError on Windows, where sessions are not available yet (exit status 10)."""
    if os.name == "nt":
        raise InvalidInputError(WINDOWS_MESSAGE, hint="Share diagnostics with `helpline share`; for a session use a Linux or macOS PC.")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _local_user() -> str:
    try:
        return getpass.getuser()[:200]
    except (KeyError, OSError):
        return ""


@dataclass(frozen=True)
class ConsentRequest:
    """An engineer's request as the user may be told of it: every fact from the verified grant.

    ``ticket_title`` is free text anyone with the ticket wrote: show it labelled as
    such and made printable, never as a claim about who is asking. ``withdrawn``
    is set if the engineer cancels while the user is being asked.
    """

    grant: SessionGrant
    ticket_title: str | None = None
    withdrawn: threading.Event = field(default_factory=threading.Event, compare=False)

    @property
    def engineer_name(self) -> str:
        return self.grant.engineer_name or self.grant.engineer_username

    @property
    def engineer_username(self) -> str:
        return self.grant.engineer_username

    @property
    def organisation(self) -> str:
        return self.grant.organisation

    @property
    def ticket(self) -> str:
        return self.grant.ticket

    @property
    def scopes(self) -> frozenset[Scope]:
        return self.grant.scopes

    @property
    def max_duration(self) -> timedelta:
        return timedelta(seconds=self.grant.max_duration_seconds)


@dataclass(frozen=True)
class Decision:
    """The user's answer to a :class:`ConsentRequest`; ``reason`` says why when it is not a yes."""

    approved: bool
    reason: str = ""


@dataclass(frozen=True)
class SessionSummary:
    """How a session ended, for the one line the user reads at the end."""

    session_id: str
    ticket: str
    engineer: str
    reason: str
    seconds: float
    bytes_to_pc: int
    bytes_from_pc: int
    recording_attached: bool
    recording_kept: Path | None = None
    problems: tuple[str, ...] = ()


class SessionOffer:
    """This PC's offer of a session on one ticket, and what follows from it.

    ``client`` is a :class:`agent.client.HelplineClient` signing as this PC's agent;
    ``server_key`` the pinned server key (base64), ``agent_id`` this agent's id.
    ``open_relay`` connects one relay side (:func:`agent.relay_socket.open_relay`);
    ``shell`` replaces the user's login shell (tests).
    """

    def __init__(
        self,
        client: Any,
        *,
        ticket: str,
        agent_id: str,
        server_key: str,
        state_dir: Path,
        open_relay: Callable[[RelayTicket], Any] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        shell: list[str] | None = None,
        event_wait: float = EVENT_WAIT,
    ):
        self.client = client
        self.ticket = ticket
        self.agent_id = agent_id
        self.server_key = server_key
        self.state_dir = Path(state_dir)
        self.used = UsedGrants(self.state_dir)
        self.clock = clock
        self.shell = shell
        self.event_wait = event_wait
        if open_relay is None:
            from agent.relay_socket import open_relay as open_relay
        self.open_relay = open_relay
        self.host_key: paramiko.PKey = new_host_key()
        self.session: SessionPublic | None = None
        self._events: queue.Queue[SessionEvent | BaseException] = queue.Queue()
        self._after = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._live: LiveSession | None = None
        self._pending: ConsentRequest | None = None

    @property
    def host_key_line(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    @property
    def host_key_fingerprint(self) -> str:
        from agent.session.host import key_fingerprint

        return key_fingerprint(self.host_key)

    @property
    def session_id(self) -> str:
        if self.session is None:
            raise ConflictError("The session has not been offered yet.")
        return self.session.id

    # Offer and events.

    def offer(self) -> SessionPublic:
        """Offer the session on the ticket (the server replaces this PC's older waiting offer on it)."""
        from protocol.sessions import SessionOffer as OfferBody

        body = OfferBody(ticket=self.ticket, host_key=self.host_key_line, platform=platform.system()[:100],
                         username=_local_user())
        session = self.client.offer_session(body)
        if self.session is not None and session.id != self.session.id:
            self._after = 0  # a new session's events count from the start
        self.session = session
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="helpline-session-events", daemon=True)
            self._poller.start()
        return session

    def _poll(self) -> None:
        failures = 0
        while not self._stop.is_set():
            session = self.session
            try:
                events = self.client.session_events(session.id, after=self._after, wait=self.event_wait)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - a closed client at shutdown, or the server's answer
                if self._stop.is_set():
                    return
                failures += 1
                if not isinstance(exc, HelplineError):
                    exc = HelplineError(f"Waiting for the session's events failed: {exc}")
                if failures >= MAX_EVENT_FAILURES or isinstance(exc, (AuthError, ForbiddenError, NotFoundError)):
                    self._events.put(exc)
                    return
                self._stop.wait(RETRY_PAUSE * failures)
                continue
            for event in events:
                self._after = max(self._after, event.seq)
                self._dispatch(event)

    def _dispatch(self, event: SessionEvent) -> None:
        live, pending = self._live, self._pending
        if event.kind == "cancelled" and pending is not None and live is None:
            pending.withdrawn.set()
        if live is not None:
            live.event(event)
        self._events.put(event)

    def next_request(self, *, on_rejected: Callable[[HelplineError], None] | None = None,
                     timeout: float | None = None) -> ConsentRequest:
        """Wait for an engineer's request and return it verified; refuse (and raise) any that does not verify.

        A grant not signed by the pinned server key, for another PC or host key,
        outside its window or used before is answered "refused" at once, without
        the user being asked; its error is raised (``on_rejected`` hears it first).
        ``timeout`` (seconds) bounds the wait (tests); None waits until a request comes.
        """
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if until is None else max(0.0, until - time.monotonic())
            try:
                item = self._events.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no engineer asked in time") from None
            if isinstance(item, BaseException):
                raise item
            if item.kind == "ended":
                raise ConflictError(f"The session offer ended ({item.reason or 'by the server'}).",
                                    hint="Run `helpline session` again to wait for your engineer.")
            if item.kind != "request" or item.grant is None:
                continue
            try:
                grant = self._verify(item)
            except HelplineError as exc:
                grant_id = str(item.grant.payload.get("grant_id", ""))[:200] or "unknown"
                self._refuse(grant_id, f"the grant was refused by the PC: {exc.message}")
                if on_rejected is not None:
                    on_rejected(exc)
                raise
            self._pending = ConsentRequest(grant, item.ticket_title)
            return self._pending

    def _verify(self, event: SessionEvent) -> SessionGrant:
        # The events came through this PC's signed connection: if it followed a server key hand-over on the
        # way, the grant is checked against the key pinned now.
        pinned = getattr(self.client, "pinned_server_key", None) or self.server_key
        grant = verify_grant(event.grant, pinned_server_key=pinned, agent_id=self.agent_id,
                             host_key_fingerprint=self.host_key_fingerprint, now=self.clock())
        if grant.ticket != self.ticket:
            raise ForbiddenError(f"The session grant is for another ticket ({grant.ticket}).")
        if self.used.was_used(grant):
            raise AuthError("This session grant was used already; a grant opens one session only.")
        return grant

    def _refuse(self, grant_id: str, reason: str) -> None:
        try:
            self.client.answer_session(self.session_id, ConsentAnswer(grant_id=grant_id, approved=False, reason=reason[:200]))
        except HelplineError:
            log.debug("the refusal could not be sent", exc_info=True)

    # The answer.

    def answer(self, request: ConsentRequest, decision: Decision, *, recording_size: tuple[int, int] = (80, 24),
               on_output: Callable[[bytes], None] | None = None,
               on_authenticated: Callable[[str, str], None] | None = None,
               on_end: Callable[[str], None] | None = None,
               on_event: Callable[[SessionEvent], None] | None = None) -> LiveSession | None:
        """Send the user's answer; on a yes, claim the grant and start serving it over the relay.

        Returns the :class:`LiveSession`, or None for a refusal. A request the
        engineer withdrew meanwhile cannot be approved (ConflictError).
        """
        self._pending = None
        grant = request.grant
        if not decision.approved:
            self._refuse(grant.grant_id, decision.reason or REFUSED)
            self.close()
            return None
        if request.withdrawn.is_set():
            raise ConflictError("The engineer withdrew the request before you answered.", hint="Nothing was opened.")
        self.used.claim(grant, now=self.clock())  # before the answer: a grant opens one session even if we crash here
        ticket = self.client.answer_session(self.session_id, ConsentAnswer(grant_id=grant.grant_id, approved=True))
        if ticket is None:
            raise ConflictError("The server did not open the relay for this session.", hint="Ask your engineer to try again.")
        recordings = self.state_dir / "sessions"
        recordings.mkdir(parents=True, exist_ok=True, mode=0o700)
        cols, rows = recording_size
        recording = Recording(recordings / f"{self.session_id}.cast", width=cols, height=rows,
                              env={"TERM": os.environ.get("TERM", "xterm-256color"), "SHELL": os.environ.get("SHELL", "")},
                              title=f"Helpline session on {grant.ticket}")
        live = LiveSession(self, grant, recording, on_output=on_output, on_authenticated=on_authenticated,
                           on_end=on_end, on_event=on_event)
        self._live = live
        live.start(ticket)
        return live

    def close(self) -> None:
        """Stop polling for events (the offer ends on the server with :meth:`withdraw` or the session's end)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop polling and close the connection to the server (the last call on an offer)."""
        self.close()
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def withdraw(self, reason: str = "the user stopped waiting") -> None:
        """End the offer on the server (nobody asked, or the user stopped waiting); errors are ignored."""
        self.close()
        if self.session is None:
            return
        try:
            self.client.end_session(self.session.id, SessionEnd(reason=reason[:200]))
        except HelplineError:
            log.debug("the offer could not be withdrawn", exc_info=True)


class LiveSession:
    """An approved session: the SSH host served over the relay until the session ends, then reported."""

    def __init__(self, offer: SessionOffer, grant: SessionGrant, recording: Recording, *,
                 on_output: Callable[[bytes], None] | None, on_authenticated: Callable[[str, str], None] | None,
                 on_end: Callable[[str], None] | None, on_event: Callable[[SessionEvent], None] | None):
        self.offer = offer
        self.grant = grant
        self.recording = recording
        self.on_event = on_event
        self._user_on_end = on_end
        self.bytes_to_pc = 0
        self.bytes_from_pc = 0
        self._counted_lock = threading.Lock()
        self._streams: list[Any] = []
        self._started = time.monotonic()
        self.host = SessionHost(grant, host_key=offer.host_key, recording=recording, on_output=on_output,
                                on_authenticated=on_authenticated, on_end=self._ended, on_time_up=self.end,
                                shell=offer.shell,
                                clock=offer.clock)
        self.host.give_consent(grant.grant_id)
        self._relay: threading.Thread | None = None
        self._reported: SessionSummary | None = None
        self._user_reason: str | None = None  # why the user ended it, whatever the relay's drop said first

    @property
    def session_id(self) -> str:
        return self.offer.session_id

    @property
    def ended(self) -> bool:
        return self.host.ended

    @property
    def end_reason(self) -> str | None:
        return self._user_reason or self.host.end_reason

    def seconds_left(self) -> float:
        return max(0.0, self.grant.max_duration_seconds - (time.monotonic() - self._started))

    def start(self, ticket: RelayTicket) -> None:
        self._relay = threading.Thread(target=self._serve, args=(ticket,), name="helpline-session-relay", daemon=True)
        self._relay.start()

    def _ended(self, reason: str) -> None:
        for stream in list(self._streams):
            stream.close()
        if self._user_on_end is not None:
            self._user_on_end(reason)

    def _serve(self, ticket: RelayTicket | None) -> None:
        try:
            self._serve_connections(ticket)
        except Exception:  # noqa: BLE001 - whatever broke, the shell must not outlive the relay
            log.debug("the relay side failed", exc_info=True)
            self.host.end("the connection to the relay failed")

    def _serve_connections(self, ticket: RelayTicket | None) -> None:
        """Serve engineer connections over the relay, one PC-side relay connection each, until the session ends."""
        failures = 0
        while not self.host.ended:
            if ticket is None:
                try:
                    ticket = self.offer.client.session_relay_ticket(self.session_id)
                except (AuthError, ForbiddenError, ConflictError, NotFoundError) as exc:
                    self.host.end("the engineer can no longer connect" if self.host.joined
                                  else "no engineer connected in time")
                    log.debug("no new relay ticket: %s", exc)
                    return
                except HelplineError:
                    failures += 1
                    if failures >= MAX_RELAY_FAILURES:
                        self.host.end("the connection to the relay was lost")
                        return
                    time.sleep(RETRY_PAUSE * failures)
                    continue
            try:
                stream = self.offer.open_relay(ticket)
            except HelplineError:
                ticket = None
                failures += 1
                if failures >= MAX_RELAY_FAILURES:
                    self.host.end("the relay could not be reached")
                    return
                time.sleep(RETRY_PAUSE * failures)
                continue
            ticket = None
            self._streams.append(stream)
            try:
                transport = self.host.serve(stream.bridge_to_socket())
            except HelplineError:
                stream.close()
                return
            while transport.is_active() and not self.host.ended:
                time.sleep(0.1)
            stream.close()
            self._count(stream)
            code = getattr(stream, "close_code", None)
            if code == RELAY_ENDED:
                self.host.end("the session was ended on the server")
                return
            if transport.is_authenticated() or code == RELAY_NO_PEER:
                failures = 0  # the engineer has not come yet: wait again on a fresh pass while the grant allows
            elif code not in (None, 1000, 1001):
                failures += 1  # refused by the relay: do not spin
                if failures >= MAX_RELAY_FAILURES:
                    self.host.end("the relay refused this PC's connection")
                    return

    def _count(self, stream: Any) -> None:
        with self._counted_lock:
            if stream in self._streams:
                self._streams.remove(stream)
                self.bytes_to_pc += int(getattr(stream, "received", 0))
                self.bytes_from_pc += int(getattr(stream, "sent", 0))

    def event(self, event: SessionEvent) -> None:
        """An event of this session (from the offer's poller): the engineer ending it ends it here."""
        if event.kind == "ended":
            reason = (event.reason or "").strip()[:200]
            self.host.end("the engineer ended the session" if reason in ("", "ended") else reason)
        elif event.kind == "cancelled":
            self.host.end("the engineer cancelled the session")
        if self.on_event is not None:
            self.on_event(event)

    # The user's controls.

    def send_chat(self, text: str) -> None:
        """Send the user's message to the engineer (InvalidInputError for an empty or unprintable one)."""
        try:
            body = ChatMessage(text=text)
        except ValueError as exc:
            raise InvalidInputError("A chat message is one line of printable text, up to 2000 characters.") from exc
        self.offer.client.send_session_chat(self.session_id, body)

    def take_back(self, scope: Scope | str) -> frozenset[Scope]:
        """Take ``scope`` back now (view ends the session) and tell the server; return the scopes left."""
        scope = Scope(scope)
        self.host.revoke(scope)
        left = self.host.scopes
        if not self.host.ended:
            try:
                self.offer.client.change_session_scopes(self.session_id, ScopeChange(scopes=sorted(left, key=lambda s: s.value)))
            except HelplineError:
                log.debug("the scope change could not be reported", exc_info=True)
        return left

    def end(self, reason: str) -> None:
        """The user (or the time limit) ends the session: at once nothing more reaches the PC, then the server hears
        why, then all closes.

        Control, files and forward are taken back first (no keystroke, file or
        connection gets through from that moment); the server is told the reason
        before the relay drops (waiting at most END_REPORT_SECONDS), so the ticket's
        timeline says why it ended rather than that a side left; then the shell and
        every process it started end.
        """
        if self.host.ended:
            return
        self._user_reason = self._user_reason or reason
        for scope in (Scope.CONTROL, Scope.FILES, Scope.FORWARD):
            if scope in self.host.scopes:
                self.host.revoke(scope)
        told = threading.Event()

        def report() -> None:
            try:
                self.offer.client.end_session(self.session_id, SessionEnd(reason=reason[:200]))
            except Exception:  # noqa: BLE001 - finish() reports again
                log.debug("the end could not be reported yet", exc_info=True)
            finally:
                told.set()

        threading.Thread(target=report, name="helpline-session-end", daemon=True).start()
        told.wait(END_REPORT_SECONDS)
        self.host.end(reason)

    def wait(self, timeout: float | None = None) -> bool:
        return self.host.wait(timeout)

    def finish(self) -> SessionSummary:
        """End the session if it still runs, report it to the server and attach the recording; once."""
        if self._reported is not None:
            return self._reported
        self.host.end("the session was ended")
        self.host.wait(10)
        self.offer.close()
        for stream in list(self._streams):
            self._count(stream)
        reason = self.end_reason or "the session was ended"
        problems: list[str] = []
        client = self.offer.client
        try:
            client.end_session(self.session_id, SessionEnd(reason=reason[:200], bytes_to_pc=self.bytes_to_pc,
                                                           bytes_from_pc=self.bytes_from_pc))
        except HelplineError as exc:
            problems.append(f"the server did not take the session's end: {exc.message}")
        attached, kept = False, None
        self.recording.close()
        path = self.recording.path
        if not self.host.joined:  # nobody connected: there is nothing to attach
            path.unlink(missing_ok=True)
        else:
            try:
                client.upload_recording(self.session_id, path.read_bytes())
                attached = True
                path.unlink(missing_ok=True)
            except (HelplineError, OSError) as exc:
                kept = path if path.exists() else None
                problems.append(f"the recording was not attached: {getattr(exc, 'message', None) or exc}")
        self._reported = SessionSummary(
            session_id=self.session_id, ticket=self.grant.ticket,
            engineer=self.grant.engineer_name or self.grant.engineer_username, reason=reason,
            seconds=time.monotonic() - self._started, bytes_to_pc=self.bytes_to_pc, bytes_from_pc=self.bytes_from_pc,
            recording_attached=attached, recording_kept=kept, problems=tuple(problems),
        )
        return self._reported
