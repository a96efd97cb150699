"""Users talking back: a reply from the PC on its ticket's timeline, with one small file kept in the blob store.

The file's name and bytes come from the PC, so they are untrusted: the name is
made one safe path component before it is stored or shown, and the bytes live
in the blob store under a key the server makes from the attachment's id alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import Audience, NotFoundError, InvalidInputError, TooLargeError
from protocol.schemas import MAX_ATTACHMENT_BYTES, AttachmentPublic, AttachmentUpload, TicketStatus
from protocol.untrusted import safe_component, shown
from server import tickets as ticket_svc
from server.audit import Actor, record, timeline
from server.blobs import ATTACHMENTS, BlobStore, key_under
from server.models import Agent, Attachment, Ticket


@dataclass(frozen=True)
class ReceivedFile:
    """An attachment checked and stored in the blob store, not yet recorded in the database."""

    id: str
    filename: str
    blob_key: str
    size: int
    sha256: str


def receive_file(blobs: BlobStore, ticket: Ticket, upload: AttachmentUpload) -> ReceivedFile:
    """Decode, size-check and store a reply's file; InvalidInputError or TooLargeError if it is not acceptable.

    Called before the reply's database writes, so the blob store is never
    waited on while the transaction holds the write lock.
    """
    try:
        data = base64.b64decode(upload.content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("The attached file is not valid base64.", hint="Update the Helpline agent.") from None
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise TooLargeError(f"The attached file is {len(data) / 1000:.0f} KB, over the limit of {MAX_ATTACHMENT_BYTES // 1024} KiB.",
                            hint="Send a smaller file, or a screenshot; diagnostics go with `helpline share`.")
    attachment_id = str(uuid.uuid4())
    key = key_under(ATTACHMENTS, ticket.label, attachment_id)
    info = blobs.put(key, data, size_hint=len(data))
    filename = safe_component(upload.filename, fallback="attachment")
    return ReceivedFile(attachment_id, filename, key, info.size, info.sha256 or hashlib.sha256(data).hexdigest())


def add_reply(session: Session, ticket: Ticket, agent: Agent, message: str, received: ReceivedFile | None, *,
              now: datetime) -> Attachment | None:
    """Put the user's reply (and its stored file) on the ticket's timeline at ``now``, audited.

    A ticket waiting for the user goes back to open: the user has answered.
    A reply is not an engineer's answer, so the first-response clock keeps running.
    """
    actor = Actor.of_agent(agent)
    attachment = None
    text = message
    if received is not None:
        attachment = Attachment(id=received.id, ticket=ticket, agent_id=agent.id, hostname=agent.hostname,
                                filename=received.filename, blob_key=received.blob_key, size=received.size,
                                sha256=received.sha256, created_at=now)
        session.add(attachment)
        text = f"{message}\n[attached {received.filename}, {received.size} bytes, id {received.id}]"
    timeline(session, ticket, actor, "reply", text)
    record(session, actor, "ticket.reply", "ticket", ticket.label, length=len(message),
           attachment_id=received.id if received else None)
    if ticket.status == TicketStatus.WAITING.value:
        ticket_svc.change_status(session, ticket, actor, TicketStatus.OPEN, now=now)
    session.flush()
    return attachment


def attachment_public(attachment: Attachment) -> AttachmentPublic:
    return AttachmentPublic(id=attachment.id, ticket=attachment.ticket.label, hostname=attachment.hostname,
                            filename=attachment.filename, size=attachment.size, sha256=attachment.sha256,
                            created_at=attachment.created_at)


def ticket_attachments(session: Session, ticket: Ticket) -> list[Attachment]:
    """A ticket's attachments, oldest first."""
    query = select(Attachment).where(Attachment.ticket_id == ticket.id).order_by(Attachment.created_at, Attachment.id)
    return list(session.scalars(query))


def get_attachment(session: Session, ticket: Ticket, attachment_id: str) -> Attachment:
    """The attachment ``attachment_id`` of ``ticket``; NotFoundError for any other id."""
    attachment = session.get(Attachment, attachment_id)
    if attachment is None or attachment.ticket_id != ticket.id:
        raise NotFoundError(f"{ticket.label} has no attachment {shown(attachment_id)}.", hint="Check the attachment's id.",
                            hints={Audience.ENGINEER: f"See its attachments with `helpline ticket show {ticket.label}`."})
    return attachment
