"""Resumable uploads of diagnostics bundles, and the bundles they become.

Chunks arrive in any order and may be sent again; each is checked against its
own SHA-256 and kept in the blob store until the upload is completed. Completion
joins them, checks the whole file's SHA-256, inspects the archive without
unpacking it, stores it and adds it to the ticket. File and network I/O happen
outside database transactions so a slow upload never holds the database lock.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Text, and_, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from protocol.archive import inspect_archive
from protocol.bundle import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    SUMMARY_MAX_BYTES,
    SUMMARY_NAME,
    parse_summary,
    read_stored_document,
)
from protocol.manifest import Manifest, parse_manifest
from protocol.schemas import BundleDetail, BundlePublic, TicketStatus, UploadCreate, UploadStatus
from protocol.errors import (
    Audience,
    ConflictError,
    DamagedError,
    HelplineError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    StorageFullError,
    TooLargeError,
)
from protocol.untrusted import shown
from protocol.units import human_size
from protocol.webhooks import WebhookKind
from server import webhooks
from server.audit import Actor, record, timeline
from server.blobs import BUNDLES, UPLOADS, BlobStore, key_under
from server.models import Agent, Bundle, Counter, Ticket, Upload, UploadChunk
from server.pairing import paired_ticket
from server.refusals import refusal
from server.settings import ServerSettings

#: The counter row every reservation updates first: it serialises reservations (a row lock on
#: PostgreSQL, the write lock on SQLite) so quotas are counted with no other reservation in flight.
RESERVATIONS = "upload-reservations"
QUOTA_HINT = "The bundle stays queued on this PC; run `helpline share --send-queued` later, or ask your support team."
FULL_HINT = "The bundle stays queued on this PC; run `helpline share --send-queued` later. Administrators: free disk space."


def chunk_key(upload_id: str, index: int) -> str:
    return key_under(UPLOADS, upload_id, f"{index:06d}")


def chunk_count(upload: Upload) -> int:
    return -(-upload.size // upload.chunk_size)


def expected_chunk_size(upload: Upload, index: int) -> int:
    if index < chunk_count(upload) - 1:
        return upload.chunk_size
    return upload.size - upload.chunk_size * (chunk_count(upload) - 1)


def status_of(upload: Upload) -> UploadStatus:
    return UploadStatus(
        id=upload.id, ticket=upload.ticket.label, filename=upload.filename, size=upload.size, sha256=upload.sha256,
        chunk_size=upload.chunk_size, chunks=chunk_count(upload), received=[c.index for c in upload.chunks],
        expires_at=upload.expires_at, complete=upload.completed_at is not None, bundle_id=upload.bundle_id,
    )


def open_ticket_for_uploads(session: Session, agent: Agent, number: str, *, now: datetime) -> Ticket:
    """The ticket ``number`` this agent is linked to, if it still takes diagnostics; refuse (audited) a closed one."""
    ticket = paired_ticket(session, agent, number)
    refuse_if_closed(session, agent, ticket, now=now)
    return ticket


def refuse_if_closed(session: Session, agent: Agent, ticket: Ticket, *, now: datetime, upload_id: str | None = None) -> None:
    """Raise ConflictError (and keep an audit trace) if ``ticket`` is closed: a closed ticket takes no uploads."""
    if ticket.status != TicketStatus.CLOSED.value:
        return
    raise refusal(
        session, ConflictError(f"{ticket.label} is closed; it takes no more diagnostics.",
                               hint="Ask your support team to reopen it, or share to a new ticket."),
        actor=Actor.of_agent(agent), action="upload.refused", target_type="ticket", target_id=ticket.label, now=now,
        reason="ticket closed", upload_id=upload_id,
    )


def idle_expiry(upload: Upload, settings: ServerSettings, *, now: datetime) -> datetime:
    """When ``upload`` expires if nothing more arrives after ``now``: idle minutes on, never past its whole lifetime."""
    return min(upload.created_at + timedelta(hours=settings.upload_ttl_hours),
               now + timedelta(minutes=settings.uploads.idle_minutes))


def lock_reservations(session: Session) -> None:
    """Take the reservations lock for the rest of this transaction (see :data:`RESERVATIONS`)."""
    taken = session.execute(update(Counter).where(Counter.name == RESERVATIONS).values(value=Counter.value))
    if taken.rowcount:
        return
    try:
        with session.begin_nested():
            session.add(Counter(name=RESERVATIONS, value=0))
    except IntegrityError:  # made concurrently (PostgreSQL): wait for its row lock instead
        session.execute(update(Counter).where(Counter.name == RESERVATIONS).values(value=Counter.value))


def _live(now: datetime):
    return and_(Upload.completed_at.is_(None), Upload.expires_at > now)


def check_quotas(session: Session, settings: ServerSettings, blobs: BlobStore, agent: Agent, size: int, *, now: datetime) -> None:
    """Refuse reserving ``size`` more bytes for ``agent`` at ``now`` if it would break a quota.

    Call with the reservations lock held (:func:`lock_reservations`). Raise
    QuotaExceededError for this PC's quotas (unfinished uploads, reserved bytes,
    stored bytes) and StorageFullError for the server's (all unfinished bytes,
    all stored bytes, free disk beyond the headroom). Uploads expired by ``now``
    no longer count, swept or not.
    """
    quotas = settings.uploads
    count, reserved = (int(value) for value in session.execute(  # sums are Decimal on PostgreSQL
        select(func.count(Upload.id), func.coalesce(func.sum(Upload.size), 0)).where(_live(now), Upload.agent_id == agent.id)
    ).one())
    if count + 1 > quotas.max_unfinished_per_pc:
        raise QuotaExceededError(
            f"This PC already has {count} unfinished uploads, the most this server allows at once.", hint=QUOTA_HINT)
    if reserved + size > quotas.max_unfinished_bytes_per_pc:
        raise QuotaExceededError(
            f"This PC's unfinished uploads would hold {_mb(reserved + size)}, over its quota of "
            f"{_mb(quotas.max_unfinished_bytes_per_pc)}.", hint=QUOTA_HINT)
    stored = _total(session, select(func.coalesce(func.sum(Bundle.size), 0)).where(Bundle.agent_id == agent.id))
    if stored + reserved + size > quotas.max_stored_bytes_per_pc:
        raise QuotaExceededError(
            f"This PC's bundles would take {_mb(stored + reserved + size)} on the server, over its quota of "
            f"{_mb(quotas.max_stored_bytes_per_pc)}.", hint=QUOTA_HINT)
    all_reserved = _total(session, select(func.coalesce(func.sum(Upload.size), 0)).where(_live(now)))
    if all_reserved + size > quotas.max_unfinished_bytes:
        raise StorageFullError("The server is taking in as many uploads as it can hold right now.", hint=FULL_HINT)
    if quotas.max_stored_bytes is not None:
        all_stored = _total(session, select(func.coalesce(func.sum(Bundle.size), 0)))
        if all_stored + all_reserved + size > quotas.max_stored_bytes:
            raise StorageFullError("The server's storage for diagnostics is full.", hint=FULL_HINT)
    free = blobs.free_bytes()
    if free is not None:
        received = _total(
            session, select(func.coalesce(func.sum(UploadChunk.size), 0)).join(Upload, UploadChunk.upload_id == Upload.id).where(_live(now))
        )
        if free - (all_reserved - received) - size < quotas.min_free_bytes:
            raise StorageFullError("The server's disk is too full to take this bundle.", hint=FULL_HINT)


def _total(session: Session, query) -> int:
    return int(session.scalar(query) or 0)


def check_headroom(settings: ServerSettings, blobs: BlobStore, size: int) -> None:
    """Raise StorageFullError if writing ``size`` bytes would leave less free disk than the headroom."""
    free = blobs.free_bytes()
    if free is not None and free - size < settings.uploads.min_free_bytes:
        raise StorageFullError("The server's disk is too full to take more data.", hint=FULL_HINT)


def _mb(size: int) -> str:
    """A size for a one-line message: bytes, kB, MB or GB, whichever reads best."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def start_upload(
    session: Session, settings: ServerSettings, blobs: BlobStore, agent: Agent, number: str, body: UploadCreate, *, now: datetime,
) -> Upload:
    """Create an upload at ``now``, or return the one already under way for the same file (resume).

    A new upload reserves its size against the quotas (:func:`check_quotas`);
    a refusal is audited and leaves everything stored as it was.
    """
    ticket = open_ticket_for_uploads(session, agent, number, now=now)
    if body.size > settings.max_bundle_bytes:
        raise TooLargeError(
            f"The bundle is {body.size / 1e6:.1f} MB, over this server's limit of {settings.max_bundle_bytes / 1e6:.0f} MB.",
            hint="Leave a category out with --exclude, or save it with --output and send it another way.",
        )
    lock_reservations(session)
    existing = session.scalar(
        select(Upload).where(Upload.ticket_id == ticket.id, Upload.agent_id == agent.id, Upload.sha256 == body.sha256,
                             Upload.size == body.size).order_by(Upload.created_at.desc()).limit(1)
    )
    if existing is not None and existing.completed_at is not None:
        return existing
    if existing is not None and existing.expires_at > now:
        existing.expires_at = max(existing.expires_at, idle_expiry(existing, settings, now=now))
        return existing
    try:
        check_quotas(session, settings, blobs, agent, body.size, now=now)
    except (QuotaExceededError, StorageFullError) as exc:
        raise refusal(session, exc, actor=Actor.of_agent(agent), action="upload.refused", target_type="ticket",
                      target_id=ticket.label, now=now, reason=exc.message, size=body.size) from None
    upload = Upload(
        id=str(uuid.uuid4()), ticket=ticket, agent_id=agent.id, filename=body.filename, size=body.size,
        sha256=body.sha256, chunk_size=settings.upload_chunk_bytes, created_at=now, expires_at=now,
    )
    upload.expires_at = idle_expiry(upload, settings, now=now)
    session.add(upload)
    session.flush()
    record(session, Actor.of_agent(agent), "upload.start", "ticket", ticket.label, upload_id=upload.id, size=body.size)
    return upload


