"""The PC's side of a session with the server played by a small fake and the relay by a socket pair: only a
grant the pinned key signed for this PC, this host key and this ticket reaches the user; a yes serves it once."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import paramiko
import pytest

from agent.session import offer as offers
from agent.session.offer import Decision, SessionOffer
from protocol import signing
from protocol.errors import AuthError, ExitStatus, ForbiddenError, InvalidInputError
from protocol.grants import Scope, SessionGrant, openssh_fingerprint, sign_grant, verification_string
from protocol.sessions import TIME_UP_REASON, RelayTicket, SessionEvent, SessionPublic, SessionState
from tests.agent.session.conftest import AGENT_ID, make_engineer_key, read_until

pytestmark = pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs")

TICKET = "T-1042"


class FakeServer:
    """The session routes as the PC uses them: it records what the PC sent and hands out queued events."""

    def __init__(self):
        self.events: queue.Queue[SessionEvent] = queue.Queue()
        self.sent: list[tuple[str, object]] = []
        self.seq = 0
        now = datetime.now(timezone.utc)
        self.session = SessionPublic(
            id="sess-1", ticket=TICKET, agent_id=AGENT_ID, hostname="pc", username="user", state=SessionState.WAITING,
            host_key_fingerprint="SHA256:" + "A" * 43, created_at=now, last_seen_at=now,
            offer_expires_at=now + timedelta(minutes=30),
        )

    def push(self, kind: str, **fields) -> None:
        self.seq += 1
        self.events.put(SessionEvent(seq=self.seq, kind=kind, at=datetime.now(timezone.utc), **fields))

    def calls(self, name: str) -> list:
        return [body for called, body in self.sent if called == name]

    def offer_session(self, body):
        self.sent.append(("offer", body))
        return self.session

    def session_events(self, session_id, after=0, wait=0):
        try:
            return [self.events.get(timeout=min(wait, 0.2))]
        except queue.Empty:
            return []

    def _ticket(self) -> RelayTicket:
        return RelayTicket(url="ws://127.0.0.1:1/v1/relay", token=uuid.uuid4().hex,
                           expires_at=datetime.now(timezone.utc) + timedelta(minutes=2))

    def answer_session(self, session_id, body):
        self.sent.append(("answer", body))
        return self._ticket() if body.approved else None

    def session_relay_ticket(self, session_id):
        self.sent.append(("relay", None))
        return self._ticket()

    def send_session_chat(self, session_id, body):
        self.sent.append(("chat", body))

    def change_session_scopes(self, session_id, body):
        self.sent.append(("scopes", body))
        return self.session

    def end_session(self, session_id, body):
        self.sent.append(("end", body))
        return self.session

    def upload_recording(self, session_id, data):
        self.sent.append(("recording", data))
        return self.session


class FakeStream:
    """A relay side: the PC gets one end of a socket pair, the test's engineer the other."""

    def __init__(self, engineer_ends: queue.Queue):
        self.pc, self.engineer = socket.socketpair()
        engineer_ends.put(self.engineer)
        self.sent = 7
        self.received = 5
        self.close_code = None

    def bridge_to_socket(self):
        return self.pc

    def close(self):
        for end in (self.pc, self.engineer):
            try:
                end.close()
            except OSError:
                pass


@pytest.fixture
def server_key():
    return signing.generate_key()


@pytest.fixture
def setup(tmp_path, server_key):
    server = FakeServer()
    engineer_ends: queue.Queue = queue.Queue()
    offer = SessionOffer(server, ticket=TICKET, agent_id=AGENT_ID, server_key=signing.public_key_b64(server_key),
                         state_dir=tmp_path, open_relay=lambda ticket: FakeStream(engineer_ends), shell=["/bin/sh"],
                         event_wait=1)
    offer.offer()
    yield server, offer, engineer_ends
    offer.shutdown()


def grant_for(offer: SessionOffer, engineer, **changes) -> SessionGrant:
    now = datetime.now(timezone.utc)
    fields = dict(
        grant_id=str(uuid.uuid4()), nonce=uuid.uuid4().hex * 2, agent_id=AGENT_ID,
        host_key_fingerprint=offer.host_key_fingerprint, ticket=TICKET, engineer_username="ana",
        engineer_name="Ana Silva", organisation="Example Support", engineer_key=engineer.line,
        engineer_key_fingerprint=openssh_fingerprint(engineer.line), scopes={"view", "control"},
        not_before=now - timedelta(seconds=5), expires_at=now + timedelta(minutes=10), max_duration_seconds=600,
    )
    fields.update(changes)
    return SessionGrant(**fields)


def request(server: FakeServer, key, grant: SessionGrant, title: str = "Outlook crashes") -> None:
    server.push("request", grant=sign_grant(key, grant), engineer_name="Someone Else", engineer_username="eve",
                ticket_title=title)


