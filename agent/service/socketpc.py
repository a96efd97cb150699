"""This PC's agent as a user's commands reach it where the agent service runs: through its local socket.

:class:`ServicePC` has the methods of :class:`agent.local.ThisPC`; the
identity stays with the service, which tells callers apart by their uid
(:mod:`agent.service.localapi`). What belongs to the user stays in the user's
own process and data folder: the bundle is gathered and queued there, as that
user, and handed to the service as an open file; a reply's file is read here.
A remote session runs here too (the SSH host, the shell as this user, the
consent prompt, the grant's check, the relay's WebSocket); only its server
calls go through the service (:class:`ServiceSessionCalls`). Nothing falls
back to another identity.
"""

from __future__ import annotations

import os
import socket
import tempfile
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent import upload
from agent.link import ChooseTicket, pick_open
from agent.paths import agent_dir
from agent.reply import read_attachment
from agent.paths import write_private
from agent.store import KEY_FILE, STATE_FILE, AgentState, AgentStore
from protocol import signing
from protocol.hand_over import hand_over_payload
from protocol.errors import ConfigError, ConflictError, HelplineError, UnavailableError
from protocol.schemas import AgentTicket, BundlePublic, ReplyCreate, SelfServiceResponse, TicketStatus, parse_input
from protocol.sessions import ChatEntry, ChatMessage, ConsentAnswer, RelayTicket, ScopeChange, SessionEnd, SessionEvent, SessionPublic
from protocol.sessions import SessionOffer as SessionOfferBody
from protocol.tickets import parse_ticket_ref, ticket_label

from .wire import LineReader, error_from_wire, send_line

if TYPE_CHECKING:
    from agent.service.consent import WaitingRequest
    from agent.session.offer import SessionOffer
    from agent.share import ShareRequest, TicketChoice
    from agent.snapshots.jobs import Protection, Restored, SnapshotRun
    from agent.snapshots.restic.output import BackupSummary, Progress, Snapshot

#: Written in the user's data folder when the server refused a hand-over, so it is not tried on every command.
REFUSED_FILE = "hand-over-refused.txt"
#: Seconds to wait for the service to accept a connection, and for each line of its answer.
CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 900.0


