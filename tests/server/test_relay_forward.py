"""The relay across two server processes (two apps with their own runtimes on one PostgreSQL database, each on
a real uvicorn over loopback): the side that reaches the second process is forwarded to the one holding the
first side and spliced there; ending the session through either process closes both sides with the relay's
close code; a holder that is gone is taken over; forward passes that are forged, expired, meant for another
process, used before or malformed are refused (4401) and join nothing.

Sessions are set up through the in-process app of process A on the shared database and clock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from agent.relay_socket import open_relay
from protocol import signing
from protocol.sessions import RELAY_BAD_TOKEN, RELAY_ENDED, RelaySide, RelayTicket
from server.app import create_app
from server.migrate import upgrade
from server.models import RelayRoute, RemoteSession
from server.relay import forward
from server.relay.hub import relay_hub
from server.runtime import ServerRuntime, build_runtime
from server.settings import ServerSettings
from tests.server.api.test_sessions import approved, setup
from tests.server.conftest import CLIENT_IP, Helpline
from tests.support.net import HOST, free_port

TIMEOUT = 15.0


@pytest.fixture
def backend() -> str:
    """Several server processes share PostgreSQL (SQLite means one process): this file runs on PostgreSQL only."""
    return "postgresql"


@dataclass
class Process:
    """One server process: its runtime, its app, and the base URL it serves (and advertises) on loopback."""

    runtime: ServerRuntime
    app: object
    url: str

    def relay(self, ticket: dict) -> RelayTicket:
        return RelayTicket.model_validate({**ticket, "url": self.url.replace("http", "ws", 1) + "/v1/relay"})


def _serve(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host=HOST, port=port, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, thread


@pytest.fixture
def processes(tmp_path, new_database, clock) -> Iterator[tuple[Process, Process]]:
    """Processes A and B: one database, one signing key, each advertising its own loopback address."""
    database_url = new_database()
    key_file = tmp_path / "shared-signing-key.pem"
    made: list[tuple[Process, uvicorn.Server, threading.Thread]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            url = f"http://{HOST}:{port}"
            settings = ServerSettings(data_dir=tmp_path / name, database_url=database_url, signing_key_file=key_file,
                                      secret_key=secrets.token_urlsafe(32), bus={"advertise_url": url})
            runtime = build_runtime(settings, clock=clock)
            upgrade(runtime.engine)
            app = create_app(runtime)
            server, thread = _serve(app, port)
            made.append((Process(runtime, app, url), server, thread))
        yield made[0][0], made[1][0]
    finally:
        for process, server, thread in made:
            server.should_exit = True
            thread.join(TIMEOUT)
            if process.runtime.bus is not None:
                process.runtime.bus.stop()
            process.runtime.engine.dispose()


@pytest.fixture
def helpline(processes, clock) -> Iterator[Helpline]:
    """Process A's app in-process, for setting sessions up (the database is shared with B)."""
    client = TestClient(create_app(processes[0].runtime), raise_server_exceptions=False, client=(CLIENT_IP, 50000))
    try:
        yield Helpline(processes[0].runtime, client, clock)
    finally:
        client.close()


def until(check, what: str):
    for _ in range(500):
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def route_of(helpline, sid: str) -> RelayRoute | None:
    with helpline.db() as db:
        row = db.get(RelayRoute, sid)
        if row is not None:
            db.expunge(row)
        return row


def session_row(helpline, sid: str) -> RemoteSession:
    with helpline.db() as db:
        row = db.get(RemoteSession, sid)
        db.expunge(row)
        return row


def recv_exactly(stream, size: int) -> bytes:
    got = bytearray()
    for _ in range(10_000):
        if len(got) >= size:
            break
        chunk = stream.recv(1 << 20)
        assert chunk, "the stream ended early"
        got += chunk
    return bytes(got)


def across(helpline, a: Process, b: Process):
    """The PC's side on A (first, so A holds the session), the engineer's on B; (session id, setup, pc, engineer)."""
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    pc = open_relay(a.relay(pc_ticket), ping_interval=None)
    until(lambda: sid in relay_hub(a.app).pairs, "the PC side waits in A's hub")
    engineer = open_relay(b.relay(helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)), ping_interval=None)
    return sid, s, pc, engineer


