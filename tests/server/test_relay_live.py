"""The relay on a real uvicorn over loopback, with two real WebSocket clients (agent/relay_socket.py):
frames spliced both ways and counted in the session, a second claimant refused (4409) and audited,
bad, used and expired passes refused (4401), one side leaving closes the other, an ended session
closes both.

Sessions are set up through the in-process app on the same database and clock; only the relay
(and the calls that must ring its process) go to the live server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from agent.relay_socket import RelayClosed, RelayStream, open_relay
from protocol.sessions import RELAY_BAD_TOKEN, RELAY_SIDE_TAKEN, RELAY_TIME_UP, TIME_UP_REASON, RelayTicket
from server.app import create_app
from server.models import RemoteSession
from server.relay.hub import relay_hub
from tests.server.api.test_sessions import approved, setup
from tests.support.net import HOST, free_port

TIMEOUT = 15.0


@pytest.fixture
def live_app(runtime):
    return create_app(runtime)


@pytest.fixture
def live(live_app) -> Iterator[str]:
    """The app of ``runtime`` on uvicorn on a free loopback port (no background jobs); yields its base URL."""
    config = uvicorn.Config(live_app, host=HOST, port=free_port(), lifespan="off", log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://{HOST}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


def at(live: str, ticket: dict) -> RelayTicket:
    """The pass as the live server would have given it (the in-process app names its own address)."""
    return RelayTicket.model_validate({**ticket, "url": live.replace("http", "ws", 1) + "/v1/relay"})


def session_row(helpline, sid: str) -> RemoteSession:
    with helpline.db() as db:
        row = db.get(RemoteSession, sid)
        db.expunge(row)
        return row


def until(check, what: str):
    """Wait (bounded) until ``check()`` returns something true; return it."""
    for _ in range(300):
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def recv_exactly(stream: RelayStream, size: int) -> bytes:
    got = bytearray()
    for _ in range(10_000):
        if len(got) >= size:
            break
        chunk = stream.recv(1 << 20)
        assert chunk, "the stream ended early"
        got += chunk
    return bytes(got)


def both_sides(helpline, live) -> tuple[str, object, RelayStream, RelayStream]:
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    eng_ticket = helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)
    pc = open_relay(at(live, pc_ticket), ping_interval=None)
    engineer = open_relay(at(live, eng_ticket), ping_interval=None)
    return sid, s, pc, engineer


def test_bytes_pass_both_ways_and_are_counted_in_the_session(helpline, live):
    sid, s, pc, engineer = both_sides(helpline, live)
    with pc, engineer:
        engineer.send(b"SSH-2.0-OpenSSH_9.2\r\n")
        assert recv_exactly(pc, 21) == b"SSH-2.0-OpenSSH_9.2\r\n"
        bulk = os.urandom(3 << 20)
        pc.send(bulk[: 1 << 20])
        pc.send(bulk[1 << 20:])
        assert hashlib.sha256(recv_exactly(engineer, len(bulk))).digest() == hashlib.sha256(bulk).digest()
        assert session_row(helpline, sid).state == "active"
        engineer.close()
        assert until(lambda: pc.recv() == b"", "the PC side sees the end")
    row = until(lambda: (r := session_row(helpline, sid)).state == "ended" and r, "the session ends")
    assert row.bytes_to_pc == 21 and row.bytes_from_pc == len(bulk)
    assert row.end_reason == "the engineer left the relay"
    [started] = helpline.audit("session.started")
    assert started.details["session_id"] == sid
    [ended] = helpline.audit("session.ended")
    assert ended.details["bytes_from_pc"] == len(bulk) and ended.details["reason"] == "the engineer left the relay"


def test_a_side_that_drops_without_closing_ends_the_other(helpline, live):
    sid, s, pc, engineer = both_sides(helpline, live)
    with pc:
        engineer.send(b"hello")
        assert recv_exactly(pc, 5) == b"hello"
        # The engineer's network goes away: the TCP connection is torn down with no close frame.
        engineer._loop.loop.call_soon_threadsafe(engineer._ws.transport.abort)
        assert until(lambda: pc.recv() == b"", "the PC side is closed")
    assert until(lambda: session_row(helpline, sid).state == "ended", "the session ends")


def test_a_second_claimant_of_a_side_is_refused_and_audited(helpline, live, live_app):
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    first = open_relay(at(live, pc_ticket), ping_interval=None)
    again = helpline.ok("POST", f"agent/sessions/{sid}/relay", s.pc)
    until(lambda: sid in relay_hub(live_app).pairs, "the first PC side waits in the hub")
    with first, open_relay(at(live, again), ping_interval=None) as second:
        with pytest.raises(RelayClosed) as refused:
            second.recv()
        assert refused.value.code == RELAY_SIDE_TAKEN
    [audited] = helpline.audit("session.relay_refused")
    assert audited.details["reason"] == "this side is connected already" and audited.details["side"] == "pc"


@pytest.mark.parametrize("case", ["unknown", "used", "expired", "missing"])
def test_bad_used_or_expired_passes_are_refused(helpline, live, clock, case):
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    ticket = at(live, pc_ticket)
    if case == "unknown":
        ticket = ticket.model_copy(update={"token": "hlr_" + "x" * 43})
    elif case == "used":
        with open_relay(ticket, ping_interval=None):
            pass
    elif case == "expired":
        clock.advance(seconds=121)
    elif case == "missing":
        ticket = ticket.model_copy(update={"token": ""})
    with open_relay(ticket, ping_interval=None) as stream, pytest.raises(RelayClosed) as refused:
        stream.recv()
    assert refused.value.code == RELAY_BAD_TOKEN
    if case in ("used", "expired"):
        assert helpline.audit("session.relay_refused")[-1].details["reason"] == f"{case} token"


def test_an_engineer_ending_the_session_closes_both_sides(helpline, live):
    sid, s, pc, engineer = both_sides(helpline, live)
    with pc, engineer:
        pc.send(b"x")
        assert recv_exactly(engineer, 1) == b"x"
        with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {s.engineer}"}, timeout=TIMEOUT) as http:
            assert http.post(f"/v1/sessions/{sid}/end", json={"reason": "done"}).status_code == 200
        assert until(lambda: pc.recv() == b"", "the PC side is closed")
        assert until(lambda: engineer.recv() == b"", "the engineer side is closed")
    assert session_row(helpline, sid).end_reason == "done"


def test_the_relay_closes_both_sides_when_the_granted_time_is_over(helpline, live):
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    with helpline.db() as db:  # a grant of one second (the API's least is a minute)
        db.get(RemoteSession, sid).max_duration_seconds = 1
    eng_ticket = helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)
    with open_relay(at(live, pc_ticket), ping_interval=None) as pc, \
            open_relay(at(live, eng_ticket), ping_interval=None) as engineer:
        assert until(lambda: pc.recv() == b"", "the PC side is closed")
        assert until(lambda: engineer.recv() == b"", "the engineer side is closed")
        assert pc.close_code == engineer.close_code == RELAY_TIME_UP
    row = until(lambda: (r := session_row(helpline, sid)).state == "ended" and r, "the session ends")
    assert row.end_reason == TIME_UP_REASON


def test_full_traffic_both_ways_at_once_does_not_stall(helpline, live):
    """The PC side echoes all it gets while the engineer sends and reads at once: each direction depends on
    the other, so a client that stops reading while it waits to write would stall here."""
    sid, s, pc, engineer = both_sides(helpline, live)
    size = 128 << 20
    block = os.urandom(1 << 20)
    sock = pc.bridge_to_socket()  # the PC side as paramiko uses it
    sock.settimeout(TIMEOUT)
    got = {"pc": 0, "engineer": 0}

    def pc_echoes() -> None:
        while got["pc"] < size and (data := sock.recv(1 << 20)):
            got["pc"] += len(data)
            sock.sendall(data)

    def engineer_reads() -> None:
        while got["engineer"] < size and (data := engineer.recv(1 << 20)):
            got["engineer"] += len(data)

    def engineer_writes() -> None:
        for _ in range(size // len(block)):
            engineer.send(block)

    threads = [threading.Thread(target=t, daemon=True) for t in (pc_echoes, engineer_reads, engineer_writes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), f"stalled after {got}"
    assert got == {"pc": size, "engineer": size}
    engineer.close()
    sock.close()
    row = until(lambda: (r := session_row(helpline, sid)).state == "ended" and r, "the session ends")
    assert row.bytes_to_pc == size and row.bytes_from_pc == size


def test_what_the_first_side_sends_waits_for_the_second(helpline, live, live_app):
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    eng_ticket = helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)
    with open_relay(at(live, eng_ticket), ping_interval=None) as engineer:
        engineer.send(b"SSH-2.0-OpenSSH_9.2\r\n")  # an ssh client speaks first
        until(lambda: sid in relay_hub(live_app).pairs, "the engineer side waits in the hub")
        with open_relay(at(live, pc_ticket), ping_interval=None) as pc:
            assert recv_exactly(pc, 21) == b"SSH-2.0-OpenSSH_9.2\r\n"
            pc.send(b"SSH-2.0-Helpline\r\n")
            assert recv_exactly(engineer, 18) == b"SSH-2.0-Helpline\r\n"


def test_a_side_that_leaves_before_the_other_comes_frees_its_place(helpline, live, live_app):
    s = setup(helpline)
    sid, _, pc_ticket = approved(helpline, s)
    with open_relay(at(live, pc_ticket), ping_interval=None):
        until(lambda: sid in relay_hub(live_app).pairs, "the PC side waits in the hub")
    until(lambda: sid not in relay_hub(live_app).pairs, "the PC side is gone from the hub")
    again = helpline.ok("POST", f"agent/sessions/{sid}/relay", s.pc)  # the PC reconnects with a fresh pass
    eng_ticket = helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)
    with open_relay(at(live, again), ping_interval=None) as pc, \
            open_relay(at(live, eng_ticket), ping_interval=None) as engineer:
        pc.send(b"hi")
        assert recv_exactly(engineer, 2) == b"hi"
    assert helpline.audit("session.relay_refused") == []


def test_an_ssh_session_runs_end_to_end_through_the_relay(helpline, live):
    """paramiko on both ends, each over its relay side's bridged socket, as the PC and `helpline relay` use them."""
    import paramiko

    from agent.session.host import new_host_key
    from tests.agent.session.conftest import make_engineer_key

    host_key, engineer_key = new_host_key(), make_engineer_key()

    class Host(paramiko.ServerInterface):
        def get_allowed_auths(self, username):
            return "publickey"

        def check_auth_publickey(self, username, key):
            ok = key.get_base64() == engineer_key.pkey.get_base64()
            return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

        def check_channel_request(self, kind, chanid):
            return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    sid, s, pc, engineer = both_sides(helpline, live)
    server = paramiko.Transport(pc.bridge_to_socket())
    server.add_server_key(host_key)
    server.start_server(event=threading.Event(), server=Host())  # negotiates in its own thread
    client = paramiko.Transport(engineer.bridge_to_socket())
    try:
        client.start_client(timeout=TIMEOUT)
        assert client.get_remote_server_key().get_base64() == host_key.get_base64()  # what the grant pins
        client.auth_publickey("eve", engineer_key.pkey)
        channel = client.open_session(timeout=TIMEOUT)
        served = server.accept(TIMEOUT)
        channel.sendall(b"hello through the relay")
        served.settimeout(TIMEOUT)
        assert served.recv(100) == b"hello through the relay"
        served.sendall(b"and back")
        channel.settimeout(TIMEOUT)
        assert channel.recv(100) == b"and back"
    finally:
        client.close()
        server.close()
    row = until(lambda: (r := session_row(helpline, sid)).state == "ended" and r, "the session ends")
    assert row.bytes_to_pc > 0 and row.bytes_from_pc > 0
