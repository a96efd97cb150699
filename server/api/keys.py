"""The server's signing key: its hand-overs (public: they carry their own signatures) and rotating it (admins)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from protocol.key_handover import Handover, KeyRotated
from server.api.deps import AdminAccount, ClientIP, DbSession, Now, State
from server.audit import Actor
from server.keys import rotate_key as rotate

router = APIRouter(prefix="/v1/server", tags=["health"])


@router.get("/key-handovers", summary="Every hand-over from a retired signing key to its successor, oldest first")
def key_handovers(state: State) -> list[Handover]:
    return state.keys.handovers()


@router.post("/key-rotations", status_code=201, summary="Rotate the server's signing key (agents follow the hand-over)")
def rotate_key(admin: AdminAccount, session: DbSession, state: State, ip: ClientIP, now: Now) -> KeyRotated:
    return rotate(state.keys, session, Actor.of_account(admin, ip), now=now,
                  valid_for=timedelta(days=state.settings.keys.handover_days))