def engineer_login(engineer_ends: queue.Queue, engineer) -> tuple[paramiko.Transport, paramiko.Channel]:
    client = paramiko.Transport(engineer_ends.get(timeout=5))
    client.start_client(timeout=5)
    client.auth_publickey("ana", engineer.pkey)
    channel = client.open_session(timeout=5)
    channel.get_pty("xterm", 100, 30)
    channel.invoke_shell()
    return client, channel


def test_a_verified_request_tells_the_user_only_what_the_grant_signed(setup, server_key):
    server, offer, _ = setup
    engineer = make_engineer_key()
    grant = grant_for(offer, engineer, scopes={"files"}, max_duration_seconds=1800)
    request(server, server_key, grant, title="\x1b]2;pwned\x07 Printer")
    asked = offer.next_request(timeout=5)
    # The event's own names (not signed) are not what the user is told.
    assert (asked.engineer_name, asked.engineer_username, asked.organisation) == ("Ana Silva", "ana", "Example Support")
    assert asked.ticket == TICKET and asked.scopes == {Scope.VIEW, Scope.FILES}
    assert asked.max_duration == timedelta(minutes=30)
    assert asked.ticket_title == "\x1b]2;pwned\x07 Printer"  # passed on as free text; the CLI makes it printable
    assert server.calls("answer") == []


@pytest.mark.parametrize("forgery", ["another-key", "another-pc", "another-host-key", "another-ticket", "expired"])
def test_a_request_that_does_not_verify_is_refused_without_asking(setup, server_key, forgery):
    server, offer, _ = setup
    engineer = make_engineer_key()
    now = datetime.now(timezone.utc)
    key, changes = server_key, {}
    if forgery == "another-key":
        key = signing.generate_key()
    elif forgery == "another-pc":
        changes = {"agent_id": "agent-other"}
    elif forgery == "another-host-key":
        changes = {"host_key_fingerprint": "SHA256:" + "B" * 43}
    elif forgery == "another-ticket":
        changes = {"ticket": "T-9999"}
    else:
        changes = {"not_before": now - timedelta(hours=2), "expires_at": now - timedelta(hours=1)}
    grant = grant_for(offer, engineer, **changes)
    request(server, key, grant)
    rejected = []
    with pytest.raises((AuthError, ForbiddenError)):
        offer.next_request(on_rejected=rejected.append, timeout=5)
    assert len(rejected) == 1
    [answer] = server.calls("answer")
    assert answer.approved is False and answer.grant_id == grant.grant_id
    assert answer.reason.startswith("the grant was refused by the PC")


def test_a_grant_signed_by_the_key_the_connection_followed_a_handover_to_is_believed(setup, server_key):
    """The server rotated its key while the offer waited: the signed connection followed the hand-over (and
    says so by its pinned key), so the grant is checked against the new key, and no longer the old one."""
    server, offer, _ = setup
    new_key = signing.generate_key()
    server.pinned_server_key = signing.public_key_b64(new_key)
    request(server, new_key, grant_for(offer, make_engineer_key()))
    assert offer.next_request(timeout=5).ticket == TICKET
    request(server, server_key, grant_for(offer, make_engineer_key()))  # the retired key signs nothing any more
    with pytest.raises(AuthError):
        offer.next_request(timeout=5)


def test_a_refusal_is_sent_with_its_reason_and_opens_nothing(setup, server_key):
    server, offer, engineer_ends = setup
    grant = grant_for(offer, make_engineer_key())
    request(server, server_key, grant)
    asked = offer.next_request(timeout=5)
    assert offer.answer(asked, Decision(False, offers.TIMED_OUT)) is None
    [answer] = server.calls("answer")
    assert (answer.approved, answer.reason) == (False, "timed out")
    assert engineer_ends.empty()
    assert not offer.used.was_used(grant)


def test_a_yes_serves_the_grant_over_the_relay_once_and_reports_the_end(setup, server_key, tmp_path):
    server, offer, engineer_ends = setup
    engineer = make_engineer_key()
    grant = grant_for(offer, engineer)
    request(server, server_key, grant)
    asked = offer.next_request(timeout=5)
    shown, joined, chats = [], [], []
    live = offer.answer(asked, Decision(True), on_output=shown.append, on_authenticated=lambda v, u: joined.append((v, u)),
                        on_event=lambda e: chats.append(e.text) if e.kind == "chat" else None)
    assert server.calls("answer")[0].approved is True
    assert offer.used.was_used(grant)
    client, channel = engineer_login(engineer_ends, engineer)
    channel.sendall(b"echo hello-$((40+2))\n")
    read_until(channel, "hello-42")
    assert joined == [(verification_string(grant, engineer.line), "ana")]
    assert b"hello-42" in b"".join(shown)  # the user's mirror sees the shell's output
    server.push("chat", text="I am looking at the printer queue", engineer_name="Ana Silva")
    server.push("ended", reason="the engineer ended the session")
    assert live.wait(5)
    assert live.end_reason == "the engineer ended the session"
    assert chats == ["I am looking at the printer queue"]
    summary = live.finish()
    [end] = server.calls("end")
    assert end.reason == "the engineer ended the session"
    assert (end.bytes_to_pc, end.bytes_from_pc) == (5, 7) == (summary.bytes_to_pc, summary.bytes_from_pc)
    [cast] = server.calls("recording")
    assert b"hello-42" in cast and cast.startswith(b'{"version": 2')
    assert summary.recording_attached and not list((tmp_path / "sessions").iterdir())
    client.close()
    # The same grant again (a replay) is refused without asking.
    server2 = FakeServer()  # the first offer's poller may still be asking the first one
    offer2 = SessionOffer(server2, ticket=TICKET, agent_id=AGENT_ID, server_key=signing.public_key_b64(server_key),
                          state_dir=tmp_path, open_relay=lambda t: FakeStream(engineer_ends), event_wait=1)
    offer2.host_key = offer.host_key
    offer2.offer()
    try:
        request(server2, server_key, grant)
        with pytest.raises(AuthError, match="used already"):
            offer2.next_request(timeout=5)
    finally:
        offer2.shutdown()


