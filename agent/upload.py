"""Resumable bundle uploads, and the outbox that keeps bundles until they are delivered.

A bundle goes into the outbox first (a file and a small JSON record in the
agent directory), so neither a dropped connection, a server restart nor a
restart of this program loses it: the next attempt asks the server which chunks
it already has and sends only the rest. Every chunk carries its SHA-256, and
the server checks the whole file's SHA-256 before it accepts the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from agent.client import HelplineClient
from agent.http import AgentSigner
from agent.paths import write_private
from agent.store import AgentStore
from protocol.archive import sha256_file
from protocol.errors import ConflictError, DamagedError, HelplineError, StorageFullError, UnavailableError
from protocol.schemas import BundlePublic, UploadCreate, UploadStatus, parse_input

OUTBOX = "outbox"
Progress = Callable[[int, int], None]  # (bytes sent so far, total bytes)


@dataclass
class OutboxEntry:
    """A bundle waiting to be delivered to a ticket."""

    id: str
    ticket: str
    server_url: str
    archive: str  # file name inside the outbox
    size: int
    sha256: str
    created_at: float
    upload_id: str | None = None

    def path(self, outbox: Path) -> Path:
        return outbox / self.archive


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per step, and capped exponential back-off with jitter."""

    attempts: int = 8
    connect_attempts: int = 3  # for the first contact: an unreachable server queues the bundle quickly
    first_delay: float = 0.5
    max_delay: float = 15.0
    deadline: float = 900.0  # seconds for one bundle, all retries included

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.first_delay * (2 ** attempt))
        return base * (0.5 + random.random() / 2)


def outbox_dir(directory: Path | None = None) -> Path:
    return AgentStore(directory).folder(OUTBOX)


def enqueue(archive: Path, ticket: str, server_url: str, *, directory: Path | None = None, move: bool = True) -> OutboxEntry:
    """Put a bundle archive in the outbox (moved, or copied) and return its record."""
    box = outbox_dir(directory)
    size, sha256 = sha256_file(archive)
    entry_id = f"{int(time.time())}-{sha256[:12]}"
    target = box / f"{entry_id}.tar.gz"
    if move:
        shutil.move(str(archive), target)
    else:
        shutil.copyfile(archive, target)
    target.chmod(0o600)
    entry = OutboxEntry(entry_id, ticket, server_url, target.name, size, sha256, time.time())
    _save(box, entry)
    return entry


def _save(box: Path, entry: OutboxEntry) -> None:
    write_private(box / f"{entry.id}.json", json.dumps(asdict(entry), indent=2).encode())


def pending(directory: Path | None = None) -> list[OutboxEntry]:
    """Bundles still waiting in the outbox, oldest first (damaged records are skipped)."""
    box = outbox_dir(directory)
    entries = []
    for record in sorted(box.glob("*.json")):
        try:
            entry = OutboxEntry(**json.loads(record.read_text()))
        except (ValueError, TypeError):
            continue
        if entry.path(box).exists():
            entries.append(entry)
    return sorted(entries, key=lambda e: e.created_at)


def remove(entry: OutboxEntry, directory: Path | None = None) -> None:
    box = outbox_dir(directory)
    entry.path(box).unlink(missing_ok=True)
    (box / f"{entry.id}.json").unlink(missing_ok=True)


def _retrying(policy: RetryPolicy, started: float, step: Callable[[], object], what: str,
              sleep: Callable[[float], None] = time.sleep) -> object:
    """Run ``step`` until it succeeds; retry only what a retry can fix (network, server busy)."""
    last: HelplineError | None = None
    for attempt in range(policy.attempts):
        try:
            return step()
        except StorageFullError:
            raise  # the server is full: retrying now cannot help; the bundle waits in the outbox
        except (UnavailableError, DamagedError) as exc:
            last = exc
        except HelplineError as exc:
            if type(exc) is not HelplineError:  # a definite refusal (auth, not found, too large…)
                raise
            last = exc  # an unexpected server error (5xx): worth another try
        if time.monotonic() - started > policy.deadline:
            break
        sleep(policy.delay(attempt))
    assert last is not None
    raise UnavailableError(f"Could not {what}: {last.message}", hint="The bundle stays queued; run `helpline share --send-queued` later.") from last


