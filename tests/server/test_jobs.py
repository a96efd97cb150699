"""Background jobs: one run per period across processes, each run recorded with its outcome."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from server.db import transaction
from server.jobs import JOBS, Job, run_if_due
from server.models import JobRun
from tests.support.inprocess import runtime


@pytest.fixture
def two_processes(tmp_path, new_database):
    """Two runtimes on one database and data directory, as two server processes would have."""
    url = new_database()
    with runtime(tmp_path, url) as first, runtime(tmp_path, url) as second:
        yield first, second


def _runs(state, name: str) -> list[JobRun]:
    with transaction(state.sessions) as session:
        return list(session.scalars(select(JobRun).where(JobRun.job == name).order_by(JobRun.id)))


def test_a_due_job_runs_once_when_two_processes_try_at_once(two_processes):
    calls: list[str] = []
    job = Job("test-slow", lambda settings: 0.5, lambda state: (calls.append("run"), time.sleep(0.3), "done")[-1])
    barrier = threading.Barrier(2)
    waits: list[float] = []

    def attempt(state):
        barrier.wait(timeout=10)
        waits.append(run_if_due(state, job))

    threads = [threading.Thread(target=attempt, args=(state,)) for state in two_processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert calls == ["run"] and len(waits) == 2
    [run] = _runs(two_processes[0], "test-slow")
    assert run.outcome == "ok" and run.detail == "done" and run.finished_at >= run.started_at and run.pid > 0 and run.host

    # Not due again until a period after the run started, whichever process asks.
    assert 0 < run_if_due(two_processes[1], job) <= 0.5 and calls == ["run"]
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(min(0.5, run_if_due(two_processes[1], job)))
    assert calls == ["run", "run"] and len(_runs(two_processes[0], "test-slow")) == 2


def test_a_failed_run_is_recorded_and_the_next_one_still_comes(two_processes):
    state = two_processes[0]

    def broken(state):
        raise OSError("blob store unreachable")

    job = Job("test-broken", lambda settings: 0.1, broken)
    assert run_if_due(state, job) == pytest.approx(0.1)
    [run] = _runs(state, "test-broken")
    assert run.outcome == "failed" and "blob store unreachable" in run.detail and run.finished_at is not None
    time.sleep(0.15)
    run_if_due(state, job)
    assert [r.outcome for r in _runs(state, "test-broken")] == ["failed", "failed"]


def test_upload_sweep_is_registered(two_processes):
    state = two_processes[0]
    [sweep] = [job for job in JOBS if job.name == "upload-sweep"]
    assert sweep.period(state.settings) == state.settings.upload_sweep_seconds
    run_if_due(state, sweep)
    assert [r.outcome for r in _runs(state, "upload-sweep")] == ["ok"]


def test_sweeping_deletes_blobs_before_it_takes_the_write_lock(tmp_path):
    """The blob store (a network call on S3) is never called while SQLite's write lock is held."""
    import sqlite3
    import uuid
    from datetime import timedelta

    from server import tickets
    from server.audit import Actor
    from server.db import utcnow
    from server.models import Agent, Upload, UploadChunk
    from server.uploads import chunk_key

    with runtime(tmp_path, None) as state:
        with transaction(state.sessions) as session:
            ticket = tickets.create_ticket(session, state.settings, Actor.system("test"), title="old uploads", now=utcnow())
            agent = Agent(id=str(uuid.uuid4()), public_key="k" * 43, hostname="pc", credential_hash="h" * 64, created_at=utcnow())
            uploads = [Upload(id=str(uuid.uuid4()), ticket=ticket, agent_id=agent.id, filename="b.tar.gz", size=2, sha256="0" * 64,
                              chunk_size=1, created_at=utcnow() - timedelta(days=4), expires_at=utcnow() - timedelta(days=1))
                       for _ in range(2)]
            session.add_all([agent, *uploads])
            session.flush()
            session.add_all([UploadChunk(upload_id=u.id, index=i, size=1, sha256="0" * 64) for u in uploads for i in range(2)])
        deleted: list[tuple[str, bool]] = []
        real_delete = state.blobs.delete

        def delete(key: str) -> None:
            probe = sqlite3.connect(state.engine.url.database, isolation_level=None, timeout=0.05)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                free = True
            except sqlite3.OperationalError:
                free = False
            finally:
                probe.close()
            deleted.append((key, free))
            real_delete(key)

        state.blobs.delete = delete
        [sweep] = [job for job in JOBS if job.name == "upload-sweep"]
        run_if_due(state, sweep)
        assert sorted(deleted) == sorted((chunk_key(u.id, i), True) for u in uploads for i in range(2))
        with transaction(state.sessions) as session:
            assert all(session.get(Upload, u.id) is None for u in uploads)
        assert _runs(state, "upload-sweep")[-1].detail == "removed 2 expired unfinished uploads"


def test_the_nonce_sweep_deletes_only_nonces_past_their_window(tmp_path):
    """Replay protection keeps each nonce until its request's date leaves the window; the job deletes the rest."""
    import uuid
    from datetime import timedelta

    from server.db import utcnow
    from server.models import Agent, AgentNonce

    with runtime(tmp_path, None) as state:
        now = utcnow()
        with transaction(state.sessions) as session:
            agent = Agent(id=str(uuid.uuid4()), public_key="k" * 43, hostname="pc", credential_hash="h" * 64, created_at=now)
            session.add(agent)
            session.flush()
            session.add_all([AgentNonce(agent_id=agent.id, nonce=f"old-nonce-{i:08d}", expires_at=now - timedelta(seconds=1))
                             for i in range(3)] + [AgentNonce(agent_id=agent.id, nonce="live-nonce-000000", expires_at=now + timedelta(minutes=4))])
        [sweep] = [job for job in JOBS if job.name == "nonce-sweep"]
        run_if_due(state, sweep)
        assert _runs(state, "nonce-sweep")[-1].detail == "removed 3 expired agent request nonces"
        with transaction(state.sessions) as session:
            assert [n.nonce for n in session.query(AgentNonce)] == ["live-nonce-000000"]
