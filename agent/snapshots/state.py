"""What the agent remembers of its snapshot work: per repository, the last run, failure, check and verified restore.

One JSON file (0600) in the agent's snapshot folder, changed under a file
lock, so the service and a user's ``helpline snapshot now`` never lose each
other's records. A run records its attempt first and its success only when
restic made the snapshot: a failed run never reads as a success. Reports the
server has not had yet wait here (``pending``) and are sent at the next
check-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, TypeVar

from agent.paths import write_private
from protocol.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: one process at a time is all the lock file can promise there
    fcntl = None  # type: ignore[assignment]

STATE_FILE = "state.json"
#: Reports kept at most while the server is unreachable (the oldest go first).
MAX_PENDING = 500
#: Paths whose last runs a repository record keeps (the least recently run go first).
MAX_PATHS = 1000
#: The agent's own latest snapshots a repository record keeps, for a restore to find one without asking restic.
MAX_RECENT = 50

_TIME_FIELDS = ("last_attempt", "last_success", "last_failure", "last_forget", "last_prune", "last_check",
                "last_verify", "last_verified")
_threads = threading.Lock()
T = TypeVar("T")


def touches(path: str, folder: str) -> bool:
    """True when a snapshot's ``path`` is ``folder``, inside it, or a folder that holds it."""
    taken, wanted = PurePath(path), PurePath(folder)
    return taken == wanted or wanted in taken.parents or taken in wanted.parents


@dataclass
class PathRecord:
    """The last run that took one path into a repository, and the last that failed to."""

    last_success: datetime | None = None
    last_snapshot_id: str | None = None
    last_failure: datetime | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PathRecord:
        data = {f.name: value.get(f.name) for f in fields(cls)}
        for name in ("last_success", "last_failure"):
            data[name] = datetime.fromisoformat(data[name]) if data[name] else None
        return cls(**data)


@dataclass
class RepositoryRecord:
    """What is known about one repository (``local`` or ``server``)."""

    initialized: bool = False
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_snapshot_id: str | None = None
    #: ``ok`` or ``partial`` (made without some unreadable files) or ``failed``.
    last_status: str | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    last_forget: datetime | None = None
    last_prune: datetime | None = None
    last_check: datetime | None = None
    last_check_ok: bool | None = None
    #: The last sample restore attempted, and the last one that proved the snapshot restorable.
    last_verify: datetime | None = None
    last_verified: datetime | None = None
    last_verify_ok: bool | None = None
    last_verify_detail: str = ""
    #: ``sent`` when the server holds the password in escrow, ``refused`` when escrow is off there.
    escrow: str | None = None
    #: Why the repository stopped growing (the disk's margin or the size cap), until a run fits again.
    full: str | None = None
    #: Per path a run named: its last run's outcome, so a user is told about their own home, not the PC's.
    paths: dict[str, PathRecord] = field(default_factory=dict)
    #: This agent's latest snapshots here, oldest first: ``{"id", "time" (ISO), "paths"}``.
    recent: list[dict[str, Any]] = field(default_factory=list)

    def remember_snapshot(self, snapshot_id: str, time: datetime, paths: list[str]) -> None:
        """Add a snapshot this agent made (keeping the :data:`MAX_RECENT` latest)."""
        self.recent.append({"id": snapshot_id, "time": time.isoformat(), "paths": list(paths)})
        del self.recent[:-MAX_RECENT]

    def remember_paths(self, paths: list[str], *, succeeded: bool, at: datetime, snapshot_id: str | None,
                       error: str | None) -> None:
        """Record one run's outcome for each of its ``paths`` (keeping the :data:`MAX_PATHS` most recent)."""
        for path in paths:
            record = self.paths.pop(path, None) or PathRecord()
            if succeeded:
                record.last_success, record.last_snapshot_id = at, snapshot_id
            else:
                record.last_failure, record.last_error = at, error
            self.paths[path] = record  # re-inserted: the dict's order is the order paths last ran in
        while len(self.paths) > MAX_PATHS:
            del self.paths[next(iter(self.paths))]

    def for_folder(self, folder: str) -> RepositoryRecord:
        """This record as seen by one folder: the last success and failure of runs that touched it.

        A record from before paths were kept (no path records) speaks for every folder, as it did then.
        """
        if not self.paths:
            return self
        touching = [record for path, record in self.paths.items() if touches(path, folder)]
        success = max((r for r in touching if r.last_success), key=lambda r: r.last_success, default=None)
        failure = max((r for r in touching if r.last_failure), key=lambda r: r.last_failure, default=None)
        return replace(self, last_success=success.last_success if success else None,
                       last_snapshot_id=success.last_snapshot_id if success else None,
                       last_failure=failure.last_failure if failure else None,
                       last_error=failure.last_error if failure else None)

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        for name in _TIME_FIELDS:
            if value[name] is not None:
                value[name] = value[name].isoformat()
        value["paths"] = {path: record.to_json() for path, record in self.paths.items()}
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RepositoryRecord:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in value.items() if k in known}
        for name in _TIME_FIELDS:
            if data.get(name):
                data[name] = datetime.fromisoformat(data[name])
        recent = data.pop("recent", None)
        data["recent"] = [r for r in recent if isinstance(r, dict)] if isinstance(recent, list) else []
        paths = data.pop("paths", None)
        data["paths"] = ({str(path): PathRecord.from_json(record) for path, record in paths.items()
                          if isinstance(record, dict)} if isinstance(paths, dict) else {})
        return cls(**data)


@dataclass
class SnapshotState:
    """Every repository's record, and the reports waiting for the server."""

    repositories: dict[str, RepositoryRecord] = field(default_factory=dict)
    #: ``{"kind": "snapshot"|"verify", "body": {...}}`` in the order they happened.
    pending: list[dict[str, Any]] = field(default_factory=list)

    def repository(self, name: str) -> RepositoryRecord:
        return self.repositories.setdefault(name, RepositoryRecord())

    def queue(self, kind: str, body: dict[str, Any]) -> None:
        self.pending.append({"kind": kind, "body": body})
        del self.pending[:-MAX_PENDING]


class StateFile:
    """The state file in ``directory``; :meth:`change` reads, changes and writes it under a lock."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def read(self) -> SnapshotState:
        """Return the remembered state (empty before the first run); ConfigError if the file is damaged."""
        try:
            raw = json.loads(self.path.read_text())
            return SnapshotState(
                repositories={name: RepositoryRecord.from_json(value)
                              for name, value in (raw.get("repositories") or {}).items()},
                pending=list(raw.get("pending") or []),
            )
        except FileNotFoundError:
            return SnapshotState()
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"the snapshot state file {self.path} is damaged ({exc.__class__.__name__})",
                              hint=f"move it aside; the next run starts a fresh record: mv {self.path} {self.path}.bad") from None

    def change(self, edit: Callable[[SnapshotState], T]) -> T:
        """Apply ``edit`` to the state and save it, with no other process changing it meanwhile; return what
        ``edit`` returned."""
        with self._locked():
            state = self.read()
            result = edit(state)
            write_private(self.path, json.dumps(
                {"repositories": {name: record.to_json() for name, record in state.repositories.items()},
                 "pending": state.pending}, indent=1).encode())
            return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _threads:
            if fcntl is None:
                yield
                return
            fd = os.open(self.directory / ".state.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
