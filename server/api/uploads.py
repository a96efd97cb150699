"""Bundle uploads from PCs (resumable, chunked) and bundles for engineers.

Upload routes open their own short transactions around the database work and
do the network and file I/O outside them, so a slow upload never holds the
database lock (SQLite) or a connection (PostgreSQL) while bytes trickle in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from protocol.agent_requests import CONTENT_HEADER
from protocol.schemas import BundleDetail, BundlePublic, UploadCreate, UploadStatus
from protocol.errors import DamagedError, InvalidInputError, StorageFullError, TooLargeError
from server import agent_requests
from server import tickets as ticket_svc
from server import uploads as svc
from server.agents import authenticate_agent
from server.api.deps import ClientIP, CurrentAccount, CurrentAgent, DbSession, Now, ReadSession, State, WriteSession
from server.audit import Actor, record
from server.db import apply_touches, pending_touches, transaction
from server.identifiers import find_bundle
from server.refusals import roll_back
from server.runtime import ServerRuntime

router = APIRouter(prefix="/v1", tags=["bundles"])

UploadId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
# A bundle as people name it: the full id or a unique start of it (server/identifiers.py).
BundleRef = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{4,36}$")]
ChunkIndex = Annotated[int, Path(ge=0, le=1_000_000)]
ChunkSha = Annotated[str, Header(alias="X-Chunk-SHA256", pattern=r"^[0-9a-fA-F]{64}$")]


@contextmanager
def step(state: ServerRuntime) -> Iterator:
    """One short write transaction of an upload step; a refusal's kept traces (audit) survive its rollback."""
    session = state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        roll_back(session)
        raise
    finally:
        session.close()
        touches = pending_touches(session)
    apply_touches(state.sessions, touches)


def audit_refusal(state: ServerRuntime, agent_id: str, upload_id: str, action: str, reason: str) -> None:
    """Audit a refused upload step in a transaction of its own (the step's work is rolled back)."""
    with transaction(state.sessions) as session:
        agent = authenticate_agent(session, agent_id, now=state.clock())
        record(session, Actor.of_agent(agent), action, "upload", upload_id, reason=reason)


@router.post(
    "/agent/tickets/{number}/uploads", status_code=201, summary="Start (or resume) uploading a bundle to a ticket",
    responses={429: {"description": "Over one of this PC's upload quotas"}, 507: {"description": "The server's storage is full"}},
)
def start(number: str, body: UploadCreate, agent: CurrentAgent, session: DbSession, state: State, now: Now) -> UploadStatus:
    return svc.status_of(svc.start_upload(session, state.settings, state.blobs, agent, number, body, now=now))


@router.get("/uploads/{upload_id}", summary="Which chunks of an upload the server has")
def upload_status(upload_id: UploadId, agent: CurrentAgent, session: ReadSession) -> UploadStatus:
    return svc.status_of(svc.agent_upload(session, agent, upload_id))


@router.put(
    "/uploads/{upload_id}/chunks/{index}",
    summary="Send one chunk (raw bytes, checked against X-Chunk-SHA256)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def put_chunk(upload_id: UploadId, index: ChunkIndex, chunk_sha256: ChunkSha, request: Request, state: State,
                    ip: ClientIP) -> UploadStatus:
    declared = request.headers.get("content-length")
    target = agent_requests.request_target(request.scope)
    headers = agent_requests.header_map(request.scope)

    def authorize() -> tuple[str, int]:
        # The signature covers the body's declared digest; the body itself is checked against it as it streams in.
        now = state.clock()
        agent_id = agent_requests.verify_agent_request(state.sessions, headers, method="PUT", target=target,
                                                       content_sha256=None, ip=ip, now=now)
        with step(state) as session:
            agent = authenticate_agent(session, agent_id, now=now)
            upload = svc.agent_upload(session, agent, upload_id)
            svc.refuse_if_closed(session, agent, upload.ticket, now=now, upload_id=upload_id)
            expected = svc.check_chunk_request(upload, index, int(declared) if declared and declared.isdigit() else None, now=now)
        try:
            svc.check_headroom(state.settings, state.blobs, expected)
        except StorageFullError as exc:
            audit_refusal(state, agent_id, upload_id, "upload.refused", exc.message)
            raise
        return agent_id, expected

    agent_id, expected = await run_in_threadpool(authorize)
    data = bytearray()
    received = hashlib.sha256()
    async for block in request.stream():
        data += block
        received.update(block)
        if len(data) > expected:
            raise TooLargeError(f"Chunk {index} is larger than {expected} bytes.")
    if received.hexdigest() != headers[CONTENT_HEADER.lower()].lower():
        raise await run_in_threadpool(lambda: agent_requests.refuse_altered_body(
            state.sessions, agent_id, method="PUT", target=target, ip=ip, now=state.clock()))
    if len(data) != expected:
        raise DamagedError(f"Chunk {index} has {len(data)} bytes; {expected} were expected.", hint="It will be sent again.")

    try:
        digest = await run_in_threadpool(svc.store_chunk, state.blobs, upload_id, index, bytes(data), chunk_sha256)
    except StorageFullError as exc:
        await run_in_threadpool(audit_refusal, state, agent_id, upload_id, "upload.refused", exc.message)
        raise

    def remember() -> UploadStatus:
        with transaction(state.sessions) as session:
            now = state.clock()
            agent = authenticate_agent(session, agent_id, now=now)
            upload = svc.agent_upload(session, agent, upload_id)
            svc.record_chunk(session, state.settings, upload, index, len(data), digest, now=now)
            return svc.status_of(upload)

    return await run_in_threadpool(remember)


