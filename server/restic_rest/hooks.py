"""Seams the REST backend calls into, filled by the parts that know the answer.

- :func:`check_snapshot_upload` runs before a ``snapshots/<name>`` object is
  stored: it may refuse a snapshot (one dated in the future, so fake snapshots
  cannot push real ones out of a retention window). Implemented by
  ``server.restic_rest.inspect.check_snapshot_upload`` when that module exists
  (it reads the snapshot with the escrowed password); until then every snapshot
  is accepted.
- :func:`escrowed_password` gives the server's prune an agent's repository
  password: ``server.snapshots.escrowed_password`` when present, else None (the
  prune then skips the agent).
- :func:`replacement_source` tells whose repository a replacement-restore
  request lets the calling PC read: ``server.pc_requests.replacement_source``
  when present, else a refusal.

Each looks its implementation up when called, so the module that provides it
needs no change here.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from protocol.errors import ForbiddenError
from server.models import Agent


def _provided(module: str, name: str) -> Callable[..., Any] | None:
    """``module.name`` if that module exists and defines it; an import error inside it is not hidden."""
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), name, None)


def check_snapshot_upload(session: Session, agent_id: str, data: bytes, now: datetime) -> None:
    """Refuse (raise a HelplineError) a snapshot file ``data`` agent ``agent_id``'s repository must not take."""
    check = _provided("server.restic_rest.inspect", "check_snapshot_upload")
    if check is not None:
        check(session, agent_id, data, now)


def escrowed_password(session: Session, agent_id: str) -> str | None:
    """Agent ``agent_id``'s repository password held in escrow, or None if the server holds none."""
    provide = _provided("server.snapshots", "escrowed_password")
    return provide(session, agent_id) if provide is not None else None


def replacement_source(session: Session, caller: Agent, request_id: str) -> str:
    """The agent id whose repository ``caller`` may read for replacement-restore request ``request_id``.

    Raise ForbiddenError unless an engineer's replacement-restore request with
    that id names ``caller`` as its target PC and is still live.
    """
    provide = _provided("server.pc_requests", "replacement_source")
    if provide is None:
        raise ForbiddenError(
            "This server has no replacement-restore request that lets this PC read another PC's snapshots.",
            hint="An engineer starts a replacement restore that names this PC as the target.",
        )
    return provide(session, caller, request_id)