class ServicePC:
    """The PC's agent behind the service's socket at ``path``; the user's own files in ``user_dir``."""

    def __init__(self, path: Path, user_dir: Path | None = None):
        self.path = path
        self.user_store = AgentStore(user_dir or agent_dir())
        self._offered = False

    # -- moving from per-user to the service -------------------------------------------------------------------

    def offer_old_identity(self) -> list[str]:
        """Hand the tickets of this user's earlier per-user identity (if it has any, on the service's server) over
        to the service: signed here with the old key, sent by the service signed with the PC's; then the old
        identity is retired into ``retired/``. Returns the tickets handed over. An unreachable server leaves it
        for next time; a refusal is written to ``hand-over-refused.txt`` and not tried again."""
        folder = self.user_store.directory
        if (folder / REFUSED_FILE).exists():
            return []
        try:
            old = self.user_store.load()
        except ConfigError:
            return []
        if old is None or not old.tickets or not old.agent_id:
            return []
        service = self._state(self.call("link", offer=False))
        if service is None or service.server_url != old.server_url or service.agent_id == old.agent_id:
            return []
        signed_at = datetime.now(timezone.utc)
        tickets = list(dict.fromkeys(old.tickets))
        signature = signing.sign(self.user_store.key(), hand_over_payload(old.agent_id, service.agent_id, tickets, signed_at))
        try:
            answer = self.call("hand_over", {"from_agent_id": old.agent_id, "tickets": tickets, "server_url": old.server_url,
                                             "signed_at": signed_at.isoformat(), "signature": signature}, offer=False)
        except UnavailableError:
            return []
        except HelplineError as exc:
            write_private(folder / REFUSED_FILE, f"{exc.message}\n".encode())
            return []
        retired = folder / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        for name in (STATE_FILE, KEY_FILE):
            if (folder / name).exists():
                os.replace(folder / name, retired / name)
        return list(answer["tickets"])

    # -- one call -----------------------------------------------------------------------------------------------

    def call(self, op: str, args: dict | None = None, *, fd: int | None = None,
             progress: Callable[[int, int, str | None], None] | None = None, offer: bool = True) -> object:
        """One call; ``progress`` gets (done, total, what) from the service's progress lines. The first call of a
        process first offers this user's earlier per-user identity's tickets to the service (``offer``)."""
        if offer and not self._offered:
            self._offered = True
            self.offer_old_identity()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError, TimeoutError):
                raise UnavailableError(f"The Helpline agent service is not answering on {self.path}.",
                                       hint="Ask your administrator to start it (systemctl start helpline-agent).") from None
            except PermissionError:
                raise ConfigError(f"This account may not reach the Helpline agent service at {self.path}.",
                                  hint="Ask your administrator.") from None
            try:
                send_line(sock, {"op": op, "args": args or {}}, fds=(fd,) if fd is not None else ())
                reader = LineReader(sock)
                while True:
                    message = reader.read(ANSWER_TIMEOUT)
                    if message is None:
                        raise UnavailableError("The Helpline agent service closed the connection without answering.")
                    done_total = message.get("progress")
                    if done_total is not None:
                        if progress is not None and isinstance(done_total, list) and len(done_total) == 2:
                            what = message.get("what")
                            progress(int(done_total[0]), int(done_total[1]), what if isinstance(what, str) else None)
                        continue
                    if message.get("ok") is True:
                        return message.get("result")
                    raise error_from_wire(message.get("error"))
            except (ConnectionError, BrokenPipeError):
                raise UnavailableError("The Helpline agent service dropped the connection.") from None
        finally:
            sock.close()

    # -- the operations of ThisPC -------------------------------------------------------------------------------

    @staticmethod
    def _state(data: object) -> AgentState | None:
        return AgentState(**data) if isinstance(data, dict) else None

    def link(self) -> AgentState | None:
        """What this PC is linked to, as the service shows it to this user (their tickets; no credential)."""
        return self._state(self.call("link"))

    def _require(self) -> AgentState:
        state = self.link()
        if state is None:
            raise ConfigError("The agent service of this PC is not linked to a Helpline server yet.",
                              hint="Ask your administrator to enroll this PC with the Helpline server.")
        return state

    def enroll(self, server_url: str, token: str, *, expected_fingerprint: str | None = None) -> AgentState:
        return self._state(self.call("enroll", {"server_url": server_url, "token": token,
                                                "expected_fingerprint": expected_fingerprint}))

    def pair(self, code: str, *, server_url: str | None = None,
             expected_fingerprint: str | None = None) -> tuple[AgentState, AgentTicket]:
        got = self.call("pair", {"code": code, "server_url": server_url, "expected_fingerprint": expected_fingerprint})
        return self._state(got["state"]), AgentTicket.model_validate(got["ticket"])

    def request_help(self, title: str, *, description: str = "", requester: str = "",
                     server_url: str | None = None) -> tuple[AgentState, SelfServiceResponse]:
        got = self.call("request_help", {"title": title, "description": description, "requester": requester,
                                         "server_url": server_url})
        return self._state(got["state"]), SelfServiceResponse.model_validate(got["answer"])

    def tickets(self, reference: str | None = None) -> list[AgentTicket]:
        return [AgentTicket.model_validate(t) for t in self.call("tickets", {"reference": reference})]

    def ticket_in_use(self, reference: str | None = None, *, choose: ChooseTicket | None = None) -> AgentTicket | None:
        if reference is not None:
            return self.tickets(reference)[0]
        if not self._require().tickets:
            return None
        return pick_open(self.tickets(), choose)

    def choose_ticket(self, *, code: str | None = None, ticket: str | None = None, new: bool = False,
                      server_url: str | None = None, choose: ChooseTicket | None = None) -> TicketChoice:
        """The ticket a share goes to, before gathering (as :func:`agent.share.choose_ticket`)."""
        from agent.share import TicketChoice

        if code:
            _, paired = self.pair(code, server_url=server_url)
            return TicketChoice(paired.number, paired)
        if ticket:
            number = ticket_label(parse_ticket_ref(ticket))
            if number not in self._require().tickets:
                raise ConfigError(f"This PC is not linked to {number} for you.",
                                  hint="Pair with the code your engineer gives you: --code CODE.")
            try:
                current = self.tickets(number)[0]
            except UnavailableError:
                return TicketChoice(number)
            if current.status == TicketStatus.CLOSED:
                raise ConflictError(f"{number} is closed; it takes no more diagnostics.",
                                    hint="Share to a new ticket with --new, or ask your support team to reopen it.")
            return TicketChoice(number, current)
        if new or self.link() is None:
            return TicketChoice(None)
        current = self.ticket_in_use(choose=choose)
        return TicketChoice(current.number, current) if current is not None else TicketChoice(None)

    def open_ticket(self, request: ShareRequest, *, server_url: str | None = None) -> TicketChoice:
        from agent.share import TicketChoice, ticket_text

        title, description = ticket_text(request)
        _, answer = self.request_help(title, description=description, server_url=server_url)
        return TicketChoice(answer.ticket.number, answer.ticket, float(answer.response_minutes))

    def reply(self, message: str, *, file: Path | None = None, ticket: str | None = None,
              choose: ChooseTicket | None = None) -> AgentTicket:
        body = parse_input(ReplyCreate, message=message)  # checked here, before the file is read or anything asked
        attachment = read_attachment(file).model_dump(mode="json") if file is not None else None
        current = self.ticket_in_use(ticket, choose=choose)
        if current is None:
            raise ConfigError("This PC has no open ticket to reply to.",
                              hint='Open one with `helpline request "what is wrong"`, or name one with --ticket T-1042.')
        after = self.call("reply", {"ticket": current.number, "message": body.message, "attachment": attachment})
        return AgentTicket.model_validate(after)

    def session_offer(self, ticket: str) -> SessionOffer:
        """A remote session on ``ticket`` run in this user's process (host key, shell, consent, relay side), its
        server calls made by the service with the PC's identity (:class:`ServiceSessionCalls`). The grant is
        verified here against the server key the service pinned; used grants are remembered in this user's folder."""
        from agent.session.offer import SessionOffer

        state = self._require()
        number = ticket_label(parse_ticket_ref(ticket))
        if number not in state.tickets:
            raise ConfigError(f"This PC is not linked to {number} for you.",
                              hint="Pair with the code your engineer gives you: `helpline pair CODE`.")
        self.user_store.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SessionOffer(ServiceSessionCalls(self, state.server_public_key), ticket=number, agent_id=state.agent_id,
                            server_key=state.server_public_key, state_dir=self.user_store.directory)

    def queue(self, archive: Path, ticket: str) -> upload.OutboxEntry:
        """Put a bundle in this user's own outbox (their data folder), addressed to the service's server."""
        return upload.enqueue(archive, ticket, self._require().server_url, directory=self.user_store.directory)

    def deliver(self, entry: upload.OutboxEntry, *, progress: Callable[[int, int], None] | None = None) -> BundlePublic:
        """Hand the queued bundle to the service as an open file; it uploads it as the PC's agent."""
        path = entry.path(upload.outbox_dir(self.user_store.directory))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            got = self.call("deliver", {"ticket": entry.ticket, "size": entry.size, "sha256": entry.sha256}, fd=fd,
                            progress=(lambda done, total, what: progress(done, total)) if progress else None)
        finally:
            os.close(fd)
        upload.remove(entry, self.user_store.directory)
        return BundlePublic.model_validate(got)

    def pending(self) -> list[upload.OutboxEntry]:
        return upload.pending(self.user_store.directory)

    def send_queued(self) -> list[upload.QueuedDelivery]:
        state = self.link()
        results = []
        for entry in self.pending():
            if state is None or state.server_url != entry.server_url:
                results.append(upload.QueuedDelivery(entry, upload.Delivery.UNLINKED))
                continue
            try:
                results.append(upload.QueuedDelivery(entry, upload.Delivery.DELIVERED, bundle=self.deliver(entry)))
            except UnavailableError:
                results.append(upload.QueuedDelivery(entry, upload.Delivery.WAITING))
            except HelplineError as exc:
                results.append(upload.QueuedDelivery(entry, upload.Delivery.REFUSED, reason=exc.message))
        return results

    def snapshots(self) -> ServiceSnapshots:
        """Snapshots of this user's home, taken and listed by the service (restore is not served yet)."""
        return ServiceSnapshots(self)

    def waiting_requests(self) -> list[WaitingRequest]:
        """Engineers' requests on this user's tickets that wait for their answer (root: all), oldest first."""
        from agent.service.consent import WaitingRequest

        return [WaitingRequest.from_json(w) for w in self.call("requests_waiting")]

    def answer_request(self, reference: str, *, approve: bool) -> WaitingRequest:
        from agent.service.consent import WaitingRequest

        return WaitingRequest.from_json(self.call("requests_answer", {"reference": reference, "approve": approve}))


