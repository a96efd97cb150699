"""Background jobs: a registry of named periodic jobs, each run once per period per deployment.

Every server process keeps the same schedule. When a job comes due, a process
takes the job's lock without waiting — a PostgreSQL advisory lock (replicas
share the database) or, on SQLite (one machine), a file lock in the data
directory, beside the database file — and reads the job's last run from ``job_runs``. Only if a whole
period has passed since that run started does it run the job, recording the
host, process, start, end and outcome. So a job runs once per period however
many processes serve, and when one process stops the others carry on: there is
no leader to hand over from, only the record of the last run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import anyio
from sqlalchemy import delete, func, select

from server import escrow, retention, sessions, snapshots, webhooks
from server.agent_requests import sweep_nonces
from server.audit import Actor
from server.db import transaction, utcnow
from server.restic_rest.prune import empty_trash, prune_repositories
from server.models import JobRun
from server.pc_requests import request_bell, sweep
from server.relay.hub import end_key
from server.runtime import ServerRuntime
from server.settings import ServerSettings
from server.uploads import sweep_expired

log = logging.getLogger("helpline.server.jobs")

BUSY_RETRY_SECONDS = 5.0  # another process holds the job's lock: look again this soon (or one period, if shorter)
HISTORY = timedelta(days=30)  # runs recorded longer ago than this are deleted
DETAIL_CHARS = 500


@dataclass(frozen=True)
class Job:
    """A named job run every ``period(settings)`` seconds; ``run`` returns a one-line outcome."""

    name: str
    period: Callable[[ServerSettings], float]
    run: Callable[[ServerRuntime], str]


def sweep_uploads(state: ServerRuntime) -> str:
    """Delete expired, unfinished uploads and their chunks."""
    with transaction(state.sessions) as session:
        removed = sweep_expired(session, state.blobs, now=state.clock(), limit=200)
    return f"removed {removed} expired unfinished uploads"


NONCE_SWEEP_SECONDS = 300.0
RESTIC_TRASH_SECONDS = 3600.0  # the restic trash is emptied, and expired repository credentials deleted, hourly  # nonces outlive their window by at most this long


def sweep_agent_nonces(state: ServerRuntime) -> str:
    """Delete agent request nonces whose requests' dates have left the clock-skew window."""
    with transaction(state.sessions) as session:
        removed = sweep_nonces(session, now=state.clock())
    return f"removed {removed} expired agent request nonces"


PROTECTION_WATCH_SECONDS = 600.0  # a PC that went stale or unverified is audited within this long


def watch_protection(state: ServerRuntime) -> str:
    """Audit the PCs whose snapshot protection changed with time alone (stale, unverified)."""
    with transaction(state.sessions) as session:
        changed = snapshots.watch(session, state.settings.snapshots, now=state.clock())
    return f"{changed} PCs changed protection state"


ESCROW_PURGE_SECONDS = 300.0  # escrowed passwords are gone within this long of escrow being turned off


def purge_escrow(state: ServerRuntime) -> str:
    """With escrow off, delete the repository passwords PCs escrowed before (each audited)."""
    if state.settings.snapshots.escrow:
        return "escrow is on: nothing to purge"
    with transaction(state.sessions) as session:
        removed = escrow.purge(session, Actor.system("escrow-purge"))
    return f"escrow is off: deleted {removed} escrowed passwords"


def sweep_pc_requests(state: ServerRuntime) -> str:
    """Mark engineers' requests to PCs expired when nobody started them in time (failed when gone silent)."""
    with transaction(state.sessions) as session:
        changed = [row.id for row in sweep(session, now=state.clock())]
    for request_id in changed:
        state.doorbell.ring(request_bell(request_id))
    return f"expired {len(changed)} requests to PCs"
SESSION_SWEEP_SECONDS = 3600.0
#: How often sessions that ran out unnoticed are ended (audited, on the timeline, announced).
SESSION_SETTLE_SECONDS = 60.0


def settle_sessions(state: ServerRuntime) -> str:
    """End the sessions whose offer, request, grant or granted time ran out while nobody looked."""
    with transaction(state.sessions) as session:
        ended = sessions.settle_ran_out(session, now=state.clock())
    for session_id in ended:
        state.doorbell.ring(session_id)
        state.doorbell.ring(end_key(session_id))
    return f"ended {len(ended)} sessions that ran out"


def sweep_session_leftovers(state: ServerRuntime) -> str:
    """Delete session recordings past their retention and long-expired relay passes."""
    with transaction(state.sessions) as session:
        recordings, passes = sessions.sweep(session, state.blobs, state.settings, now=state.clock())
    return f"removed {recordings} expired session recordings and {passes} old relay passes"


def deliver_webhooks(state: ServerRuntime) -> str:
    """Send the webhook deliveries that are due (first attempts and retries)."""
    delivered, retried, failed = webhooks.deliver_due(state.sessions, webhooks.WebhookKey(state.signing_key),
                                                      state.settings.webhooks, now=state.clock)
    return f"delivered {delivered} webhook events, {retried} to retry, {failed} failed"


