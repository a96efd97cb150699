"""Two `helpline server run` processes on one database run each background job once per
period between them, and when the one that ran it last stops, the other carries on."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from server.db import create_db_engine, session_factory, transaction, utcnow
from server.models import JobRun
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e

PERIOD = 0.5
WINDOW = 4.0


def _runs_since(engine, since) -> list[JobRun]:
    with transaction(session_factory(engine)) as session:
        query = select(JobRun).where(JobRun.job == "upload-sweep", JobRun.started_at >= since).order_by(JobRun.started_at)
        return list(session.scalars(query))


def test_two_servers_run_a_job_once_per_period(server_factory, tmp_path):
    first = server_factory(upload_sweep_seconds=str(PERIOD))
    database_url = first.database_url or f"sqlite:///{first.data_dir / 'helpline.db'}"
    second = LiveServer(data_dir=tmp_path / "replica", database_url=database_url, env={
        **first.env,
        "HELPLINE_CONFIG": str(first.data_dir / "server.toml"),
        "HELPLINE_DATABASE_URL": database_url,
        "HELPLINE_SIGNING_KEY_FILE": str(first.data_dir / "server-signing-key.pem"),
        "HELPLINE_BLOB_DIR": str(first.data_dir / "blobs"),
    })
    second.data_dir.mkdir()
    engine = create_db_engine(database_url)
    try:
        second.start()
        try:
            since = utcnow()
            time.sleep(WINDOW)
            runs = _runs_since(engine, since)
            starts = [r.started_at for r in runs]
            assert 3 <= len(runs) <= WINDOW / PERIOD + 1, starts
            assert all(later - earlier >= timedelta(seconds=PERIOD) for earlier, later in zip(starts, starts[1:])), starts
            assert {r.outcome for r in runs if r.finished_at} == {"ok"}
            assert {r.pid for r in runs} <= {first.process.pid, second.process.pid}

            # Stop whichever ran it last: the other takes over within a few periods.
            leader, other = (first, second) if runs[-1].pid == first.process.pid else (second, first)
            leader.stop()
            stopped = utcnow()
            deadline = time.monotonic() + 20
            taken_over: list[JobRun] = []
            while not taken_over and time.monotonic() < deadline:
                time.sleep(PERIOD)
                taken_over = [r for r in _runs_since(engine, stopped) if r.pid == other.process.pid]
            assert taken_over, f"no run by the remaining server within 20 s:\n{other.log()[-2000:]}"
        finally:
            second.stop()
    finally:
        engine.dispose()
