"""Resumable uploads of diagnostics bundles, and the bundles they become.

Chunks arrive in any order and may be sent again; each is checked against its
own SHA-256 and kept in the blob store until the upload is completed. Completion
joins them, checks the whole file's SHA-256, inspects the archive without
unpacking it, stores it and adds it to the ticket. File and network I/O happen
outside database transactions so a slow upload never holds the database lock.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from protocol.archive import inspect_archive
from protocol.bundle import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    SUMMARY_MAX_BYTES,
    SUMMARY_NAME,
    Manifest,
    parse_manifest,
    parse_summary,
)
from protocol.schemas import BundleDetail, BundlePublic, UploadCreate, UploadStatus
from protocol.units import human_size
from protocol.errors import ConflictError, DamagedError, InvalidInputError, NotFoundError, TooLargeError
from server.audit import Actor, record, timeline
from server.blobs import BUNDLES, UPLOADS, BlobStore, key_under
from server.models import Agent, Bundle, Ticket, Upload, UploadChunk
from server.pairing import paired_ticket
from server.settings import ServerSettings


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


def start_upload(session: Session, settings: ServerSettings, agent: Agent, number: str, body: UploadCreate, *, now: datetime) -> Upload:
    """Create an upload at ``now``, or return the one already under way for the same file (resume)."""
    ticket = paired_ticket(session, agent, number)
    if body.size > settings.max_bundle_bytes:
        raise TooLargeError(
            f"The bundle is {body.size / 1e6:.1f} MB, over this server's limit of {settings.max_bundle_bytes / 1e6:.0f} MB.",
            hint="Leave a category out with --exclude, or save it with --output and send it another way.",
        )
    existing = session.scalar(
        select(Upload).where(Upload.ticket_id == ticket.id, Upload.agent_id == agent.id, Upload.sha256 == body.sha256,
                             Upload.size == body.size).order_by(Upload.created_at.desc()).limit(1)
    )
    if existing is not None and (existing.completed_at is not None or existing.expires_at > now):
        return existing
    upload = Upload(
        id=str(uuid.uuid4()), ticket=ticket, agent_id=agent.id, filename=body.filename, size=body.size,
        sha256=body.sha256, chunk_size=settings.upload_chunk_bytes, created_at=now,
        expires_at=now + timedelta(hours=settings.upload_ttl_hours),
    )
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
    """Check a chunk against its claimed SHA-256 and keep it; return the digest."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != claimed_sha256.lower():
        raise DamagedError(f"Chunk {index} arrived damaged (SHA-256 mismatch).", hint="It will be sent again.")
    blobs.put(chunk_key(upload_id, index), data)
    return digest


def record_chunk(session: Session, upload: Upload, index: int, size: int, digest: str) -> None:
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
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f"upload-{upload.id}-", suffix=".tar.gz", dir=work_dir)
    path = Path(name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
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
    session.flush()
    return bundle


def new_bundle_key(ticket: Ticket) -> str:
    return key_under(BUNDLES, ticket.label, f"{uuid.uuid4()}.tar.gz")


def bundle_public(bundle: Bundle) -> BundlePublic:
    return BundlePublic(id=bundle.id, ticket=bundle.ticket.label, hostname=bundle.hostname, size=bundle.size,
                        sha256=bundle.sha256, files=bundle.files, created_at=bundle.created_at)


def bundle_detail(bundle: Bundle) -> BundleDetail:
    return BundleDetail(**bundle_public(bundle).model_dump(), summary=bundle.summary or {})


def get_bundle(session: Session, bundle_id: str) -> Bundle:
    bundle = session.get(Bundle, bundle_id)
    if bundle is None:
        raise NotFoundError(f"There is no bundle {bundle_id}.", hint="List them with `helpline ticket show T-…`.")
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