def watch_ticket_deadlines(state: ServerRuntime) -> str:
    """Emit the webhook events of tickets whose first response is due soon or overdue (once per ticket)."""
    with transaction(state.sessions) as session:
        soon, overdue = webhooks.watch_deadlines(session, state.settings, now=state.clock())
    return f"{soon} tickets' first response due soon, {overdue} overdue"


def enforce_retention(state: ServerRuntime) -> str:
    """Delete bundles, revoked PCs' snapshots and old webhook events past the ``[retention]`` settings (audited)."""
    with transaction(state.sessions) as session:
        bundles, repositories, events = retention.enforce(session, state.blobs, state.settings, now=state.clock())
    return (f"removed {bundles} bundles, {repositories} revoked PCs' snapshot repositories and {events} old webhook "
            "events past their retention")


JOBS: tuple[Job, ...] = (
    Job("upload-sweep", lambda settings: settings.upload_sweep_seconds, sweep_uploads),
    Job("nonce-sweep", lambda settings: NONCE_SWEEP_SECONDS, sweep_agent_nonces),
    Job("restic-prune", lambda settings: settings.snapshots.prune_check_minutes * 60, prune_repositories),
    Job("restic-trash", lambda settings: RESTIC_TRASH_SECONDS, empty_trash),
    Job("protection-watch", lambda settings: PROTECTION_WATCH_SECONDS, watch_protection),
    Job("escrow-purge", lambda settings: ESCROW_PURGE_SECONDS, purge_escrow),
    Job("pc-request-sweep", lambda settings: settings.snapshots.request_sweep_seconds, sweep_pc_requests),
    Job("session-sweep", lambda settings: SESSION_SWEEP_SECONDS, sweep_session_leftovers),
    Job("session-settle", lambda settings: SESSION_SETTLE_SECONDS, settle_sessions),
    Job("webhook-deliver", lambda settings: settings.webhooks.deliver_seconds, deliver_webhooks),
    Job("ticket-deadlines", lambda settings: settings.webhooks.deadline_check_seconds, watch_ticket_deadlines),
    Job("retention", lambda settings: settings.retention.check_minutes * 60, enforce_retention),
)


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock key of job ``name`` (a signed 64-bit number)."""
    return int.from_bytes(hashlib.sha256(b"helpline-job:" + name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def job_lock(state: ServerRuntime, name: str) -> Iterator[bool]:
    """Try to take job ``name``'s deployment-wide lock without waiting; yield whether it is held."""
    if state.engine.dialect.name == "postgresql":
        with state.engine.connect() as conn, conn.begin():
            # A transaction-level lock: released at the end of this transaction, or if the process dies.
            yield bool(conn.scalar(select(func.pg_try_advisory_xact_lock(lock_key(name)))))
        return
    with _file_lock(_lock_dir(state) / f"{name}.lock") as held:
        yield held


def _lock_dir(state: ServerRuntime) -> Path:
    """Where SQLite job locks live: beside the database file (in the data directory by default)."""
    database = state.engine.url.database
    if database and database != ":memory:":
        path = Path(database)
        return path.with_name(path.name + ".jobs")
    return state.settings.data_dir / "jobs"


@contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield _try_lock_file(fd)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _try_lock_file(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def run_if_due(state: ServerRuntime, job: Job) -> float:
    """Run ``job`` here if it is due and no other process is running it; return seconds until it is next due."""
    period = job.period(state.settings)
    with job_lock(state, job.name) as held:
        if not held:
            return min(period, BUSY_RETRY_SECONDS)
        with transaction(state.sessions) as session:
            last = session.scalar(select(func.max(JobRun.started_at)).where(JobRun.job == job.name))
            started = utcnow()
            if last is not None and (wait := (last + timedelta(seconds=period) - started).total_seconds()) > 0:
                return wait
            run = JobRun(job=job.name, host=socket.gethostname()[:255], pid=os.getpid(), started_at=started, outcome="running")
            session.add(run)
        try:
            outcome, detail = "ok", job.run(state)
        except Exception as exc:  # a failed run is recorded; the next one still comes
            log.exception("background job %s failed", job.name)
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        with transaction(state.sessions) as session:
            session.add(run)
            run.finished_at, run.outcome, run.detail = utcnow(), outcome, detail[:DETAIL_CHARS]
            session.execute(delete(JobRun).where(JobRun.job == job.name, JobRun.started_at < started - HISTORY))
    return period


async def run_jobs(state: ServerRuntime, jobs: tuple[Job, ...] = JOBS) -> None:
    """Keep every job's schedule until cancelled; a run in progress finishes first."""

    async def keep(job: Job) -> None:
        while True:
            try:
                wait = await anyio.to_thread.run_sync(run_if_due, state, job)
            except Exception:  # the database may be away for a while; try again next period
                log.exception("scheduling background job %s failed", job.name)
                wait = job.period(state.settings)
            await anyio.sleep(wait)

    async with anyio.create_task_group() as group:
        for job in jobs:
            group.start_soon(keep, job)
