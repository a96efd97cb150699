"""The server-side restic repositories: restic's REST protocol under /v1/restic/<agent>/, and the credential route.

The REST routes authenticate with the short-lived HTTP Basic credential that
restic carries in its repository URL (server.restic_rest.credentials), stream
request and response bodies between the network and the blob store, and hold
a database session only for the short decisions around the bytes, never while
they flow. What each credential mode may do is decided in
server.restic_rest.backend; docs/threat-model.md says why.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from protocol.errors import (
    Audience,
    AuthError,
    ConflictError,
    DamagedError,
    HelplineError,
    InvalidInputError,
    UnavailableError,
    http_status_of,
)
from protocol.snapshots import RESTIC_PREFIX, CredentialRequest, RepositoryCredential
from server.api.deps import ClientIP, CurrentAgent, DbSession, Now, State, client_ip, in_session, set_audience
from server.audit import Actor
from server.restic_rest import backend, credentials, hooks
from server.restic_rest.backend import Target
from server.restic_rest.credentials import Grant
from server.runtime import ServerRuntime

T = TypeVar("T")

V1 = "application/vnd.x.restic.rest.v1"
V2 = "application/vnd.x.restic.rest.v2"
OCTETS = "application/octet-stream"
#: Reads up to this size are answered from memory in one step; longer ones are streamed.
SMALL_READ = 4 * 1024 * 1024

router = APIRouter(prefix="/v1", tags=["snapshots"])
rest = APIRouter(prefix=RESTIC_PREFIX, include_in_schema=False)


# --- the PC asks for a credential ------------------------------------------------------------


@router.post("/agent/snapshots/credential", summary="A short-lived credential for a server-side restic repository")
def snapshot_credential(body: CredentialRequest, agent: CurrentAgent, session: DbSession, state: State,
                        request: Request, ip: ClientIP, now: Now) -> RepositoryCredential:
    base_url = state.settings.snapshots.public_url or str(request.base_url)
    return credentials.issue_for_agent(session, state.settings, agent, body, base_url=base_url, ip=ip, now=now)


# --- restic's REST protocol ----------------------------------------------------------------


def _refused(exc: HelplineError) -> Response:
    """A refusal as restic shows it: the status, and the message in a small JSON body."""
    if isinstance(exc, backend.PruneFenced):
        status, code = 423, "locked"
    else:
        status, code = http_status_of(exc)
    headers = {"WWW-Authenticate": 'Basic realm="helpline restic"'} if isinstance(exc, AuthError) else None
    body = {"error": {"code": code, "message": exc.message, "hint": exc.hint}}
    return JSONResponse(body, status_code=status, headers=headers)


def _answers(handler: Callable[..., T]) -> Callable[..., T]:
    """Answer a handler's HelplineError the REST way (HTTP Basic challenge, 423 while pruning)."""

    @functools.wraps(handler)
    async def wrapped(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except HelplineError as exc:
            return _refused(exc)
        except ClientDisconnect:
            # restic went away mid-upload (stopped, or its PC slept): nothing was kept, nobody reads an answer.
            return Response(status_code=400)

    return wrapped  # type: ignore[return-value]


async def _db(state: ServerRuntime, work: Callable[[Session], T], *, writes: bool) -> T:
    return await in_session(state, work, writes=writes)


async def _grant(request: Request, state: ServerRuntime, agent_id: str) -> Grant:
    set_audience(request, Audience.USER)
    if not state.settings.snapshots.enabled:
        raise UnavailableError("Server-side snapshots are turned off on this server.")
    repository = backend.repository_of(agent_id)
    header = request.headers.get("authorization")
    now = state.clock()
    grant = credentials.recent_grants.get(repository, header, now)
    if grant is None:
        grant = await _db(state, lambda s: credentials.authenticate(s, repository, header, now), writes=False)
        credentials.recent_grants.put(header, grant)
    return grant


def _actor(grant: Grant, request: Request, state: ServerRuntime) -> Actor:
    if grant.issued_to is None:
        return Actor.system("prune")
    return Actor("agent", grant.issued_to, "PC (restic credential)", client_ip(request, state))


def _length(request: Request) -> int:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or len(declared) > 15:
        raise InvalidInputError("An upload needs its Content-Length.")
    return int(declared)


@rest.post("/{agent_id}/")
@_answers
async def create_repository(agent_id: str, request: Request, state: State) -> Response:
    grant = await _grant(request, state, agent_id)
    if request.query_params.get("create") != "true":
        raise InvalidInputError("Only ?create=true is posted to a repository's root.")
    now = state.clock()
    await _db(state, lambda s: backend.create_repository(s, grant, now), writes=True)
    return Response(status_code=200)


async def _found(request: Request, state: ServerRuntime, agent_id: str, where: Callable[[str], Target],
                 then: Callable[[Target, int], T] = lambda place, size: None) -> tuple[Grant, Target, int, T]:
    """The grant, the object, its size and ``then(object, size)``, in one short read session.

    restic reads many small ranges, so a read is one trip to a worker thread:
    ``then`` reads a small range there too.
    """
    set_audience(request, Audience.USER)
    if not state.settings.snapshots.enabled:
        raise UnavailableError("Server-side snapshots are turned off on this server.")
    repository = backend.repository_of(agent_id)
    header, now = request.headers.get("authorization"), state.clock()
    known = credentials.recent_grants.get(repository, header, now)

    def look(session: Session) -> tuple[Grant, Target, int, T]:
        grant = known or credentials.authenticate(session, repository, header, now)
        place = where(grant.repository)
        size = backend.stat(session, place)
        return grant, place, size, then(place, size)

    found = await _db(state, look, writes=False)
    if known is None:
        credentials.recent_grants.put(header, found[0])
    return found


async def _head(request: Request, state: ServerRuntime, agent_id: str, where: Callable[[str], Target]) -> Response:
    _, _, size, _ = await _found(request, state, agent_id, where)
    return Response(status_code=200, headers={"content-length": str(size), "content-type": OCTETS})


async def _get(request: Request, state: ServerRuntime, agent_id: str, where: Callable[[str], Target]) -> Response:
    wanted = request.headers.get("range")

    def small_read(place: Target, size: int) -> tuple[tuple[int, int] | None, bytes | None] | None:
        try:
            span = backend.parse_range(wanted, size)
        except ValueError:
            return None
        start, end = span if span is not None else (0, size - 1)
        length = end - start + 1
        if length > SMALL_READ:
            return span, None
        data = state.blobs.read_range(place.key, start, length) if length else b""
        if len(data) != length:
            raise UnavailableError(f"{place} is shorter in the blob store than the repository lists it.")
        return span, data

    _, place, size, read = await _found(request, state, agent_id, where, small_read)
    if read is None:
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    span, data = read
    start, end = span if span is not None else (0, size - 1)
    headers = {"accept-ranges": "bytes"}
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    status = 206 if span is not None else 200
    if data is not None:  # restic reads blobs one range at a time: most are small, read in the same step
        return Response(data, status_code=status, headers=headers, media_type=OCTETS)
    length = end - start + 1
    stream = await anyio.to_thread.run_sync(functools.partial(state.blobs.open_range, place.key, start, length=length))
    headers["content-length"] = str(length)
    return StreamingResponse(backend.read_ahead(stream, place, length), status_code=status, headers=headers,
                             media_type=OCTETS)


async def _post(request: Request, state: ServerRuntime, agent_id: str, where: Callable[[str], Target]) -> Response:
    grant = await _grant(request, state, agent_id)
    place = where(grant.repository)
    length = _length(request)
    reader = backend.BodyReader(request.stream(), length, place.name if place.named_by_content else None)
    try:
        return await _store(state, grant, place, reader)
    except HelplineError:
        # Read what restic is still sending before refusing, so it sees the answer rather than a reset connection.
        if length <= backend.MAX_OBJECT_BYTES:
            await reader.discard()
        raise


async def _store(state: ServerRuntime, grant: Grant, place: Target, reader: backend.BodyReader) -> Response:
    backend.refuse_unless_writable(grant)
    options, now, length = state.settings.snapshots, state.clock(), reader.length
    small = place.type in (backend.CONFIG, "snapshots")
    data = await reader.read_all(backend.MAX_SMALL_OBJECT_BYTES) if small else None
    if place.type == "snapshots":
        await _db(state, lambda s: hooks.check_snapshot_upload(s, grant.repository, data, now), writes=False)
    upload = await _db(state, lambda s: backend.begin_upload(s, options, grant, place, length, now), writes=True)
    if upload.exists:
        if data is None:
            try:
                await reader.drain()
            except backend.HashMismatch:
                raise ConflictError(f"{place} exists already and is never replaced; nothing was stored.") from None
        elif place.type == backend.CONFIG:
            stored = await anyio.to_thread.run_sync(state.blobs.read_range, place.key, 0, backend.MAX_SMALL_OBJECT_BYTES)
            backend.refuse_config_change(stored, data)
        return Response(status_code=200)
    try:
        body, expected = (data, None) if data is not None else (reader, reader.leave_check_to_store())
        try:
            await anyio.to_thread.run_sync(functools.partial(state.blobs.put, place.key, body, size_hint=length,
                                                             expected_sha256=expected))
        except DamagedError:
            raise backend.HashMismatch(backend.HASH_MISMATCH) from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _db(state, lambda s: backend.release(s, grant.repository, upload.reserved), writes=True)
        raise
    await _db(state, lambda s: backend.finish_upload(s, grant, place, length, upload.reserved, now), writes=True)
    return Response(status_code=200)


async def _delete(request: Request, state: ServerRuntime, agent_id: str, where: Callable[[str], Target]) -> Response:
    grant = await _grant(request, state, agent_id)
    place = where(grant.repository)
    options, now, actor = state.settings.snapshots, state.clock(), _actor(grant, request, state)
    remove = await _db(state, lambda s: backend.delete(s, state.blobs, options, grant, place, actor, now), writes=True)
    if remove:
        await anyio.to_thread.run_sync(state.blobs.delete, place.key)
    return Response(status_code=200)


@rest.head("/{agent_id}/config")
@_answers
async def head_config(agent_id: str, request: Request, state: State) -> Response:
    return await _head(request, state, agent_id, backend.config_target)


@rest.get("/{agent_id}/config")
@_answers
async def get_config(agent_id: str, request: Request, state: State) -> Response:
    return await _get(request, state, agent_id, backend.config_target)


@rest.post("/{agent_id}/config")
@_answers
async def save_config(agent_id: str, request: Request, state: State) -> Response:
    return await _post(request, state, agent_id, backend.config_target)


@rest.get("/{agent_id}/{type_}/")
@_answers
async def list_objects(agent_id: str, type_: str, request: Request, state: State) -> Response:
    grant = await _grant(request, state, agent_id)
    backend.object_type(grant.repository, type_)
    now = state.clock()
    found = await _db(state, lambda s: backend.listing(s, grant, type_, now), writes=False)
    if V2 in request.headers.get("accept", ""):
        body = [{"name": name, "size": size} for name, size in found]
        return Response(json.dumps(body), media_type=V2)
    return Response(json.dumps([name for name, _ in found]), media_type=V1)


def _object(type_: str, name: str) -> Callable[[str], Target]:
    return lambda repository: backend.target(repository, type_, name)


@rest.head("/{agent_id}/{type_}/{name}")
@_answers
async def head_object(agent_id: str, type_: str, name: str, request: Request, state: State) -> Response:
    return await _head(request, state, agent_id, _object(type_, name))


@rest.get("/{agent_id}/{type_}/{name}")
@_answers
async def get_object(agent_id: str, type_: str, name: str, request: Request, state: State) -> Response:
    return await _get(request, state, agent_id, _object(type_, name))


@rest.post("/{agent_id}/{type_}/{name}")
@_answers
async def save_object(agent_id: str, type_: str, name: str, request: Request, state: State) -> Response:
    return await _post(request, state, agent_id, _object(type_, name))


@rest.delete("/{agent_id}/{type_}/{name}")
@_answers
async def delete_object(agent_id: str, type_: str, name: str, request: Request, state: State) -> Response:
    return await _delete(request, state, agent_id, _object(type_, name))