class ServiceSessionCalls:
    """The server calls of :class:`agent.session.offer.SessionOffer` (the methods it uses of
    :class:`agent.client.HelplineClient`, same names and answers), made by the agent service for this user."""

    def __init__(self, pc: ServicePC, server_key: str):
        self.pc = pc
        #: The server key the service has pinned, as it said with the last events (it follows a key hand-over).
        self.pinned_server_key = server_key

    def offer_session(self, body: SessionOfferBody) -> SessionPublic:
        got = self.pc.call("session_offer", {"ticket": body.ticket, "host_key": body.host_key, "platform": body.platform})
        return SessionPublic.model_validate(got)

    def session_events(self, session_id: str, after: int = 0, wait: float = 0) -> list[SessionEvent]:
        got = self.pc.call("session_events", {"session_id": session_id, "after": after, "wait": wait})
        if not isinstance(got, dict) or not isinstance(got.get("events"), list):
            raise UnavailableError("The agent service gave an answer this command does not understand.")
        if isinstance(got.get("server_key"), str) and got["server_key"]:
            self.pinned_server_key = got["server_key"]
        return [SessionEvent.model_validate(e) for e in got["events"]]

    def answer_session(self, session_id: str, body: ConsentAnswer) -> RelayTicket | None:
        got = self.pc.call("session_answer", {"session_id": session_id, "answer": body.model_dump(mode="json")})
        return None if got is None else RelayTicket.model_validate(got)

    def session_relay_ticket(self, session_id: str) -> RelayTicket:
        return RelayTicket.model_validate(self.pc.call("session_relay", {"session_id": session_id}))

    def send_session_chat(self, session_id: str, body: ChatMessage) -> ChatEntry:
        return ChatEntry.model_validate(self.pc.call("session_chat", {"session_id": session_id, "text": body.text}))

    def change_session_scopes(self, session_id: str, body: ScopeChange) -> SessionPublic:
        got = self.pc.call("session_scopes", {"session_id": session_id, "scopes": [s.value for s in body.scopes]})
        return SessionPublic.model_validate(got)

    def end_session(self, session_id: str, body: SessionEnd) -> SessionPublic:
        got = self.pc.call("session_end", {"session_id": session_id, "end": body.model_dump(mode="json")})
        return SessionPublic.model_validate(got)

    def upload_recording(self, session_id: str, data: bytes) -> SessionPublic:
        """Hand the recording to the service as an open file (an unnamed one of this user's, holding ``data``)."""
        with tempfile.TemporaryFile(dir=self.pc.user_store.directory) as fh:
            fh.write(data)
            fh.flush()
            got = self.pc.call("session_recording", {"session_id": session_id}, fd=fh.fileno())
        return SessionPublic.model_validate(got)

    def close(self) -> None:
        """Nothing stays open between calls (each is one connection to the socket)."""


