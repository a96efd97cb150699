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

from server import sessions
from server.agent_requests import sweep_nonces
from server.db import transaction, utcnow
from server.models import JobRun
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


NONCE_SWEEP_SECONDS = 300.0  # nonces outlive their window by at most this long


def sweep_agent_nonces(state: ServerRuntime) -> str:
    """Delete agent request nonces whose requests' dates have left the clock-skew window."""
    with transaction(state.sessions) as session:
        removed = sweep_nonces(session, now=state.clock())
    return f"removed {removed} expired agent request nonces"


SESSION_SWEEP_SECONDS = 3600.0


def sweep_session_leftovers(state: ServerRuntime) -> str:
    """Delete session recordings past their retention and long-expired relay passes."""
    with transaction(state.sessions) as session:
        recordings, passes = sessions.sweep(session, state.blobs, state.settings, now=state.clock())
    return f"removed {recordings} expired session recordings and {passes} old relay passes"


JOBS: tuple[Job, ...] = (
    Job("upload-sweep", lambda settings: settings.upload_sweep_seconds, sweep_uploads),
    Job("nonce-sweep", lambda settings: NONCE_SWEEP_SECONDS, sweep_agent_nonces),
    Job("session-sweep", lambda settings: SESSION_SWEEP_SECONDS, sweep_session_leftovers),
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
