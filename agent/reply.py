"""The user's reply from the PC: a message, and perhaps one small file, added to their ticket.

The file is read here, on the user's side, and refused before anything is sent
when it is missing, not a regular file, or over the server's size limit.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from agent.client import HelplineClient
from agent.link import ChooseTicket, ticket_in_use
from agent.store import AgentStore
from protocol.errors import ConfigError, InvalidInputError, TooLargeError
from protocol.schemas import MAX_ATTACHMENT_BYTES, AgentTicket, AttachmentUpload, ReplyCreate, parse_input


def read_attachment(path: Path) -> AttachmentUpload:
    """The file at ``path`` ready to send (its base name only); InvalidInputError or TooLargeError when it cannot be."""
    path = path.expanduser()
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror}.", hint="Check the file's name.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"{path} is not a regular file.", hint="Attach one file (a screenshot, a log).")
    if info.st_size > MAX_ATTACHMENT_BYTES:
        raise TooLargeError(f"{path.name} is {info.st_size / 1000:.0f} KB; a reply takes files up to {MAX_ATTACHMENT_BYTES // 1024} KiB.",
                            hint="Send a smaller file; diagnostics go with `helpline share`.")
    with open(path, "rb") as source:
        data = source.read(MAX_ATTACHMENT_BYTES + 1)
    if len(data) > MAX_ATTACHMENT_BYTES:  # it grew while we looked
        raise TooLargeError(f"{path.name} is over {MAX_ATTACHMENT_BYTES // 1024} KiB.")
    return AttachmentUpload(filename=path.name or "attachment", content=base64.b64encode(data).decode("ascii"))


def reply(message: str, *, file: Path | None = None, reference: str | None = None, choose: ChooseTicket | None = None,
          directory: Path | None = None) -> AgentTicket:
    """Add ``message`` (and ``file``) to the ticket ``reference`` or the PC's open ticket; return the ticket after it.

    ConfigError when no ticket is meant: this PC has no open ticket and none was named.
    """
    body = parse_input(ReplyCreate, message=message)
    if file is not None:
        body = body.model_copy(update={"attachment": read_attachment(file)})
    ticket = ticket_in_use(directory, reference, choose=choose)
    if ticket is None:
        raise ConfigError("This PC has no open ticket to reply to.",
                          hint='Open one with `helpline request "what is wrong"`, or name one with --ticket T-1042.')
    store = AgentStore(directory)
    state = store.require()
    with HelplineClient.connect(state.server_url, agent=store.signer(state)) as client:
        return client.reply(ticket.number, body)