def test_taking_control_back_tells_the_server_what_remains(setup, server_key):
    server, offer, engineer_ends = setup
    engineer = make_engineer_key()
    request(server, server_key, grant_for(offer, engineer, scopes={"control", "files"}))
    live = offer.answer(offer.next_request(timeout=5), Decision(True))
    try:
        engineer_login(engineer_ends, engineer)
        assert live.take_back("control") == {Scope.VIEW, Scope.FILES}
        [change] = server.calls("scopes")
        assert sorted(change.scopes) == [Scope.FILES, Scope.VIEW]
        assert not live.host.allows(Scope.CONTROL)
    finally:
        live.end("the test is over")
        live.finish()


def test_a_session_nobody_joins_ends_without_a_recording(setup, server_key, tmp_path):
    server, offer, engineer_ends = setup
    request(server, server_key, grant_for(offer, make_engineer_key()))
    live = offer.answer(offer.next_request(timeout=5), Decision(True))
    live.end("the user ended the session")
    summary = live.finish()
    assert summary.reason == "the user ended the session"
    assert not summary.recording_attached and server.calls("recording") == []
    assert not list((tmp_path / "sessions").iterdir())


def test_the_relay_side_reconnects_while_the_engineer_has_not_come(setup, server_key):
    server, offer, engineer_ends = setup
    engineer = make_engineer_key()
    request(server, server_key, grant_for(offer, engineer))
    live = offer.answer(offer.next_request(timeout=5), Decision(True))
    try:
        engineer_ends.get(timeout=5).close()  # the relay gave up waiting for the engineer on the first connection
        client, channel = engineer_login(engineer_ends, engineer)
        channel.sendall(b"echo again-$((1+1))\n")
        read_until(channel, "again-2")
        assert len(server.calls("relay")) == 1  # one fresh PC-side ticket for the second connection
    finally:
        live.end("the test is over")
        live.finish()


def test_sessions_are_refused_on_windows(monkeypatch):
    monkeypatch.setattr(offers.os, "name", "nt")
    with pytest.raises(InvalidInputError, match="not available on Windows") as refused:
        offers.check_platform()
    assert refused.value.status == ExitStatus.INVALID


def test_the_users_end_stops_input_at_once_and_tells_the_server_why_before_the_relay_drops(setup, server_key):
    server, offer, engineer_ends = setup
    engineer = make_engineer_key()
    request(server, server_key, grant_for(offer, engineer, scopes={"control", "files"}))
    live = offer.answer(offer.next_request(timeout=5), Decision(True))
    client, channel = engineer_login(engineer_ends, engineer)
    seen_at_report = []
    server.end_session = lambda session_id, body: seen_at_report.append((body.reason, live.host.ended, live.host.scopes))
    live.end("the user ended the session")
    assert seen_at_report[0] == ("the user ended the session", False, {Scope.VIEW})
    assert live.host.ended and live.end_reason == "the user ended the session"
    assert live.finish().reason == "the user ended the session"
    client.close()


def test_the_time_limit_tells_the_server_why_before_the_relay_drops(setup, server_key):
    server, offer, engineer_ends = setup
    engineer = make_engineer_key()
    request(server, server_key, grant_for(offer, engineer, max_duration_seconds=2))
    live = offer.answer(offer.next_request(timeout=5), Decision(True))
    client, channel = engineer_login(engineer_ends, engineer)
    seen_at_report = []
    reported = threading.Event()

    def end_session(session_id, body):
        seen_at_report.append((body.reason, live.host.ended, client.is_active()))
        reported.set()

    server.end_session = end_session
    assert reported.wait(10)
    # Told while the engineer's connection was still up: the server's record says why, not that a side left.
    assert seen_at_report[0] == (TIME_UP_REASON, False, True)
    assert live.wait(10) and live.end_reason == TIME_UP_REASON
    assert live.finish().reason == TIME_UP_REASON
    client.close()
