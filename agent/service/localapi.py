"""The agent service's local socket: the PC's identity, lent to the users of the PC one call at a time.

``helpline agent run`` listens on a Unix socket (:func:`agent.service.wire.socket_path`;
its folder 0755, the socket 0666): anyone on the PC may connect, and what a
call may do is decided per call from the caller's uid, which the kernel tells
(:func:`agent.service.wire.peer_of`), never the caller. A user sees and acts on
the tickets they linked (the service records the uid with each); root, the
PC's administrator, sees all of them and alone may enroll the PC.

The operations are those of :class:`agent.local.ThisPC` that the user-facing
commands need, and the server calls of a user's remote session (:mod:`.sessions`:
the session itself runs in the user's own process; only the uid that offered a
session is answered for it). Nothing a user sends is trusted: ticket references are checked
against the caller's own, a bundle arrives as a file descriptor the caller
opened as themselves (so it can only be a file they could read), is copied
with a size bound and checked against the digest they announced. Snapshots
and restores are of the caller's own home; whatever a restore writes in it is
written by a child running as the caller (:mod:`.user_restore`), so the
service never writes where a user points it. Connections are bounded in
number (one thread each), and each request in size and in time
(:data:`READ_TIMEOUT`).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent import link, upload
from agent.client import HelplineClient
from agent.http import normalize_url
from agent.paths import write_private
from agent.snapshots.state import touches
from agent.store import AgentState, AgentStore
from protocol.errors import (ConfigError, DamagedError, ForbiddenError, HelplineError, InvalidInputError, NotFoundError,
                             TooLargeError, UnavailableError)
from protocol.schemas import ReplyCreate, parse_input
from protocol.tickets import parse_ticket_ref, ticket_label

from .sessions import SessionCalls
from .wire import MAX_MESSAGE_BYTES, LineReader, Peer, error_to_wire, peer_of, send_line

if TYPE_CHECKING:  # the restic wrapper loads only when a snapshot call comes
    from agent.snapshots.jobs import Snapshots

logger = logging.getLogger("helpline.service.localapi")

#: Seconds a caller has to send its whole request once connected.
READ_TIMEOUT = 30.0
#: Connections served at once (one thread each); one more is answered "busy" and closed.
MAX_CONNECTIONS = 16
#: Who linked which ticket through the socket, in the service's state folder.
OWNERS_FILE = "local-owners.json"

#: Tells the caller how far a long call is: (done, total, what), sent as a progress line.
Progress = Callable[..., None]
#: Calls that change the PC's saved link (its tickets): serialized.
CHANGES_LINK = frozenset({"enroll", "pair", "request_help", "hand_over"})
#: The repositories a user may name for a snapshot or a listing.
REPOSITORIES = ("local", "server")


class TicketOwners:
    """The OS users (uids) who linked each ticket through the socket; kept beside the PC's identity."""

    def __init__(self, directory: Path):
        self.path = directory / OWNERS_FILE
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[int]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ConfigError(f"The agent service's file {self.path} is damaged.",
                              hint="An administrator can remove it; every ticket is then root's alone.") from exc
        tickets = data.get("tickets") if isinstance(data, dict) else None
        return {str(k): [int(u) for u in v] for k, v in tickets.items()} if isinstance(tickets, dict) else {}

    def record(self, number: str, uid: int) -> None:
        with self._lock:
            owners = self._load()
            if uid not in owners.setdefault(number, []):
                owners[number].append(uid)
            write_private(self.path, json.dumps({"tickets": owners}, indent=2).encode())

    def may_see(self, number: str, peer: Peer) -> bool:
        """Root sees every ticket of the PC; a user the tickets they linked."""
        return peer.is_admin or peer.uid in self._load().get(number, [])


