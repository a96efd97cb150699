"""The objects of one agent's restic repository: where they live, who may write or delete them, and the quota.

An object's blob key is built only from checked parts: the agent id (a UUID),
a type from :data:`protocol.snapshots.OBJECT_TYPES` and a name of 64 hex
digits, or ``config``. The database lists the objects (name, size, who made
it, when, whether it is in the trash), so listing, HEAD and the quota never
walk the blob store; a blob without its row is invisible and overwritten by
the next upload of the same name, which can only carry the same bytes.

What a mode may do (docs/threat-model.md):

- ``append``: read everything; add objects whose content hashes to their name;
  never replace one (an identical re-upload is answered 200, as restic expects
  after a lost answer); delete only lock files the agent made; nothing new
  while the server's prune has fenced the repository.
- ``read``: GET, HEAD and list only.
- ``admin``: everything; deletions other than locks go to the trash.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

import anyio.from_thread
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from protocol.errors import (
    ConflictError,
    ForbiddenError,
    HelplineError,
    InvalidInputError,
    NotFoundError,
    StorageFullError,
    TooLargeError,
    UnavailableError,
)
from protocol.snapshots import OBJECT_TYPES, RepositoryMode, is_agent_id
from server.audit import Actor
from server.blobs import SNAPSHOTS, BlobStore, key_under
from server.fleet.policies import server_quota
from server.models import ResticObject, ResticRepository
from server.refusals import refusal
from server.restic_rest.credentials import Grant, ensure_repository
from server.settings import SnapshotSettings

CONFIG = "config"
_NAME = re.compile(r"[0-9a-f]{64}")
#: The largest object the server takes (restic's packs are at most 128 MiB).
MAX_OBJECT_BYTES = 256 * 1024 * 1024
#: Objects read whole into memory before they are stored, because they are checked first.
MAX_SMALL_OBJECT_BYTES = 8 * 1024 * 1024
#: A lock file the server received longer ago than this is stale, whatever time the PC wrote inside it:
#: restic refreshes its locks every 5 minutes and calls a lock stale after 30.
LOCK_STALE_AFTER = timedelta(minutes=30)

#: How much of a request body is gathered before it is handed to the blob store's writer thread.
PIECE = 1024 * 1024

HASH_MISMATCH = "The object's content does not match its name (the SHA-256 of the content); nothing was stored."

PRUNING_MESSAGE = "The server is pruning this repository; the PC's next run will back up as usual."


class PruneFenced(HelplineError):
    """An agent's write while the server's prune holds the repository (HTTP 423 on the REST routes)."""


class HashMismatch(InvalidInputError):
    """The uploaded bytes do not hash to the object's name."""


class Truncated(InvalidInputError):
    """The upload ended before (or ran past) the length it declared."""


@dataclass(frozen=True)
class Target:
    """One checked object of one repository: ``type`` is ``config`` or one of OBJECT_TYPES."""

    repository: str
    type: str
    name: str

    @property
    def key(self) -> str:
        if self.type == CONFIG:
            return key_under(SNAPSHOTS, self.repository, CONFIG)
        if self.type == "data":  # the many packs spread over 256 folders
            return key_under(SNAPSHOTS, self.repository, "data", self.name[:2], self.name)
        return key_under(SNAPSHOTS, self.repository, self.type, self.name)

    @property
    def named_by_content(self) -> bool:
        return self.type != CONFIG

    def __str__(self) -> str:
        return CONFIG if self.type == CONFIG else f"{self.type}/{self.name}"


def repository_of(agent_id: str) -> str:
    if not is_agent_id(agent_id):
        raise NotFoundError("There is no repository at this address.")
    return agent_id


def object_type(repository: str, type_: str) -> str:
    if type_ not in OBJECT_TYPES:
        raise NotFoundError("A restic repository has no such folder.",
                            hint="Types are " + ", ".join(OBJECT_TYPES) + ".")
    return type_


