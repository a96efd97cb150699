"""This PC's agent as the user-facing commands see it: one identity, one set of operations.

Every `helpline` command acting as the PC (pair, request, status, share) goes
through :func:`this_pc`. Without the service that is :class:`ThisPC`, which runs the
operations in the caller's process on the identity kept in the user's data
folder. Where the agent service runs (its socket exists), the identity belongs
to the service and this function returns a client of its local socket with the
same methods instead (:class:`agent.service.socketpc.ServicePC`;
docs/design.md, "One identity per PC"); callers do not change.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.store import AgentState, AgentStore

if TYPE_CHECKING:  # each operation loads its own code: a restore, say, starts without the server client's
    from agent import link, upload
    from agent.service.consent import WaitingRequest
    from agent.service.socketpc import ServicePC
    from agent.session.offer import SessionOffer
    from agent.share import ShareRequest, TicketChoice
    from agent.snapshots.jobs import Snapshots
    from protocol.schemas import AgentTicket, BundlePublic, SelfServiceResponse


class ThisPC:
    """The PC's agent, run in this process on the identity in ``store``."""

    def __init__(self, store: AgentStore):
        self.store = store

    @property
    def _dir(self) -> Path:
        return self.store.directory

    def link(self) -> AgentState | None:
        """What this PC is linked to (server, agent id, tickets), or None before enrolling or pairing."""
        return self.store.load()

    def enroll(self, server_url: str, token: str, *, expected_fingerprint: str | None = None) -> AgentState:
        from agent import link

        return link.enroll(server_url, token, expected_fingerprint=expected_fingerprint, directory=self._dir)

    def pair(self, code: str, *, server_url: str | None = None,
             expected_fingerprint: str | None = None) -> tuple[AgentState, AgentTicket]:
        from agent import link

        return link.pair(code, server_url=server_url, expected_fingerprint=expected_fingerprint, directory=self._dir)

    def request_help(self, title: str, *, description: str = "", requester: str = "",
                     server_url: str | None = None) -> tuple[AgentState, SelfServiceResponse]:
        from agent import link

        return link.request_help(title, description=description, requester=requester, server_url=server_url,
                                 directory=self._dir)

    def tickets(self, reference: str | None = None) -> list[AgentTicket]:
        """The tickets this PC is linked to, as the server has them now (one, if ``reference``)."""
        from agent import link

        return link.my_tickets(self._dir, reference)

    def ticket_in_use(self, reference: str | None = None, *, choose: link.ChooseTicket | None = None) -> AgentTicket | None:
        """The linked ticket a user command acts on: ``reference``, else the one open ticket (``choose`` picks
        among several); None when none is open. Every user command that works on "my ticket" goes through here."""
        from agent import link

        return link.ticket_in_use(self._dir, reference, choose=choose)

    def choose_ticket(self, *, code: str | None = None, ticket: str | None = None, new: bool = False,
                      server_url: str | None = None, choose: link.ChooseTicket | None = None) -> TicketChoice:
        """The ticket a share goes to, before gathering (see :func:`agent.share.choose_ticket`)."""
        from agent.share import choose_ticket

        return choose_ticket(code=code, ticket=ticket, new=new, server_url=server_url, directory=self._dir, choose=choose)

    def open_ticket(self, request: ShareRequest, *, server_url: str | None = None) -> TicketChoice:
        """Open a new ticket for a share the user agreed to send."""
        from agent.share import open_ticket

        return open_ticket(request, server_url=server_url, directory=self._dir)

    def reply(self, message: str, *, file: Path | None = None, ticket: str | None = None,
              choose: link.ChooseTicket | None = None) -> AgentTicket:
        """Add the user's reply (and one small file) to ``ticket`` or the PC's open ticket."""
        from agent import reply

        return reply.reply(message, file=file, reference=ticket, choose=choose, directory=self._dir)

    def session_offer(self, ticket: str) -> SessionOffer:
        """A remote session to offer on ``ticket`` as this PC's agent: requests signed with its key, grants
        checked against the server key it pinned, used grants remembered in its folder. The caller offers it,
        asks the user, and closes it (:meth:`agent.session.offer.SessionOffer.shutdown`)."""
        from agent.client import HelplineClient
        from agent.session.offer import SessionOffer

        state = self.store.require()
        client = HelplineClient.connect(state.server_url, agent=self.store.signer(state))
        return SessionOffer(client, ticket=ticket, agent_id=state.agent_id, server_key=state.server_public_key,
                            state_dir=self._dir)

    def queue(self, archive: Path, ticket: str) -> upload.OutboxEntry:
        """Put a bundle for ``ticket`` in the outbox, addressed to the server this PC is linked to."""
        from agent import upload

        return upload.enqueue(archive, ticket, self.store.require().server_url, directory=self._dir)

    def deliver(self, entry: upload.OutboxEntry, *, progress: Callable[[int, int], None] | None = None) -> BundlePublic:
        """Send one queued bundle as this PC's agent (requests signed with its key, which never leaves it)."""
        from agent import upload

        return upload.deliver(entry, self.store.signer(), directory=self._dir, progress=progress)

    def pending(self) -> list[upload.OutboxEntry]:
        from agent import upload

        return upload.pending(self._dir)

    def send_queued(self) -> list[upload.QueuedDelivery]:
        from agent import upload

        return upload.send_queued(directory=self._dir)

    def snapshots(self) -> Snapshots:
        """This PC's snapshots: take one, list, restore, how protected it is (the agent service runs the same)."""
        from agent.snapshots.jobs import Snapshots

        return Snapshots(self.store)

    def waiting_requests(self) -> list[WaitingRequest]:
        """Engineers' requests that wait for this PC's user to agree (a restore, fresh diagnostics), oldest first."""
        from agent.service.consent import ConsentBox

        return ConsentBox(self._dir / "requests").waiting()

    def answer_request(self, reference: str, *, approve: bool) -> WaitingRequest:
        """Approve or refuse the waiting request ``reference`` names (its id or a unique start of it)."""
        import getpass

        from agent.service.consent import ConsentBox

        return ConsentBox(self._dir / "requests").answer(reference, approve=approve, by=getpass.getuser())


def this_pc() -> ThisPC | ServicePC:
    """This PC's agent for the user-facing commands: the agent service's, through its local socket, where the
    service listens; else the identity in this user's data folder. HELPLINE_AGENT_DIR points it at a folder
    and always runs in-process (tests, demos, and the service itself)."""
    if os.environ.get("HELPLINE_AGENT_DIR") is None:
        from agent.service.wire import socket_path

        path = socket_path()
        if _is_socket(path):
            from agent.service.socketpc import ServicePC

            return ServicePC(path)
    return ThisPC(AgentStore())


def in_process_pc() -> ThisPC:
    """The identity in this process's own folder (HELPLINE_AGENT_DIR, else the user's data folder), never the
    socket: the agent service's own (``helpline agent run``)."""
    return ThisPC(AgentStore())


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