class LocalAPI:
    """The calls the socket serves, on the service's identity in ``store``; each given the caller's :class:`Peer`."""

    def __init__(self, store: AgentStore, *, snapshots: Snapshots | None = None):
        self.store = store
        self.owners = TicketOwners(store.directory)
        self._snapshots = snapshots
        self._snapshot_lock = threading.Lock()  # one snapshot at a time for the socket's callers
        self._state_lock = threading.Lock()  # calls that change the saved link run one at a time (no lost ticket)
        self.ops: dict[str, Callable[[Peer, dict, int | None, Progress], object]] = {
            "link": self.op_link, "enroll": self.op_enroll, "pair": self.op_pair, "request_help": self.op_request_help,
            "tickets": self.op_tickets, "reply": self.op_reply, "deliver": self.op_deliver,
            "snapshot_now": self.op_snapshot_now, "snapshot_list": self.op_snapshot_list,
            "snapshot_status": self.op_snapshot_status, "snapshot_find": self.op_snapshot_find,
            "restore": self.op_restore, "hand_over": self.op_hand_over,
            "requests_waiting": self.op_requests_waiting, "requests_answer": self.op_requests_answer,
        }
        self.sessions = SessionCalls(self._client, self._own_ticket)  # a user's remote session's server calls
        self.ops.update(self.sessions.ops())

    @property
    def snapshots(self) -> Snapshots:
        if self._snapshots is None:
            from agent.snapshots.jobs import Snapshots

            self._snapshots = Snapshots(self.store)
        return self._snapshots

    def call(self, peer: Peer, op: str, args: dict, fd: int | None = None, progress: Progress | None = None) -> object:
        handler = self.ops.get(op)
        if handler is None:
            raise InvalidInputError(f"The agent service does not serve {op!r}.",
                                    hint="This `helpline` may be newer than the agent service; upgrade the service.")
        progress = progress or (lambda done, total, what=None: None)
        if op in CHANGES_LINK:
            with self._state_lock:
                return handler(peer, args, fd, progress)
        return handler(peer, args, fd, progress)

    # -- what a caller may see --------------------------------------------------------------------------------------

    def _public(self, state: AgentState, peer: Peer) -> dict:
        """The PC's link as ``peer`` may see it: never the credential, only their own tickets."""
        shown = asdict(state)
        shown["credential"] = ""
        shown["tickets"] = [t for t in state.tickets if self.owners.may_see(t, peer)]
        return shown

    def _own_ticket(self, reference: object, peer: Peer) -> str:
        if not isinstance(reference, str):
            raise InvalidInputError("Name a ticket, like T-1042.")
        number = ticket_label(parse_ticket_ref(reference))
        state = self.store.require()
        if number not in state.tickets or not self.owners.may_see(number, peer):
            raise NotFoundError(f"{number} is not one of your tickets on this PC.",
                                hint="`helpline status --all` lists yours; pair with the code your engineer gives you.")
        return number

    def _server_for(self, peer: Peer, server_url: object) -> str | None:
        """The server a link call goes to: the one the PC is enrolled with. Users cannot move the PC elsewhere."""
        state = self.store.load()
        if server_url is not None and not isinstance(server_url, str):
            raise InvalidInputError("The server address must be text.")
        if state is None:
            if not peer.is_admin:
                raise ConfigError("The agent service of this PC is not linked to a Helpline server yet.",
                                  hint="Ask your administrator to enroll this PC with the Helpline server.")
            return server_url
        if server_url and normalize_url(server_url) != state.server_url:
            raise ForbiddenError(f"This PC's agent service is linked to {state.server_url}, not {server_url}.",
                                 hint="Leave out --server; your administrator moves the PC to another server.")
        return state.server_url

    @staticmethod
    def _text(args: dict, name: str, *, required: bool = True) -> str | None:
        value = args.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise InvalidInputError(f"The call needs {name} as text.")
        return value

    # -- the calls --------------------------------------------------------------------------------------------------

    def op_link(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict | None:
        state = self.store.load()
        return None if state is None else self._public(state, peer)

    def op_enroll(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        if not peer.is_admin:
            raise ForbiddenError("Only the PC's administrator (root) enrolls the PC's agent.", hint="Run it with sudo.")
        state = link.enroll(self._text(args, "server_url"), self._text(args, "token"),
                            expected_fingerprint=self._text(args, "expected_fingerprint", required=False),
                            directory=self.store.directory)
        logger.info("uid %d enrolled the PC as agent %s", peer.uid, state.agent_id)
        return self._public(state, peer)

    def op_pair(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        url = self._server_for(peer, args.get("server_url"))
        state, ticket = link.pair(self._text(args, "code"), server_url=url,
                                  expected_fingerprint=self._text(args, "expected_fingerprint", required=False),
                                  directory=self.store.directory)
        self.owners.record(ticket.number, peer.uid)
        logger.info("uid %d paired the PC to %s", peer.uid, ticket.number)
        return {"state": self._public(state, peer), "ticket": ticket.model_dump(mode="json")}

    def op_request_help(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        url = self._server_for(peer, args.get("server_url"))
        state, answer = link.request_help(self._text(args, "title"), description=self._text(args, "description", required=False) or "",
                                          requester=self._text(args, "requester", required=False) or "",
                                          server_url=url, directory=self.store.directory)
        self.owners.record(answer.ticket.number, peer.uid)
        logger.info("uid %d opened %s", peer.uid, answer.ticket.number)
        shown = answer.model_copy(update={"agent": None})  # its credential is the PC's, never a user's
        return {"state": self._public(state, peer), "answer": shown.model_dump(mode="json")}

    def op_tickets(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> list[dict]:
        reference = args.get("reference")
        if reference is not None:
            tickets = link.my_tickets(self.store.directory, self._own_ticket(reference, peer))
        else:
            tickets = [t for t in link.my_tickets(self.store.directory) if self.owners.may_see(t.number, peer)]
        return [t.model_dump(mode="json") for t in tickets]

    def op_hand_over(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        """Take over the tickets of the caller's old per-user identity, which signed the statement in ``args``; the
        tickets become the caller's on this PC. The server checks the old key's signature and revokes it."""
        from protocol.hand_over import HandOverRequest

        state = self.store.require()
        server_url = self._text(args, "server_url")
        if normalize_url(server_url) != state.server_url:
            raise ConfigError("Your earlier identity on this PC belongs to another Helpline server; it stays as it is.")
        body = parse_input(HandOverRequest, **{k: args.get(k) for k in ("from_agent_id", "tickets", "signed_at", "signature")})
        with self._client() as client:
            answer = client.hand_over(body)
        for number in answer.tickets:
            self.owners.record(number, peer.uid)
        state = self.store.require()
        for number in answer.tickets:
            link._remember_ticket(state, number)
        self.store.save(state)
        logger.info("uid %d handed over %s from agent %s", peer.uid, ", ".join(answer.tickets), answer.from_agent_id)
        return answer.model_dump(mode="json")

    # -- engineers' requests waiting for a user's answer ------------------------------------------------------------

    def _visible_requests(self, peer: Peer):
        """The consent box and the waiting requests ``peer`` may answer: those on their tickets (root: all)."""
        from agent.service.consent import ConsentBox

        box = ConsentBox(self.store.directory / "requests")

        def theirs(ticket: str | None) -> bool:
            if peer.is_admin:
                return True
            try:
                return ticket is not None and self.owners.may_see(ticket_label(parse_ticket_ref(ticket)), peer)
            except HelplineError:
                return False

        return box, [w for w in box.waiting() if theirs(w.ticket)]

    def op_requests_waiting(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> list[dict]:
        return [w.to_json() for w in self._visible_requests(peer)[1]]

    def op_requests_answer(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        from protocol.errors import AmbiguousError

        reference = (self._text(args, "reference") or "").strip().lower()
        box, visible = self._visible_requests(peer)
        matches = [w for w in visible if w.id == reference or (len(reference) >= 4 and w.id.startswith(reference))]
        if not matches:
            raise NotFoundError(f"No request {reference[:40]!r} waits for your answer on this PC.",
                                hint="See the waiting ones with `helpline requests`.")
        if len(matches) > 1:
            raise AmbiguousError(f"{reference!r} matches {len(matches)} waiting requests.", hint="Give more of the id.")
        try:
            name = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            name = f"uid {peer.uid}"
        item = box.answer(matches[0].id, approve=args.get("approve") is True, by=name)
        logger.info("uid %d %s request %s", peer.uid, "approved" if args.get("approve") is True else "refused", item.id)
        return item.to_json()

    def _client(self) -> HelplineClient:
        state = self.store.require()
        return HelplineClient.connect(state.server_url, agent=self.store.signer(state), timeout=60)

    def op_reply(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        number = self._own_ticket(args.get("ticket"), peer)
        body = parse_input(ReplyCreate, message=self._text(args, "message"), attachment=args.get("attachment"))
        with self._client() as client:
            after = client.reply(number, body)
        logger.info("uid %d replied on %s", peer.uid, number)
        return after.model_dump(mode="json")

    def op_deliver(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        """Upload the bundle the caller opened (``fd``) to one of their tickets, as the PC's agent."""
        number = self._own_ticket(args.get("ticket"), peer)
        size, sha256 = args.get("size"), self._text(args, "sha256")
        if fd is None:
            raise InvalidInputError("A bundle is handed over as an open file; none came with the call.")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not isinstance(size, int) or info.st_size != size:
            raise InvalidInputError("The bundle handed to the agent service is not a regular file of the size announced.")
        state = self.store.require()
        with self._client() as client:
            limit = client.server_info().max_bundle_bytes
        if size > limit:  # before copying anything: a user cannot fill the service's disk
            raise TooLargeError(f"The bundle is {size / 1e6:.1f} MB; the server takes at most {limit / 1e6:.0f} MB.",
                                hint="Leave a category out with --exclude, or save it with --output and send it another way.")
        copy = self._copy_in(fd, size)
        entry = upload.enqueue(copy, number, state.server_url, directory=self.store.directory)
        try:
            if entry.sha256 != sha256:
                raise DamagedError("The bundle changed while it was handed to the agent service.", hint="Share again.")
            bundle = upload.deliver(entry, self.store.signer(state), directory=self.store.directory, progress=progress)
        except BaseException:
            upload.remove(entry, self.store.directory)  # the caller's own outbox keeps the bundle
            raise
        logger.info("uid %d delivered a bundle of %d bytes to %s", peer.uid, size, number)
        return bundle.model_dump(mode="json")

    # -- snapshots of the caller's home ----------------------------------------------------------------------------

    @staticmethod
    def _home(peer: Peer) -> Path | None:
        """The caller's home, which their snapshot calls are about (None for root: the policy's paths, all of it).

        It must be a folder the caller owns: an account whose home is missing or someone else's gets nothing."""
        if peer.is_admin:
            return None
        try:
            home = Path(pwd.getpwuid(peer.uid).pw_dir)
        except KeyError:
            raise ForbiddenError("Your account is not in this PC's list of users; the agent service serves only those.") from None
        try:
            info = os.stat(home)
        except OSError:
            info = None
        if not home.is_absolute() or info is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != peer.uid:
            raise ConfigError(f"Your home folder {home} is missing or not yours; the agent service snapshots only a "
                              "home its user owns.", hint="Ask your administrator.")
        return home

    @staticmethod
    def _repositories(args: dict, *, one: bool = False) -> tuple[str, ...] | None:
        names = args.get("repositories") if not one else [args.get("repository") or "local"]
        if names is None:
            return None
        if not isinstance(names, list) or not all(n in REPOSITORIES for n in names):
            raise InvalidInputError("A repository is local or server.")
        return tuple(names)

    def op_snapshot_now(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> list[dict]:
        """A snapshot of the caller's home now (root: of the policy's paths), with progress per repository."""
        home = self._home(peer)
        names = self._repositories(args)
        with self._snapshot_lock:
            runs = self.snapshots.run_snapshot(
                repositories=names, paths=(str(home),) if home else (),
                on_progress=lambda name, p: progress(p.bytes_done, p.total_bytes, name))
        logger.info("uid %d took a snapshot of %s", peer.uid, home or "the policy's paths")
        return [run_to_wire(run) for run in runs]

    def op_snapshot_list(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> list[dict]:
        """The PC's snapshots that hold the caller's home (only those of their paths); root's: all of them."""
        [name] = self._repositories(args, one=True)
        home = self._home(peer)
        shown = []
        for snap in self.snapshots.list_snapshots(name):
            paths = list(snap.paths) if home is None else [p for p in snap.paths if touches(p, str(home))]
            if paths:
                shown.append(snapshot_to_wire(snap, paths))
        return shown

    def op_snapshot_status(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        """How protected the caller's home is (root: the PC), from the service's own records."""
        found = self.snapshots.protection(self._home(peer))
        return {name: (value.isoformat() if hasattr(value, "isoformat") else value)
                for name, value in asdict(found).items()}

    # -- restores into the caller's own home, placed by a child running as the caller -----------------------------

    def _inside_home(self, args: dict, name: str, home: Path | None, *, required: bool = True) -> Path | None:
        text = self._text(args, name, required=required)
        if text is None:
            return None
        path = Path(os.path.normpath(text))
        if not path.is_absolute():
            raise InvalidInputError(f"The {name} to restore must be an absolute path.")
        if home is not None and not (path == home or str(path).startswith(str(home).rstrip("/") + "/")):
            raise ForbiddenError(f"{path} is not in your home folder; through the agent service you restore into your "
                                 "own home only.", hint="Ask your administrator for files elsewhere.")
        return path

    def _when(self, args: dict):
        at = self._text(args, "at", required=False)
        if at is None:
            return None
        try:
            return datetime.fromisoformat(at)
        except ValueError:
            raise InvalidInputError(f"'{at}' is not a time.") from None

    def op_snapshot_find(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        """The snapshot a restore of ``path`` would take (shown before an overwrite is confirmed)."""
        home = self._home(peer)
        path = self._inside_home(args, "path", home)
        [name] = self._repositories(args, one=True)
        repo = self.snapshots.repository(name, purpose="restore")
        found = self.snapshots.find_snapshot(repo, str(path), snapshot=self._text(args, "snapshot", required=False),
                                             at=self._when(args), no_lock=name == "server")
        return snapshot_to_wire(found, list(found.paths))

    def op_restore(self, peer: Peer, args: dict, fd: int | None, progress: Progress) -> dict:
        """Bring back a path of the caller's home; root's restores run as before, a user's are placed as the user."""
        home = self._home(peer)
        original = self._inside_home(args, "path", home)
        to = self._inside_home(args, "to", home, required=False)
        [name] = self._repositories(args, one=True)
        snapshot, at, overwrite = self._text(args, "snapshot", required=False), self._when(args), args.get("overwrite") is True
        show = lambda p: progress(p.bytes_done, p.total_bytes, "restore")  # noqa: E731
        if home is None:
            done = self.snapshots.restore(original, snapshot=snapshot, at=at, to=to, overwrite=overwrite,
                                          repository=name, on_progress=show)
        else:
            from .user_restore import restore_as_user

            done = restore_as_user(self.snapshots, pwd.getpwuid(peer.uid), original, snapshot=snapshot, at=at, to=to,
                                   overwrite=overwrite, repository=name, area=self.restore_area(), on_progress=show)
        logger.info("uid %d restored %s to %s", peer.uid, done.path, done.placed_at)
        return {"snapshot": snapshot_to_wire(done.snapshot, list(done.snapshot.paths)), "path": done.path,
                "placed_at": str(done.placed_at), "kept_at": str(done.kept_at) if done.kept_at else None}

    def restore_area(self) -> Path:
        """Where a user's restore is staged before the user's own process takes it: beside the service's state
        folder (which is 0700), 0711 so a user reaches the one staging folder given to them and lists nothing."""
        area = self.store.directory.parent / f"{self.store.directory.name}-restores"
        area.mkdir(mode=0o711, exist_ok=True)
        area.chmod(0o711)
        return area

    def _copy_in(self, fd: int, size: int) -> Path:
        """Copy ``size`` bytes of the caller's file into the service's folder (0600), from its start."""
        target = self.store.folder("incoming") / f"{uuid.uuid4().hex}.tar.gz"
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = 0
            while offset < size:
                try:
                    chunk = os.pread(fd, min(1 << 20, size - offset), offset)
                except OSError as exc:
                    raise InvalidInputError(f"The bundle handed to the agent service cannot be read: {exc.strerror}.") from None
                if not chunk:
                    raise DamagedError("The bundle shrank while it was handed to the agent service.", hint="Share again.")
                os.write(out, chunk)
                offset += len(chunk)
        except BaseException:
            os.close(out)
            target.unlink(missing_ok=True)
            raise
        os.close(out)
        return target


def snapshot_to_wire(snap, paths: list[str]) -> dict:
    return {"id": snap.id, "short_id": snap.short_id, "time": snap.time.isoformat(), "hostname": snap.hostname,
            "paths": paths, "tags": list(snap.tags)}


def run_to_wire(run) -> dict:
    """A :class:`~agent.snapshots.jobs.SnapshotRun` as JSON (its error by class name, like every error here)."""
    summary = asdict(run.summary) if run.summary is not None else None
    if summary is not None:
        summary["outcome"] = run.summary.outcome.value
    return {"repository": run.repository, "status": run.status, "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat(), "snapshot_id": run.snapshot_id, "summary": summary,
            "warnings": list(run.warnings), "error": run.error,
            "exception": error_to_wire(run.exception) if run.exception is not None else None}


# -- the socket -----------------------------------------------------------------------------------------------------


class LocalServer:
    """Serves ``api`` on the Unix socket at ``path`` from a thread, one thread per connection (bounded)."""

    def __init__(self, api: LocalAPI, path: Path, *, read_timeout: float = READ_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, max_bytes: int = MAX_MESSAGE_BYTES):
        self.api = api
        self.path = path
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None

    def start(self) -> LocalServer:
        """Bind (folder 0755, socket 0666) and serve; ConfigError when another service is listening there."""
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o755)
            parent.chmod(0o755)
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o666)  # everyone may call; each call is judged by the caller's uid
            sock.listen(16)
            sock.settimeout(0.5)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"The agent service cannot listen on {self.path}: {exc.strerror or exc}.",
                              hint="Run it as root, or point it elsewhere with HELPLINE_AGENT_SOCKET.") from None
        self._inode = os.lstat(self.path).st_ino
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="local-socket", daemon=True)
        self._thread.start()
        return self

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{self.path} exists and is not a socket.", hint="Remove it, or choose another path.")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # left by a service that is gone
            return
        finally:
            probe.close()
        raise ConfigError(f"Another agent service is listening on {self.path}.", hint="Stop it first.")

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept under way (Linux); else its timeout does
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        try:
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                self._refuse_busy(conn)
                continue
            threading.Thread(target=self._serve_one, args=(conn,), name="local-call", daemon=True).start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        """Answer "busy" and close. The request is read first (briefly, bounded), as closing a socket with unread
        data would reset it and the caller would never see the answer."""
        try:
            conn.settimeout(0.2)
            try:
                LineReader(conn, max_bytes=self.max_bytes).read(0.2)
            except HelplineError:
                pass
            conn.settimeout(1)
            send_line(conn, {"ok": False, "error": error_to_wire(UnavailableError(
                "The agent service is busy with other calls.", hint="Try again in a moment."))})
        except OSError:
            pass
        finally:
            conn.close()

    def _serve_one(self, conn: socket.socket) -> None:
        reader = LineReader(conn, max_bytes=self.max_bytes, accept_fds=True)
        try:
            try:
                peer = peer_of(conn)
                request = reader.read(self.read_timeout)
                if request is None:
                    return
                op, args = request.get("op"), request.get("args", {})
                if not isinstance(op, str) or not isinstance(args, dict):
                    raise InvalidInputError("A call names its op and gives its args as an object.")
                fd = reader.fds.pop() if reader.fds else None
                conn.settimeout(60)  # for the answers; a caller that stops reading is let go
                try:
                    result = self.api.call(peer, op, args, fd, lambda done, total, what=None: send_line(
                        conn, {"progress": [done, total], "what": what}))
                finally:
                    if fd is not None:
                        os.close(fd)
                send_line(conn, {"ok": True, "result": result})
            except HelplineError as exc:
                self._answer_error(conn, exc)
            except OSError:
                pass  # the caller went away
            except Exception:
                logger.exception("a call on the local socket failed")
                self._answer_error(conn, HelplineError("The agent service failed on this call; its log has the details."))
        finally:
            reader.close_fds()
            conn.close()
            self._slots.release()

    @staticmethod
    def _answer_error(conn: socket.socket, exc: HelplineError) -> None:
        try:
            send_line(conn, {"ok": False, "error": error_to_wire(exc)})
        except OSError:
            pass


def open_local_socket(store: AgentStore, path: Path, *, snapshots: Snapshots | None = None) -> LocalServer:
    """Start serving this PC's identity in ``store`` (and its ``snapshots``) on ``path``; the caller stops it."""
    return LocalServer(LocalAPI(store, snapshots=snapshots), path).start()