def agent_upload(session: Session, agent: Agent, upload_id: str) -> Upload:
    upload = session.get(Upload, upload_id)
    if upload is None or upload.agent_id != agent.id:
        raise NotFoundError("There is no such upload.", hint="Start the upload again.")
    return upload


def check_chunk_request(upload: Upload, index: int, length: int | None, *, now: datetime) -> int:
    """Return the size chunk ``index`` must have; refuse a chunk that cannot belong to the upload at ``now``."""
    if upload.completed_at is not None:
        raise ConflictError("This upload is already complete.")
    if upload.expires_at <= now:
        raise ConflictError("This upload has expired.", hint="Start the upload again.")
    if not 0 <= index < chunk_count(upload):
        raise InvalidInputError(f"Chunk {index} is outside this upload (0-{chunk_count(upload) - 1}).")
    expected = expected_chunk_size(upload, index)
    if length is not None and length != expected:
        raise InvalidInputError(f"Chunk {index} must be {expected} bytes, not {length}.")
    return expected


def store_chunk(blobs: BlobStore, upload_id: str, index: int, data: bytes, claimed_sha256: str) -> str:
    """Check a chunk against its claimed SHA-256 and keep it; return the digest.

    Raise StorageFullError if the store has no room (nothing stored before is touched).
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest != claimed_sha256.lower():
        raise DamagedError(f"Chunk {index} arrived damaged (SHA-256 mismatch).", hint="It will be sent again.")
    with storage_errors():
        blobs.put(chunk_key(upload_id, index), data)
    return digest


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or an exhausted disk quota."""
    while exc is not None:
        if isinstance(exc, StorageFullError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        exc = exc.__cause__
    return False


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn a full disk met while writing (an OSError, or a store's error caused by one) into StorageFullError."""
    try:
        yield
    except StorageFullError:
        raise
    except (OSError, HelplineError) as exc:
        if is_disk_full(exc):
            raise StorageFullError("The server's disk is full.", hint=FULL_HINT) from exc
        raise


def record_chunk(session: Session, settings: ServerSettings, upload: Upload, index: int, size: int, digest: str, *, now: datetime) -> None:
    """Note chunk ``index`` as received at ``now``; the upload stays alive for another idle period."""
    upload.expires_at = max(upload.expires_at, idle_expiry(upload, settings, now=now))
    row = session.get(UploadChunk, (upload.id, index))
    if row is None:
        session.add(UploadChunk(upload_id=upload.id, index=index, size=size, sha256=digest))
    else:
        row.size, row.sha256 = size, digest
    session.flush()
    session.refresh(upload)


def missing_chunks(upload: Upload) -> list[int]:
    have = {c.index for c in upload.chunks}
    return [i for i in range(chunk_count(upload)) if i not in have]


def assemble(blobs: BlobStore, upload: Upload, work_dir: Path) -> Path:
    """Join the chunks into a temporary file and check the whole file's SHA-256.

    Raise InvalidInputError if the result is not the file the agent announced.
    """
    with storage_errors():
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=f"upload-{upload.id}-", suffix=".tar.gz", dir=work_dir)
    path = Path(name)
    digest = hashlib.sha256()
    try:
        with storage_errors(), os.fdopen(fd, "wb") as out:
            for index in range(chunk_count(upload)):
                with blobs.open(chunk_key(upload.id, index)) as chunk:
                    while block := chunk.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if path.stat().st_size != upload.size or digest.hexdigest() != upload.sha256:
            raise DamagedError("The bundle arrived damaged (its SHA-256 does not match).", hint="Send it again.")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def read_bundle(path: Path) -> tuple[Manifest, dict]:
    """Inspect an untrusted bundle archive without unpacking it; return its validated (manifest, summary).

    Raise InvalidInputError if either is not what a Helpline agent writes.
    """
    listing = inspect_archive(path)
    manifest = parse_manifest(listing.read_member(MANIFEST_NAME, MANIFEST_MAX_BYTES), where=f"The bundle's {MANIFEST_NAME}")
    summary = parse_summary(listing.read_member(SUMMARY_NAME, SUMMARY_MAX_BYTES), where=f"The bundle's {SUMMARY_NAME}")
    return manifest, summary


def finish(
    session: Session, upload: Upload, agent: Agent, blob_key: str, size: int, sha256: str, manifest: Manifest, summary: dict,
    *, now: datetime,
) -> Bundle:
    """Record the bundle stored at ``now`` and add it to the ticket's timeline."""
    files = manifest.totals.files
    bundle = Bundle(
        id=blob_key.rsplit("/", 1)[-1].split(".", 1)[0], ticket_id=upload.ticket_id, agent_id=agent.id,
        hostname=agent.hostname, blob_key=blob_key, size=size, sha256=sha256, files=files, created_at=now,
        summary=summary,
    )
    session.add(bundle)
    upload.completed_at = now
    upload.bundle_id = bundle.id
    actor = Actor.of_agent(agent)
    timeline(session, upload.ticket, actor, "bundle",
             f"Diagnostics from {agent.hostname} arrived ({files} files, {human_size(size)}).")
    record(session, actor, "bundle.store", "ticket", upload.ticket.label, bundle_id=bundle.id, size=size, sha256=sha256)
    webhooks.emit(session, WebhookKind.DIAGNOSTICS_ARRIVED, webhooks.ticket_payload(
        session, upload.ticket, bundle={"id": bundle.id, "files": files, "size": size, "hostname": agent.hostname,
                                        "agent_id": agent.id}))
    session.flush()
    return bundle


def new_bundle_key(ticket: Ticket) -> str:
    return key_under(BUNDLES, ticket.label, f"{uuid.uuid4()}.tar.gz")


def bundle_public(bundle: Bundle) -> BundlePublic:
    return BundlePublic(id=bundle.id, ticket=bundle.ticket.label, hostname=bundle.hostname, size=bundle.size,
                        sha256=bundle.sha256, files=bundle.files, created_at=bundle.created_at)


def bundle_detail(session: Session, bundle: Bundle) -> BundleDetail:
    """The bundle with its summary made safe to render, whatever was stored (never fails on a poisoned summary)."""
    stored = session.scalar(select(cast(Bundle.summary, Text)).where(Bundle.id == bundle.id))
    return BundleDetail(**bundle_public(bundle).model_dump(), summary=read_stored_document(stored))


#: The longest file name a download offers, in characters.
MAX_DOWNLOAD_NAME = 200
_KEPT_JOINERS = frozenset("\u200c\u200d")  # emoji and some scripts need them


def attachment(filename: str) -> str:
    """A Content-Disposition header offering ``filename`` (built from what PCs send) as a download.

    RFC 6266 with RFC 5987: ``filename=`` holds a plain ASCII fallback (no quotes,
    backslashes, percent signs, control characters or path separators) and
    ``filename*=UTF-8''…`` the full name percent-encoded, so CR/LF can never
    split the header and any script (Cyrillic, Greek, CJK, emoji, right-to-left)
    downloads under its own name. Control and invisible format characters (such
    as right-to-left overrides that disguise an extension) are dropped from both.
    """
    kept = []
    for ch in unicodedata.normalize("NFC", filename):
        category = unicodedata.category(ch)
        if ch in "/\\" or category.startswith("Z"):
            kept.append("_")
        elif not category.startswith("C") or ch in _KEPT_JOINERS:
            kept.append(ch)
    name = "".join(kept)[:MAX_DOWNLOAD_NAME] or "bundle.tar.gz"
    fallback = "".join(ch if " " < ch < "\x7f" and ch not in '"\\%;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def get_bundle(session: Session, bundle_id: str) -> Bundle:
    bundle = session.get(Bundle, bundle_id)
    if bundle is None:
        raise NotFoundError(f"There is no bundle {shown(bundle_id)}.",
                            hints={Audience.ENGINEER: "A ticket's bundles are listed by `helpline ticket show T-…`."})
    return bundle


def ticket_bundles(session: Session, ticket: Ticket) -> list[Bundle]:
    return list(session.scalars(select(Bundle).where(Bundle.ticket_id == ticket.id).order_by(Bundle.created_at)))


def sweep_expired(session: Session, blobs: BlobStore, *, now: datetime, limit: int = 20) -> int:
    """Delete a few unfinished uploads expired by ``now`` and their chunks; return how many.

    The chunks' blobs go first, before the rows are deleted, so that the blob
    store is never called while the transaction holds the write lock (SQLite).
    """
    rows = list(session.scalars(
        select(Upload).options(selectinload(Upload.chunks))
        .where(Upload.completed_at.is_(None), Upload.expires_at <= now).limit(limit)
    ))
    for upload in rows:
        for chunk in upload.chunks:
            blobs.delete(chunk_key(upload.id, chunk.index))
    for upload in rows:
        session.delete(upload)
    return len(rows)