def target(repository: str, type_: str, name: str) -> Target:
    """The checked object ``type_/name`` of ``repository``; NotFoundError for anything else."""
    object_type(repository, type_)
    if not _NAME.fullmatch(name):
        raise NotFoundError("Object names are 64 lower-case hex digits (the SHA-256 of the content).")
    return Target(repository, type_, name)


def config_target(repository: str) -> Target:
    return Target(repository, CONFIG, CONFIG)


# --- reading -------------------------------------------------------------------------------


def _live(session: Session, where: Target) -> ResticObject | None:
    row = session.get(ResticObject, (where.repository, where.type, where.name))
    return row if row is not None and row.trashed_at is None else None


def stat(session: Session, where: Target) -> int:
    """The size of a live object; NotFoundError if the repository has none by that name."""
    row = _live(session, where)
    if row is None:
        raise NotFoundError(f"The repository has no {where}.")
    return row.size


def listing(session: Session, grant: Grant, type_: str, now: datetime) -> list[tuple[str, int]]:
    """(name, size) of the live objects of one type, by name.

    While the server's prune fences the repository its own (admin) view of
    ``locks`` leaves out the agent's locks: they are stale by then (see
    :func:`server.restic_rest.prune.ready_to_prune`), and restic would otherwise
    trust the times a PC wrote in them.
    """
    query = select(ResticObject.name, ResticObject.size).where(
        ResticObject.agent_id == grant.repository, ResticObject.type == type_, ResticObject.trashed_at.is_(None))
    if type_ == "locks" and grant.mode is RepositoryMode.ADMIN:
        repo = session.get(ResticRepository, grant.repository)
        if repo is not None and repo.fenced_at is not None:
            query = query.where(ResticObject.created_by == RepositoryMode.ADMIN.value)
    return [(name, size) for name, size in session.execute(query.order_by(ResticObject.name))]


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single-range ``Range`` header against ``size``; None for the whole object.

    Raise ValueError for a range that cannot be satisfied (answered 416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # not a range this server serves: the whole object, as HTTP allows
    first, sep, last = spec.strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range outside the object")
    return start, end


#: Worker threads that read the next piece of a long read while the event loop sends the last one.
_READS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="restic-read")


async def read_ahead(stream: BinaryIO, where: Target, length: int, piece: int | None = None) -> AsyncIterator[bytes]:
    """``length`` bytes of an opened object stream in pieces, the next one read while this one is sent; closes it.

    restic restores a pack by one ranged GET of up to its whole size: reading
    piece n+1 in a worker thread while the event loop writes piece n to the
    socket keeps the disk (or S3) and the network busy at the same time, and a
    piece costs one hand-over to the loop instead of a round trip to a thread.
    Whatever ends the stream (done, failed, restic gone), the stream is closed
    only once no worker thread reads it any more.
    """
    remaining, piece = length, piece or PIECE
    pending: Future[bytes] | None = None

    def next_piece() -> Future[bytes] | None:
        nonlocal remaining
        if remaining <= 0:
            return None
        size = min(piece, remaining)
        remaining -= size
        return _READS.submit(_read_exactly, stream, size, where)

    try:
        pending = next_piece()
        while pending is not None:
            data = await asyncio.wrap_future(pending)
            pending = next_piece()
            yield data
    finally:
        if pending is None:
            stream.close()
        else:  # runs in the reading thread when its read ends, or at once if it never started
            pending.add_done_callback(lambda _: stream.close())


def _read_exactly(stream: BinaryIO, size: int, where: Target) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise UnavailableError(f"{where} is shorter in the blob store than the repository lists it.")
    return data


# --- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """What :func:`begin_upload` decided: store the bytes (``reserved`` bytes counted) or only check them."""

    exists: bool
    reserved: int


def _refuse_when_fenced(session: Session, grant: Grant) -> ResticRepository | None:
    repo = session.get(ResticRepository, grant.repository)
    if grant.mode is RepositoryMode.APPEND and repo is not None and repo.fenced_at is not None:
        raise PruneFenced(PRUNING_MESSAGE, hint="Nothing is lost: the snapshot is made on the next run.")
    return repo