class ServiceSnapshots:
    """The part of :class:`agent.snapshots.jobs.Snapshots` the service serves a user: a snapshot of their home now,
    the PC's snapshots that hold it, and how protected the PC is."""

    def __init__(self, pc: ServicePC):
        self.pc = pc

    def run_snapshot(self, *, repositories: tuple[str, ...] | None = None,
                     on_progress: Callable[[str, Progress], None] | None = None,
                     cancel: object = None, paths: tuple[str, ...] = ()) -> list[SnapshotRun]:
        from agent.snapshots.restic.output import Progress

        if paths:
            raise ConfigError("Through the agent service a snapshot is of your home folder.")

        def show(done: int, total: int, what: str | None) -> None:
            if on_progress is not None:
                percent = 100.0 * done / total if total else 0.0
                on_progress(what or "local", Progress(percent, 0, 0, done, total))

        runs = self.pc.call("snapshot_now", {"repositories": list(repositories) if repositories else None}, progress=show)
        return [_run(r) for r in runs]

    def list_snapshots(self, name: str = "local") -> tuple[Snapshot, ...]:
        return tuple(_snapshot(s) for s in self.pc.call("snapshot_list", {"repository": name}))

    def protection(self) -> Protection:
        from agent.snapshots.jobs import Protection

        got = self.pc.call("snapshot_status")
        when = {k: datetime.fromisoformat(v) if isinstance(v, str) and k.endswith("_at") else v for k, v in got.items()}
        return Protection(**when)

    def repository(self, name: str, *, purpose: str = "restore") -> str:
        """The repository's name: the service opens it (see :meth:`find_snapshot`)."""
        return name

    def find_snapshot(self, repository: str, path: str, *, snapshot: str | None = None,
                      at: datetime | None = None, **_ignored) -> Snapshot:
        return _snapshot(self.pc.call("snapshot_find", {"repository": repository, "path": _absolute(path),
                                                        "snapshot": snapshot, "at": at.isoformat() if at else None}))

    def restore(self, path: str | Path, *, snapshot: str | None = None, at: datetime | None = None,
                to: Path | None = None, overwrite: bool = False, repository: str = "local",
                on_progress: Callable[[Progress], None] | None = None, **_ignored) -> Restored:
        """Bring back a path of this user's home: the service restores it, this user's rights place it."""
        from agent.snapshots.jobs import Restored
        from agent.snapshots.restic.output import Progress

        def show(done: int, total: int, what: str | None) -> None:
            if on_progress is not None:
                on_progress(Progress(100.0 * done / total if total else 0.0, 0, 0, done, total))

        got = self.pc.call("restore", {"path": _absolute(path), "to": _absolute(to) if to is not None else None,
                                       "snapshot": snapshot, "at": at.isoformat() if at else None,
                                       "overwrite": overwrite, "repository": repository}, progress=show)
        return Restored(_snapshot(got["snapshot"]), got["path"], Path(got["placed_at"]),
                        Path(got["kept_at"]) if got.get("kept_at") else None)