def test_the_side_reaching_the_other_process_is_spliced_where_the_first_side_is(helpline, processes):
    a, b = processes
    sid, s, pc, engineer = across(helpline, a, b)
    with pc, engineer:
        engineer.send(b"SSH-2.0-OpenSSH_9.2\r\n")
        assert recv_exactly(pc, 21) == b"SSH-2.0-OpenSSH_9.2\r\n"
        pc.send(b"x" * 100_000)
        assert recv_exactly(engineer, 100_000) == b"x" * 100_000
        assert route_of(helpline, sid).replica_url == a.url
        assert set(relay_hub(a.app).pairs[sid].sides) == {RelaySide.PC, RelaySide.ENGINEER}
        assert sid not in relay_hub(b.app).pairs  # B only pipes
        assert session_row(helpline, sid).state == "active"
        engineer.close()
        assert until(lambda: pc.recv() == b"", "the PC side sees the end")
    row = until(lambda: (r := session_row(helpline, sid)).state == "ended" and r, "the session ends")
    assert row.bytes_to_pc == 21 and row.bytes_from_pc == 100_000
    assert row.end_reason == "the engineer left the relay"
    assert until(lambda: route_of(helpline, sid) is None, "the route is forgotten")


def test_ending_the_session_through_the_other_process_closes_both_sides(helpline, processes):
    a, b = processes
    for process in processes:  # the doorbell's bus carries the end to the process that splices
        process.runtime.bus.start()
        assert process.runtime.bus.wait_up(TIMEOUT)
    sid, s, pc, engineer = across(helpline, a, b)
    with pc, engineer:
        pc.send(b"x")
        assert recv_exactly(engineer, 1) == b"x"
        with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {s.engineer}"}, timeout=TIMEOUT) as http:
            assert http.post(f"/v1/sessions/{sid}/end", json={"reason": "done"}).status_code == 200
        assert until(lambda: pc.recv() == b"", "the PC side is closed")
        assert until(lambda: engineer.recv() == b"", "the engineer side is closed")
        assert pc.close_code == engineer.close_code == RELAY_ENDED  # the close code crossed the forward
    assert session_row(helpline, sid).end_reason == "done"


def test_a_holder_that_is_gone_is_taken_over(helpline, processes, clock):
    a, b = processes
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    gone = f"http://{HOST}:{free_port()}"  # nothing listens there
    with helpline.db() as db:
        db.add(RelayRoute(session_id=sid, replica_url=gone, claimed_at=clock(), expires_at=clock() + timedelta(minutes=1)))
    with open_relay(b.relay(pc_ticket), ping_interval=None) as pc:
        until(lambda: sid in relay_hub(b.app).pairs, "B took the session over")
        assert route_of(helpline, sid).replica_url == b.url
        with open_relay(a.relay(helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)), ping_interval=None) as engineer:
            engineer.send(b"hello")
            assert recv_exactly(pc, 5) == b"hello"


def _pass(runtime: ServerRuntime, sid: str, *, key=None, holder: str, at=None, seconds: int = 30) -> str:
    side = forward.ForwardedSide(sid, RelaySide.PC, "agent-id", "192.0.2.1")
    return forward.forward_pass(key or runtime.signing_key, side, holder=holder, now=at or runtime.clock(), seconds=seconds)


def _refused(process: Process, value: str) -> int | None:
    """Open A's internal endpoint with ``value`` as the forward pass; the close code it answers with."""
    url = process.url.replace("http", "ws", 1) + forward.REPLICA_PATH
    with connect(url, additional_headers={forward.FORWARD_HEADER: value}, open_timeout=TIMEOUT) as ws:
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


@pytest.mark.parametrize("case", ["forged", "expired", "other-holder", "too-long", "malformed", "missing", "grant-shaped"])
def test_forward_passes_not_made_by_a_replica_for_this_process_now_are_refused(helpline, processes, clock, case):
    a, b = processes
    sid = "00000000-0000-4000-8000-000000000001"
    value = {
        "forged": lambda: _pass(a.runtime, sid, key=signing.generate_key(), holder=a.url),
        "expired": lambda: _pass(a.runtime, sid, holder=a.url, at=clock() - timedelta(seconds=60)),
        "other-holder": lambda: _pass(a.runtime, sid, holder=b.url),
        "too-long": lambda: _pass(a.runtime, sid, holder=a.url, seconds=3600),
        "malformed": lambda: "not-a-pass",
        "missing": lambda: "",
        # A payload the server key signed for another purpose is no forward pass.
        "grant-shaped": lambda: _other_purpose(a.runtime, sid, a.url),
    }[case]()
    assert _refused(a, value) == RELAY_BAD_TOKEN
    assert sid not in relay_hub(a.app).pairs