def deliver(entry: OutboxEntry, agent: AgentSigner, *, directory: Path | None = None, progress: Progress | None = None,
            policy: RetryPolicy = RetryPolicy(), client: HelplineClient | None = None) -> BundlePublic:
    """Send one outbox bundle to its ticket, resuming where any earlier attempt stopped.

    On success the bundle leaves the outbox. Raise UnavailableError (the bundle
    stays queued) when the server stays unreachable or is full (StorageFullError),
    QuotaExceededError (queued too) when this PC is over a quota, TooLargeError before any
    data is sent if the server would refuse the size, and other HelplineErrors
    for refusals a retry cannot fix.
    """
    box = outbox_dir(directory)
    started = time.monotonic()
    server = client or HelplineClient.connect(entry.server_url, agent=agent, timeout=60)
    try:
        # The first request is the start of the upload: it carries no data, and the server refuses a bundle over
        # its size limit there (TooLargeError), so no round trip only to ask for the limit. An unreachable
        # server is given up on after the first contact's fewer attempts: the bundle queues quickly.
        first_contact = dataclasses.replace(policy, attempts=min(policy.attempts, policy.connect_attempts))
        for round_ in range(2):  # a second round only if the server let the first upload expire
            try:
                bundle = _upload_once(server, entry, box, policy, started, progress,
                                      first=first_contact if round_ == 0 else policy)
                break
            except ConflictError:
                if round_:
                    raise
    finally:
        if client is None:
            server.close()
    remove(entry, directory)
    return bundle


def _upload_once(server: HelplineClient, entry: OutboxEntry, box: Path, policy: RetryPolicy, started: float,
                 progress: Progress | None, *, first: RetryPolicy | None = None) -> BundlePublic:
    """Start (or resume) the upload, send what the server lacks, complete it; ``first`` is the policy of the start."""
    body = parse_input(UploadCreate, filename="bundle.tar.gz", size=entry.size, sha256=entry.sha256)
    status = _retrying(first or policy, started, lambda: server.start_upload(entry.ticket, body), "start the upload")
    entry.upload_id = status.id
    _save(box, entry)
    if not status.complete:
        _send_chunks(server, entry, entry.path(box), status, policy, started, progress)
    # Completing is idempotent: after a lost answer it returns the bundle already made.
    bundle = _retrying(policy, started, lambda: server.complete_upload(status.id), "complete the upload")
    if progress:
        progress(entry.size, entry.size)
    return bundle


def _send_chunks(server: HelplineClient, entry: OutboxEntry, path: Path, status: UploadStatus, policy: RetryPolicy,
                 started: float, progress: Progress | None) -> None:
    have = set(status.received)
    sent = sum(min(status.chunk_size, entry.size - i * status.chunk_size) for i in have)
    if progress:
        progress(sent, entry.size)
    with path.open("rb") as fh:
        for index in range(status.chunks):
            if index in have:
                continue
            fh.seek(index * status.chunk_size)
            data = fh.read(status.chunk_size)
            digest = hashlib.sha256(data).hexdigest()

            def put(index: int = index, data: bytes = data, digest: str = digest) -> UploadStatus:
                return server.put_chunk(status.id, index, data, digest)

            _retrying(policy, started, put, f"send chunk {index}")
            sent += len(data)
            if progress:
                progress(sent, entry.size)


class Delivery(StrEnum):
    """What became of a queued bundle when the outbox was sent."""

    DELIVERED = "delivered"
    WAITING = "waiting"  # the server did not answer; the bundle stays queued
    UNLINKED = "unlinked"  # this PC no longer belongs to the bundle's server; the bundle stays queued
    REFUSED = "refused"  # the server refused it; the bundle stays queued


@dataclass(frozen=True)
class QueuedDelivery:
    """One queued bundle and what happened to it; ``bundle`` when delivered, ``reason`` when refused."""

    entry: OutboxEntry
    result: Delivery
    bundle: BundlePublic | None = None
    reason: str = ""


# Sending the queue is a side errand (of `share --send-queued`, or after a share): it gives up sooner.
QUEUE_POLICY = RetryPolicy(attempts=3, deadline=60)


def send_queued(*, directory: Path | None = None, policy: RetryPolicy = QUEUE_POLICY) -> list[QueuedDelivery]:
    """Try to deliver every bundle in the outbox, oldest first, as this PC's agent; say what became of each.

    A bundle for a server this PC is no longer linked to is left alone. Raise
    ConfigError only if the saved agent state is damaged.
    """
    store = AgentStore(directory)
    state = store.load()
    results = []
    for entry in pending(directory):
        if state is None or state.server_url != entry.server_url:
            results.append(QueuedDelivery(entry, Delivery.UNLINKED))
            continue
        try:
            bundle = deliver(entry, store.signer(state), directory=directory, policy=policy)
            results.append(QueuedDelivery(entry, Delivery.DELIVERED, bundle=bundle))
        except UnavailableError:
            results.append(QueuedDelivery(entry, Delivery.WAITING))
        except HelplineError as exc:
            results.append(QueuedDelivery(entry, Delivery.REFUSED, reason=exc.message))
    return results