def _absolute(path: str | Path) -> str:
    """``path`` as this user means it (``~`` is their home), absolute."""
    return os.path.abspath(os.path.expanduser(str(path)))


def _snapshot(data: dict) -> Snapshot:
    from agent.snapshots.restic.output import Snapshot

    return Snapshot(id=data["id"], short_id=data["short_id"], time=datetime.fromisoformat(data["time"]),
                    hostname=data["hostname"], paths=tuple(data["paths"]), tags=tuple(data["tags"]))


def _run(data: dict) -> SnapshotRun:
    from agent.execute import Outcome
    from agent.snapshots.jobs import SnapshotRun
    from agent.snapshots.restic.output import BackupSummary

    summary = data.get("summary")
    if summary is not None:
        summary = BackupSummary(**{**summary, "outcome": Outcome(summary["outcome"]),
                                   "unreadable": tuple(summary.get("unreadable") or ())})
    exception = error_from_wire(data["exception"]) if data.get("exception") else None
    return SnapshotRun(data["repository"], data["status"], datetime.fromisoformat(data["started_at"]),
                       datetime.fromisoformat(data["finished_at"]), snapshot_id=data.get("snapshot_id"),
                       summary=summary, warnings=tuple(data.get("warnings") or ()), error=data.get("error"),
                       exception=exception)