def refuse_unless_writable(grant: Grant) -> None:
    if grant.mode is RepositoryMode.READ:
        raise ForbiddenError("This credential only reads the repository.",
                             hint="A restore reads without locking: run restic with --no-lock.")


def create_repository(session: Session, grant: Grant, now: datetime) -> None:
    """``POST /?create=true``: the repository exists from now (its objects come with their uploads)."""
    refuse_unless_writable(grant)
    ensure_repository(session, grant.repository, now)


def begin_upload(session: Session, options: SnapshotSettings, grant: Grant, where: Target, length: int,
                 now: datetime) -> Upload:
    """Decide an upload of ``length`` bytes to ``where``: refuse it, or reserve its size against the quota.

    An object that exists already is not stored again: its name fixes its bytes,
    so the upload is only checked and answered as stored. A ``config`` that
    exists is never replaced by an agent.
    """
    refuse_unless_writable(grant)
    if length > MAX_OBJECT_BYTES:
        raise TooLargeError(f"An object of {length} bytes is over the server's limit of {MAX_OBJECT_BYTES} bytes.")
    repo = _refuse_when_fenced(session, grant) or ensure_repository(session, grant.repository, now)
    row = session.get(ResticObject, (where.repository, where.type, where.name))
    if row is not None and row.trashed_at is not None and where.named_by_content:
        # Back from the trash, whose blob is still stored: the name fixes the bytes, checked as they arrive.
        row.trashed_at, row.created_by = None, grant.mode.value
        _settle(session, where.repository, row.size)
        return Upload(exists=True, reserved=0)
    if row is not None:
        return Upload(exists=True, reserved=0)  # checked against its name, or (config) against what is stored
    quota = server_quota(session, repo.agent_id, options.quota_bytes)  # the group policy's, else the server's
    claimed = session.execute(
        update(ResticRepository)
        .where(ResticRepository.agent_id == repo.agent_id, ResticRepository.bytes + length <= quota)
        .values(bytes=ResticRepository.bytes + length)
    ).rowcount
    if not claimed:
        session.refresh(repo)
        raise StorageFullError(
            f"This PC's repository on the server is full: {repo.bytes} of {quota} bytes are used "
            f"and this object needs {length} more.",
            hint="An administrator raises the group policy's server_quota or [snapshots] quota_bytes, "
                 "or the server's prune makes room.")
    return Upload(exists=False, reserved=length)


def finish_upload(session: Session, grant: Grant, where: Target, size: int, reserved: int, now: datetime) -> None:
    """Record a stored object (or settle the reservation of one that arrived meanwhile)."""
    existing = session.get(ResticObject, (where.repository, where.type, where.name))
    if existing is not None and existing.trashed_at is None:
        _settle(session, where.repository, -reserved)
        return
    if existing is not None:  # back from the trash: the same bytes, stored again
        existing.trashed_at, existing.size, existing.created_at = None, size, now
        existing.created_by = grant.mode.value
    else:
        try:
            with session.begin_nested():
                session.add(ResticObject(agent_id=where.repository, type=where.type, name=where.name, size=size,
                                         created_at=now, created_by=grant.mode.value))
        except IntegrityError:  # the same object from a parallel upload: the same bytes
            _settle(session, where.repository, -reserved)
            return
    _settle(session, where.repository, size - reserved)


def release(session: Session, repository: str, reserved: int) -> None:
    """Give back the reservation of an upload that failed."""
    if reserved:
        _settle(session, repository, -reserved)


def _settle(session: Session, repository: str, change: int) -> None:
    if change:
        session.execute(update(ResticRepository).where(ResticRepository.agent_id == repository)
                        .values(bytes=ResticRepository.bytes + change))


