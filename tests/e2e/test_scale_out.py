"""Two `helpline server run` processes on loopback, sharing one PostgreSQL database, one S3 bucket (moto's
server), the signing key and the secret, behave as one server: an engineer's request made through A reaches
an agent whose long poll B holds, by the doorbell's NOTIFY alone; a remote session whose PC side is on A and
whose engineer's real `ssh` (through `helpline relay`) is on B runs a command; a bundle uploaded through A
downloads through B; a background job runs once per period between them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from agent import upload
from agent.client import HelplineClient
from agent.store import AgentStore
from server.db import create_db_engine, session_factory, transaction, utcnow
from server.models import JobRun, RelayRoute
from tests.support.bundles import write_archive
from tests.support.live import ENGINEER_PASSWORD, PC, LiveServer, token_of
from tests.support.s3 import moto_server  # noqa: F401 - fixture
from tests.support.sessions import ENGINEER, EngineerRun, UserTerminal, make_desk

pytestmark = pytest.mark.e2e

WAIT = 55  # the PC's long poll: the longest the server holds it (protocol.pc_requests.MAX_WAIT_SECONDS)
SWEEP_PERIOD = 1.0
JOB_WINDOW = 5.0


@pytest.fixture
def backend() -> str:
    """Several server processes share PostgreSQL; SQLite means one server process."""
    return "postgresql"


class Replicas:
    """Processes A and B of one deployment, and a way into their shared database."""

    def __init__(self, a: LiveServer, b: LiveServer, database_url: str, bucket: str):
        self.a, self.b, self.database_url, self.bucket = a, b, database_url, bucket
        self.engine = create_db_engine(database_url)

    def stop(self) -> None:
        for server in (self.a, self.b):
            server.stop()
        self.engine.dispose()


@pytest.fixture
def replicas(tmp_path, new_server_database, moto_server) -> Replicas:  # noqa: F811
    database_url, template = new_server_database()
    bucket = moto_server.create_bucket()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    env = {
        "HELPLINE_SECRET_KEY": secrets.token_urlsafe(48),  # pairing codes and enrollment tokens are keyed by it
        "HELPLINE_SIGNING_KEY_FILE": str(shared / "server-signing-key.pem"),
        **{f"HELPLINE_{k.upper()}": v for k, v in moto_server.blob_env(bucket).items()},
        # Only the doorbell's notifications may wake a long poll within the tests' waits: the safety look
        # waits an hour, and the fallback look (were the bus away) a minute, longer than any poll is held.
        "HELPLINE_BUS__SAFETY_LOOK_SECONDS": "3600",
        "HELPLINE_SNAPSHOTS__REQUEST_POLL_SECONDS": "60",
        "HELPLINE_UPLOAD_SWEEP_SECONDS": str(SWEEP_PERIOD),
    }
    servers = [LiveServer(data_dir=tmp_path / name, database_url=database_url, env=dict(env), template=template)
               for name in ("a", "b")]
    made = Replicas(*servers, database_url, bucket)
    try:
        for server in servers:  # A makes the shared signing key at its first start; B loads it
            server.init()
            server.start()
        yield made
    finally:
        made.stop()


def test_a_request_made_through_one_process_reaches_an_agent_held_by_the_other(replicas, make_pc):
    a, b = replicas.a, replicas.b
    admin = make_pc("admin")
    admin.login(a)
    token = admin.ok("enroll-token", "create", "--json").json()["token"]
    pc = make_pc("pc")
    agent_id = pc.ok("agent", "enroll", a.url, token, "--json").json()["agent_id"]

    answers: list = []
    client = HelplineClient.connect(b.url, agent=AgentStore(pc.agent_dir).signer(), timeout=WAIT + 30)
    poll = threading.Thread(target=lambda: answers.append(client.next_pc_requests(wait=WAIT)), daemon=True)
    poll.start()
    time.sleep(2)  # B holds the poll and has looked once (nothing yet); from here only a ring can wake it
    made = admin.ok("pc", "snapshot-now", agent_id, "--no-wait", "--json").json()
    poll.join(WAIT + 30)
    client.connection.close()
    assert answers, "the long poll did not end"
    # Delivered within the poll: neither B's database looks (an hour apart) nor the poll's end can explain it.
    assert [r.payload["id"] for r in answers[0]] == [made["id"]]
    followed = admin.ok("pc", "requests", agent_id, made["id"][:8], "--json").json()
    assert followed["state"] == "delivered"
    for server in (a, b):  # each process says where the others reach it
        assert f"other server processes forward relay sides to {server.url}" in server.log()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client")
def test_a_session_runs_with_the_pc_on_one_process_and_the_engineer_on_the_other(replicas, make_pc, tmp_path):
    a, b = replicas.a, replicas.b
    admin = make_pc("admin")
    admin.login(a)
    desk = make_desk(a, admin, make_pc, tmp_path)  # the user's PC is paired through A: its side reaches A's relay
    desk.engineer.login(b, ENGINEER, ENGINEER_PASSWORD)  # the engineer's grant, answer and relay go through B
    user = UserTerminal(desk)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "echo scaled-$((6 * 7)); exit 3")
    try:
        user.approve()
        status, out, err = run.finish()
        assert status == 3, err
        assert out.decode().strip() == "scaled-42"
        user.finished()
        session = desk.wait_for_state(user.session_id, "ended")
        assert session["bytes_to_pc"] > 0 and session["bytes_from_pc"] > 0
    finally:
        run.stop()
        user.close()
    # The splice ran in A, where the PC's side came first; its route is gone with it.
    with transaction(session_factory(replicas.engine)) as db:
        assert db.get(RelayRoute, user.session_id) is None
    # B piped the engineer's side to A's internal endpoint, as the uvicorn access log of A shows.
    assert "/v1/relay/replica" in a.log() and "/v1/relay/replica" not in b.log()
    assert "unreachable" not in b.log()


def test_a_bundle_uploaded_through_one_process_downloads_through_the_other(replicas, make_pc, moto_server, tmp_path):  # noqa: F811
    a, b = replicas.a, replicas.b
    admin = make_pc("admin")
    admin.login(a)
    number = admin.ok("ticket", "create", "Scale out", "--json").json()["number"]
    code = admin.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", a.url)
    archive = write_archive(tmp_path / "b.tar.gz", payload=300_000)
    original = archive.read_bytes()
    bundle = upload.deliver(upload.enqueue(archive, number, a.url, directory=pc.agent_dir),
                            AgentStore(pc.agent_dir).signer(), directory=pc.agent_dir)
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=replicas.bucket).get("Contents", [])]
    assert keys == [f"bundles/{number}/{bundle.id}.tar.gz"]
    with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {token_of(admin)}"}, timeout=30) as http:
        response = http.get(f"/v1/bundles/{bundle.id}/archive")
    assert response.status_code == 200 and response.content == original
    assert not (a.data_dir / "blobs").exists() and not (b.data_dir / "blobs").exists()


def test_a_job_runs_once_per_period_across_both_processes(replicas):
    since = utcnow()
    time.sleep(JOB_WINDOW)
    with transaction(session_factory(replicas.engine)) as db:
        runs = list(db.scalars(select(JobRun).where(JobRun.job == "upload-sweep", JobRun.started_at >= since)
                               .order_by(JobRun.started_at)))
    starts = [r.started_at for r in runs]
    assert 2 <= len(runs) <= JOB_WINDOW / SWEEP_PERIOD + 1, starts
    assert all(later - earlier >= timedelta(seconds=SWEEP_PERIOD) for earlier, later in zip(starts, starts[1:])), starts
    assert {r.pid for r in runs} <= {replicas.a.process.pid, replicas.b.process.pid}
    assert replicas.a.process.poll() is None and replicas.b.process.poll() is None
