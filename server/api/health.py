"""Liveness, readiness and the server's public identity (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter

from protocol import PROTOCOL_VERSION, signing
from protocol.schemas import ServerInfo
from server import __version__
from server.api.deps import State
from server.db import check_database, utcnow
from server.migrate import is_current
from protocol.errors import UnavailableError

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="The database and blob store answer")
def readyz(state: State) -> dict[str, str]:
    check_database(state.engine)
    if not is_current(state.engine):
        raise UnavailableError("The database schema is not up to date.", hint="Run `helpline server migrate`.")
    state.blobs.check()
    return {"status": "ready"}


@router.get("/v1/server", tags=["health"], summary="Server version and the signing key agents pin")
def server_info(state: State) -> ServerInfo:
    return ServerInfo(
        version=__version__,
        api_version=PROTOCOL_VERSION,
        public_key=state.public_key,
        fingerprint=signing.fingerprint(state.public_key),
        self_service=state.settings.self_service,
        max_bundle_bytes=state.settings.max_bundle_bytes,
        time=utcnow(),
    )