class BodyReader:
    """The request body as a blocking file object for a blob store's ``put`` (read in a worker thread).

    It hashes what passes; at the end it raises :class:`HashMismatch` if the
    bytes do not hash to ``expected`` (when given) and :class:`Truncated` if
    they are not ``length`` long, so a store never commits such a blob.
    """

    def __init__(self, chunks: AsyncIterator[bytes], length: int, expected: str | None):
        self._chunks, self.length, self.expected = chunks, length, expected
        self._pending = b""
        self._done = False
        self.size = 0
        self._digest: hashlib._Hash | None = hashlib.sha256()

    async def _next(self) -> bytes:
        """The next piece of the body, up to :data:`PIECE` bytes gathered from the network's smaller chunks
        (each piece is one trip between the worker thread and the event loop); b"" at the end."""
        parts, size = [], 0
        while size < PIECE:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def _pull(self, receive: Callable[[], bytes]) -> bytes:
        while not self._done:
            data = receive()
            if not data:
                self._done = True
                self._finish()
                return b""
            self.size += len(data)
            if self.size > self.length:
                raise Truncated(f"The upload is longer than the {self.length} bytes it declared.")
            if self._digest is not None:
                self._digest.update(data)
            return data
        return b""

    def _finish(self) -> None:
        if self.size != self.length:
            raise Truncated(f"The upload ended after {self.size} of the {self.length} bytes it declared.")
        if self.expected is not None and self._digest is not None and self._digest.hexdigest() != self.expected:
            raise HashMismatch(HASH_MISMATCH)

    def leave_check_to_store(self) -> str | None:
        """Stop hashing here: the blob store hashes what it writes and checks it against the returned name."""
        self._digest = None
        return self.expected

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (any amount if -1); b"" at the end. Called from a worker thread."""
        if not self._pending:
            self._pending = self._pull(lambda: anyio.from_thread.run(self._next))
        if size < 0 or size >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    async def read_all(self, limit: int) -> bytes:
        """The whole body in memory (small objects only, ``length`` at most ``limit``), checked."""
        if self.length > limit:
            raise TooLargeError(f"This kind of object is at most {limit} bytes.")
        parts = []
        while True:
            chunk = await self._next()
            data = self._pull(lambda: chunk)
            if not data:
                return b"".join(parts)
            parts.append(data)

    async def discard(self) -> None:
        """Read what is left of the body unchecked, keeping nothing (before a refusal is answered)."""
        if self._done:
            return
        self._done = True
        try:
            async for _ in self._chunks:
                pass
        except Exception:  # noqa: BLE001 - the client went away: nothing to read, the refusal stands
            return

    async def drain(self) -> None:
        """Read and check the body without keeping it (an upload of an object that exists already)."""
        while True:
            chunk = await self._next()
            if not self._pull(lambda: chunk):
                return


# --- deleting ------------------------------------------------------------------------------


def delete(session: Session, blobs: BlobStore, options: SnapshotSettings, grant: Grant, where: Target,
           actor: Actor, now: datetime) -> bool:
    """Delete an object as ``grant`` may; return True if its blob must now be removed (outside the session).

    An agent (append) deletes only lock files it made; an admin's deletions of
    anything but locks go to the trash for ``trash_days``. A missing object is
    answered as deleted, as restic expects of a retried DELETE.
    """
    refuse_unless_writable(grant)
    row = session.get(ResticObject, (where.repository, where.type, where.name))
    if grant.mode is RepositoryMode.APPEND:
        if where.type != "locks" or (row is not None and row.created_by != RepositoryMode.APPEND.value):
            raise refusal(session, ForbiddenError(
                "This repository is append-only for the PC: it removes nothing but its own locks.",
                hint="Old snapshots are pruned by the server."), actor=actor, action="restic.delete.refused",
                target_type="agent", target_id=where.repository, now=now, object=str(where))
    if row is None or row.trashed_at is not None:
        return False
    _settle(session, where.repository, -row.size)
    if where.type != "locks" and options.trash_days > 0:
        row.trashed_at = now
        return False
    session.delete(row)
    return True


def refuse_config_change(stored: bytes, sent: bytes) -> None:
    if stored != sent:
        raise ConflictError("This repository is set up already; its config is never replaced.")
