"""Bundle uploads from PCs (resumable, chunked) and bundles for engineers.

Upload routes open their own short transactions around the database work and
do the network and file I/O outside them, so a slow upload never holds the
database lock (SQLite) or a connection (PostgreSQL) while bytes trickle in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from protocol.schemas import BundleDetail, BundlePublic, UploadCreate, UploadStatus
from protocol.errors import DamagedError, InvalidInputError, TooLargeError
from server import tickets as ticket_svc
from server import uploads as svc
from server.agents import authenticate_agent
from server.api.deps import AGENT_HINT, Bearer, bearer_token, CurrentAccount, CurrentAgent, DbSession, Now, ReadSession, State, WriteSession
from server.audit import Actor, record
from server.db import transaction
from server.identifiers import find_bundle

router = APIRouter(prefix="/v1", tags=["bundles"])

UploadId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
# A bundle as people name it: the full id or a unique start of it (server/identifiers.py).
BundleRef = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{4,36}$")]
ChunkIndex = Annotated[int, Path(ge=0, le=1_000_000)]
ChunkSha = Annotated[str, Header(alias="X-Chunk-SHA256", pattern=r"^[0-9a-fA-F]{64}$")]


@router.post("/agent/tickets/{number}/uploads", status_code=201, summary="Start (or resume) uploading a bundle to a ticket")
def start(number: str, body: UploadCreate, agent: CurrentAgent, session: DbSession, state: State, now: Now) -> UploadStatus:
    return svc.status_of(svc.start_upload(session, state.settings, agent, number, body, now=now))


@router.get("/uploads/{upload_id}", summary="Which chunks of an upload the server has")
def upload_status(upload_id: UploadId, agent: CurrentAgent, session: ReadSession) -> UploadStatus:
    return svc.status_of(svc.agent_upload(session, agent, upload_id))


@router.put(
    "/uploads/{upload_id}/chunks/{index}",
    summary="Send one chunk (raw bytes, checked against X-Chunk-SHA256)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def put_chunk(upload_id: UploadId, index: ChunkIndex, chunk_sha256: ChunkSha, request: Request, state: State, credentials: Bearer) -> UploadStatus:
    token = bearer_token(credentials, hint=AGENT_HINT)
    declared = request.headers.get("content-length")

    def authorize() -> int:
        with transaction(state.sessions) as session:
            now = state.clock()
            agent = authenticate_agent(session, token, now=now)
            upload = svc.agent_upload(session, agent, upload_id)
            return svc.check_chunk_request(upload, index, int(declared) if declared and declared.isdigit() else None, now=now)

    expected = await run_in_threadpool(authorize)
    data = bytearray()
    async for block in request.stream():
        data += block
        if len(data) > expected:
            raise TooLargeError(f"Chunk {index} is larger than {expected} bytes.")
    if len(data) != expected:
        raise DamagedError(f"Chunk {index} has {len(data)} bytes; {expected} were expected.", hint="It will be sent again.")

    digest = await run_in_threadpool(svc.store_chunk, state.blobs, upload_id, index, bytes(data), chunk_sha256)

    def remember() -> UploadStatus:
        with transaction(state.sessions) as session:
            agent = authenticate_agent(session, token, now=state.clock())
            upload = svc.agent_upload(session, agent, upload_id)
            svc.record_chunk(session, upload, index, len(data), digest)
            return svc.status_of(upload)

    return await run_in_threadpool(remember)


@router.post("/uploads/{upload_id}/complete", summary="Join the chunks, verify the bundle and add it to the ticket")
def complete(upload_id: UploadId, state: State, credentials: Bearer) -> BundlePublic:
    token = bearer_token(credentials, hint=AGENT_HINT)
    with transaction(state.sessions) as session:
        now = state.clock()
        agent = authenticate_agent(session, token, now=now)
        upload = svc.agent_upload(session, agent, upload_id)
        if upload.completed_at is not None:
            return svc.bundle_public(svc.get_bundle(session, upload.bundle_id))
        svc.check_chunk_request(upload, 0, None, now=now)
        missing = svc.missing_chunks(upload)
        if missing:
            raise InvalidInputError(f"{len(missing)} chunks are still missing (first: {missing[0]}).", hint="Send them, then complete again.")
        blob_key = svc.new_bundle_key(upload.ticket)
    work = state.settings.data_dir / "tmp"
    path = svc.assemble(state.blobs, upload, work)
    try:
        try:
            manifest, summary = svc.read_bundle(path)
        except InvalidInputError as exc:
            with transaction(state.sessions) as session:
                agent = authenticate_agent(session, token, now=state.clock())
                record(session, Actor.of_agent(agent), "bundle.refused", "upload", upload_id, reason=exc.message)
            raise
        info = state.blobs.put_file(blob_key, path)
    finally:
        path.unlink(missing_ok=True)
    with transaction(state.sessions) as session:
        now = state.clock()
        agent = authenticate_agent(session, token, now=now)
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
    return svc.bundle_detail(find_bundle(session, bundle_id))


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

    filename = f"{bundle.ticket.label}-{bundle.hostname}-{bundle.created_at:%Y%m%d-%H%M%S}.tar.gz"
    return StreamingResponse(chunks(), media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(bundle.size),
        "X-Content-SHA256": bundle.sha256,
    })