@router.post("/uploads/{upload_id}/complete", summary="Join the chunks, verify the bundle and add it to the ticket")
def complete(upload_id: UploadId, state: State, request: Request, ip: ClientIP) -> BundlePublic:
    agent_id = agent_requests.verify_agent_request(
        state.sessions, agent_requests.header_map(request.scope), method="POST",
        target=agent_requests.request_target(request.scope), content_sha256=agent_requests.body_sha256(b""),
        ip=ip, now=state.clock())
    with step(state) as session:
        now = state.clock()
        agent = authenticate_agent(session, agent_id, now=now)
        upload = svc.agent_upload(session, agent, upload_id)
        if upload.completed_at is not None:
            return svc.bundle_public(svc.get_bundle(session, upload.bundle_id))
        svc.refuse_if_closed(session, agent, upload.ticket, now=now, upload_id=upload_id)
        svc.check_chunk_request(upload, 0, None, now=now)
        missing = svc.missing_chunks(upload)
        if missing:
            raise InvalidInputError(f"{len(missing)} chunks are still missing (first: {missing[0]}).", hint="Send them, then complete again.")
        blob_key = svc.new_bundle_key(upload.ticket)
    work = state.settings.data_dir / "tmp"
    try:
        svc.check_headroom(state.settings, state.blobs, upload.size)  # joining needs a copy of the whole bundle
        path = svc.assemble(state.blobs, upload, work)
    except StorageFullError as exc:
        audit_refusal(state, agent_id, upload_id, "upload.refused", exc.message)
        raise
    try:
        try:
            manifest, summary = svc.read_bundle(path)
        except InvalidInputError as exc:
            audit_refusal(state, agent_id, upload_id, "bundle.refused", exc.message)
            raise
        try:
            with svc.storage_errors():
                info = state.blobs.put_file(blob_key, path)
        except StorageFullError as exc:  # the chunks stay: completing again later succeeds
            state.blobs.delete(blob_key)
            audit_refusal(state, agent_id, upload_id, "upload.refused", exc.message)
            raise
    finally:
        path.unlink(missing_ok=True)
    with transaction(state.sessions) as session:
        now = state.clock()
        agent = authenticate_agent(session, agent_id, now=now)
        upload = svc.agent_upload(session, agent, upload_id)
        if upload.completed_at is not None:  # a concurrent completion won the race
            state.blobs.delete(blob_key)
            return svc.bundle_public(svc.get_bundle(session, upload.bundle_id))
        bundle = svc.finish(session, upload, agent, blob_key, info.size, upload.sha256, manifest, summary, now=now)
        chunks = [c.index for c in upload.chunks]
        public = svc.bundle_public(bundle)
    for index in chunks:
        state.blobs.delete(svc.chunk_key(upload_id, index))
    return public


@router.get("/tickets/{number}/bundles", summary="The diagnostics bundles of a ticket")
def list_bundles(number: str, account: CurrentAccount, session: ReadSession) -> list[BundlePublic]:
    ticket = ticket_svc.get_ticket(session, number)
    return [svc.bundle_public(b) for b in svc.ticket_bundles(session, ticket)]


@router.get("/bundles/{bundle_id}", summary="One bundle with its summary for triage (by id or a unique start of it)")
def show_bundle(bundle_id: BundleRef, account: CurrentAccount, session: ReadSession) -> BundleDetail:
    return svc.bundle_detail(session, find_bundle(session, bundle_id))


@router.get(
    "/bundles/{bundle_id}/archive",
    summary="Download a bundle's archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}},
)
def download_bundle(bundle_id: UploadId, account: CurrentAccount, session: WriteSession, state: State) -> StreamingResponse:
    bundle = svc.get_bundle(session, bundle_id)
    record(session, Actor.of_account(account), "bundle.download", "ticket", bundle.ticket.label, bundle_id=bundle.id)
    stream = state.blobs.open(bundle.blob_key)

    def chunks():
        with stream:
            while block := stream.read(1 << 20):
                yield block

    filename = f"{bundle.ticket.label}-{bundle.hostname[:100]}-{bundle.created_at:%Y%m%d-%H%M%S}.tar.gz"
    return StreamingResponse(chunks(), media_type="application/gzip", headers={
        "Content-Disposition": svc.attachment(filename),
        "Content-Length": str(bundle.size),
        "X-Content-SHA256": bundle.sha256,
    })