def _other_purpose(runtime: ServerRuntime, sid: str, holder: str) -> str:
    import base64

    payload = {"purpose": "grant", "session_id": sid, "side": "pc", "principal": "x", "ip": None, "holder": holder,
               "expires_at": (runtime.clock() + timedelta(seconds=10)).isoformat(), "nonce": "n"}
    encoded = base64.urlsafe_b64encode(signing.canonical_json(payload)).decode("ascii")
    return f"{encoded}.{signing.sign(runtime.signing_key, payload)}"


def test_a_forward_pass_works_once(helpline, processes):
    a, _ = processes
    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    value = _pass(a.runtime, sid, holder=a.url)
    url = a.url.replace("http", "ws", 1) + forward.REPLICA_PATH
    with connect(url, additional_headers={forward.FORWARD_HEADER: value}, open_timeout=TIMEOUT):
        until(lambda: sid in relay_hub(a.app).pairs, "the forwarded side waits in A's hub")  # a good pass is taken
    until(lambda: sid not in relay_hub(a.app).pairs, "the side left")
    assert _refused(a, value) == RELAY_BAD_TOKEN


def test_a_route_names_its_live_holder_lapses_and_keeps_a_running_splice_s_longer_hold(helpline, clock):
    sid, a, b = "00000000-0000-4000-8000-000000000002", "http://10.0.0.1:8700", "http://10.0.0.2:8700"
    with helpline.db() as db:
        assert forward.hold_or_find(db, sid, a, now=clock()) is None  # nobody held it: A does now
    with helpline.db() as db:
        assert forward.hold_or_find(db, sid, b, now=clock()) == a  # B is sent to A
        assert forward.hold_or_find(db, sid, a, now=clock(), until=clock() + timedelta(hours=1)) is None
    with helpline.db() as db:  # A's splice runs for an hour: a side joining A again does not shorten it
        assert forward.hold_or_find(db, sid, a, now=clock()) is None
    assert route_of(helpline, sid).expires_at == clock() + timedelta(hours=1)
    with helpline.db() as db:  # A cannot be reached: B takes the session over
        assert forward.hold_or_find(db, sid, b, now=clock(), unless_held_by=a) is None
    assert route_of(helpline, sid).replica_url == b
    clock.advance(hours=2)
    with helpline.db() as db:  # B's route has lapsed (it died, say): A holds it again
        assert forward.hold_or_find(db, sid, a, now=clock()) is None
        forward.release(db, sid, b)  # only the holder's own release counts
    assert route_of(helpline, sid).replica_url == a
    with helpline.db() as db:
        forward.release(db, sid, a)
    assert route_of(helpline, sid) is None


def test_two_processes_recording_the_first_route_at_once_agree_on_one_holder(helpline, clock):
    """The second insert waits for the first transaction and then fails: the route code reads the winner then."""
    from sqlalchemy.exc import IntegrityError

    sid, a, b = "00000000-0000-4000-8000-000000000003", "http://10.0.0.1:8700", "http://10.0.0.2:8700"
    first = helpline.runtime.sessions()
    assert forward.hold_or_find(first, sid, a, now=clock()) is None
    first.flush()  # A's row is written, not yet committed
    outcome: list = []

    def second() -> None:
        with helpline.runtime.sessions() as db:
            try:
                forward.hold_or_find(db, sid, b, now=clock())
                db.commit()
                outcome.append("committed")
            except IntegrityError:
                outcome.append("lost")

    thread = threading.Thread(target=second)
    thread.start()
    until(lambda: _waiting_on_a_lock(helpline), "B waits on A's uncommitted row")
    first.commit()
    first.close()
    thread.join(TIMEOUT)
    assert outcome == ["lost"]
    with helpline.db() as db:
        assert forward.hold_or_find(db, sid, b, now=clock()) == a


def _waiting_on_a_lock(helpline) -> bool:
    from sqlalchemy import text

    with helpline.runtime.engine.connect() as connection:
        return bool(connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")))
