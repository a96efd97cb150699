"""A user's remote session through the agent service's socket: the service makes the session's server calls with the
PC's identity, and answers for a session id only the uid that offered it (root: any); an unknown id, or another
user's, is refused alike. The server is a recording stand-in here: these are the service's own checks, made before
any server is asked."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.other_user import as_user

from agent.service import sessions as service_sessions
from agent.service.localapi import LocalAPI, LocalServer, TicketOwners
from agent.service.socketpc import ServicePC, ServiceSessionCalls
from agent.service.wire import Peer
from agent.session.offer import SessionOffer
from agent.store import AgentState, AgentStore
from protocol.errors import InvalidInputError, NotFoundError, TooLargeError, UnavailableError
from protocol.sessions import ChatEntry, RelayTicket, SessionEvent, SessionPublic

ROOT, USER, OTHER = Peer(0, 0), Peer(65534, 65534), Peer(65533, 65533)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _host_key() -> str:
    from agent.session.host import new_host_key

    key = new_host_key()
    return f"{key.get_name()} {key.get_base64()}"


HOST_KEY = _host_key()


@pytest.fixture(autouse=True)
def _own_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HELPLINE_AGENT_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


class FakeServer:
    """Stands in for the signed client the service opens per call; records every call it gets."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.pinned_server_key = "rotated-key"
        self.hold = threading.Event()
        self.hold.set()
        self._n = 0

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def _session(self, sid: str, ticket: str = "T-1001", username: str = "") -> SessionPublic:
        return SessionPublic(id=sid, ticket=ticket, agent_id="svc", hostname="pc", username=username, state="waiting",
                             host_key_fingerprint="SHA256:x", created_at=NOW, last_seen_at=NOW,
                             offer_expires_at=NOW + timedelta(minutes=5))

    def offer_session(self, body):
        self._n += 1
        self.calls.append(("offer", body))
        return self._session(f"00000000-0000-0000-0000-00000000000{self._n}", body.ticket, body.username)

    def session_events(self, session_id, after=0, wait=0):
        self.calls.append(("events", session_id, after, wait))
        self.hold.wait(10)
        return [SessionEvent(seq=after + 1, kind="chat", at=NOW, text="hello")]

    def answer_session(self, session_id, body):
        self.calls.append(("answer", session_id, body))
        return RelayTicket(url="ws://127.0.0.1:9/relay", token="pass", expires_at=NOW) if body.approved else None

    def session_relay_ticket(self, session_id):
        self.calls.append(("relay", session_id))
        return RelayTicket(url="ws://127.0.0.1:9/relay", token="pass-2", expires_at=NOW)

    def send_session_chat(self, session_id, body):
        self.calls.append(("chat", session_id, body.text))
        return ChatEntry(seq=1, at=NOW, sender="user", name="u", text=body.text)

    def change_session_scopes(self, session_id, body):
        self.calls.append(("scopes", session_id, body.scopes))
        return self._session(session_id)

    def end_session(self, session_id, body):
        self.calls.append(("end", session_id, body))
        return self._session(session_id)

    def upload_recording(self, session_id, data):
        self.calls.append(("recording", session_id, data))
        return self._session(session_id)


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="hl-sess-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def api(short_dir):
    store = AgentStore(short_dir / "state")
    store.save(AgentState(server_url="http://127.0.0.1:9", agent_id="svc", credential="hla_secret",
                          server_public_key="pinned-key", enrolled=True, tickets=["T-1001", "T-1002"]))
    owners = TicketOwners(store.directory)
    owners.record("T-1001", USER.uid)
    owners.record("T-1001", os.geteuid())
    owners.record("T-1002", OTHER.uid)
    api = LocalAPI(store)
    api.sessions._client = FakeServer()
    return api


def offered(api, peer=USER) -> str:
    return api.call(peer, "session_offer", {"ticket": "T-1001", "host_key": HOST_KEY, "platform": "Linux"})["id"]


def test_only_the_uid_that_offered_a_session_is_answered_for_it(api):
    sid = offered(api)
    server = api.sessions._client
    for op, args in [("session_events", {"after": 0, "wait": 0}), ("session_relay", {}),
                     ("session_answer", {"answer": {"grant_id": "g", "approved": True}}), ("session_chat", {"text": "hi"}),
                     ("session_scopes", {"scopes": ["view"]}), ("session_end", {"end": {"reason": "x"}}),
                     ("session_recording", {})]:
        with pytest.raises(NotFoundError, match="no such session for you"):
            api.call(OTHER, op, {"session_id": sid, **args})
    assert [c[0] for c in server.calls] == ["offer"]  # the other user reached nothing on the server


def test_the_offering_user_and_root_act_on_it(api):
    sid = offered(api)
    server = api.sessions._client
    got = api.call(USER, "session_events", {"session_id": sid, "after": 3, "wait": 600})
    assert got["events"][0]["seq"] == 4 and got["server_key"] == "rotated-key"
    assert server.calls[-1] == ("events", sid, 3, 25)  # the wait is bounded by the server's long-poll time
    assert api.call(USER, "session_relay", {"session_id": sid})["token"] == "pass-2"
    assert api.call(ROOT, "session_chat", {"session_id": sid, "text": "from root"})["text"] == "from root"
    assert api.call(ROOT, "session_end", {"session_id": sid, "end": {"reason": "root ended it"}})["id"] == sid
    assert [c[0] for c in server.calls] == ["offer", "events", "relay", "chat", "end"]


@pytest.mark.parametrize("sid", ["00000000-0000-0000-0000-000000000099", "", 7, "x" * 101], ids=["unknown", "empty", "int", "long"])
def test_a_session_the_service_did_not_offer_is_refused(api, sid):
    offered(api)
    with pytest.raises((NotFoundError, InvalidInputError)):
        api.call(ROOT, "session_relay", {"session_id": sid})
    assert [c[0] for c in api.sessions._client.calls] == ["offer"]


def test_an_offer_is_made_only_on_the_callers_own_ticket_and_under_their_account(api):
    with pytest.raises(NotFoundError, match="not one of your tickets"):
        api.call(USER, "session_offer", {"ticket": "T-1002", "host_key": HOST_KEY})
    api.call(USER, "session_offer", {"ticket": "T-1001", "host_key": HOST_KEY, "username": "root"})
    [(_, body)] = api.sessions._client.calls
    assert body.username == "nobody"  # the kernel's uid names the account, whatever the caller says


def test_a_users_long_polls_are_bounded(api):
    sid = offered(api)
    server = api.sessions._client
    server.hold.clear()
    threads = [threading.Thread(target=api.call, args=(USER, "session_events", {"session_id": sid, "wait": 1}))
               for _ in range(service_sessions.MAX_POLLS_PER_UID)]
    for thread in threads:
        thread.start()
    deadline = threading.Event()
    for _ in range(200):  # until all of them are waiting on the server (bounded)
        if sum(1 for c in server.calls if c[0] == "events") == len(threads):
            break
        deadline.wait(0.05)
    try:
        with pytest.raises(UnavailableError, match="Too many sessions"):
            api.call(USER, "session_events", {"session_id": sid, "wait": 1})
    finally:
        server.hold.set()
        for thread in threads:
            thread.join(10)
    assert api.call(USER, "session_events", {"session_id": sid, "wait": 1})["events"]


@pytest.fixture
def served(api, short_dir):
    server = LocalServer(api, short_dir / "run" / "agent.sock").start()
    yield server
    server.stop()


def test_through_the_socket_a_session_offer_runs_in_the_users_process(served):
    """`ServicePC.session_offer` gives the same SessionOffer, its calls going through the socket; the recording is
    handed over as an open file."""
    pc = ServicePC(served.path)
    offer = pc.session_offer("T-1001")
    assert isinstance(offer, SessionOffer) and isinstance(offer.client, ServiceSessionCalls)
    assert offer.agent_id == "svc" and offer.server_key == "pinned-key"
    server = served.api.sessions._client
    server.hold.clear()  # the first long-poll waits until the test has looked
    session = offer.offer()
    try:
        assert session.ticket == "T-1001"
        assert offer.host_key_line.split()[1] in server.calls[0][1].host_key  # the user's process made the host key
        assert offer.client.answer_session(session.id, _answer(approved=False)) is None
        assert offer.client.upload_recording(session.id, b'{"version": 2}\n').id == session.id
        # The offer's long-poll runs on a thread of its own and may reach the server at any moment: only the
        # recording's call is looked at.
        assert [c for c in server.calls if c[0] == "recording"] == [("recording", session.id, b'{"version": 2}\n')]
    finally:
        offer.close()
        server.hold.set()
    assert offer.client.pinned_server_key in ("pinned-key", "rotated-key")


def test_a_recording_over_the_bound_is_refused_before_it_is_read(served, monkeypatch):
    monkeypatch.setattr(service_sessions, "MAX_RECORDING_BYTES", 1000)
    pc = ServicePC(served.path)
    offer = pc.session_offer("T-1001")
    session = offer.client.offer_session(_offer_body())
    with pytest.raises(TooLargeError, match="at most"):
        offer.client.upload_recording(session.id, b"x" * 1001)
    assert not any(c[0] == "recording" for c in served.api.sessions._client.calls)


def test_a_session_on_a_ticket_not_linked_for_the_user_is_refused_in_their_process(served):
    from protocol.errors import ConfigError

    with pytest.raises(ConfigError, match="not linked to T-1009 for you"):
        ServicePC(served.path).session_offer("T-1009")


def _answer(*, approved: bool):
    from protocol.sessions import ConsentAnswer

    return ConsentAnswer(grant_id="g-1", approved=approved, reason="" if approved else "refused by the user")


def _offer_body():
    from protocol.sessions import SessionOffer as Body

    return Body(ticket="T-1001", host_key=HOST_KEY, platform="Linux")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to call as other uids")
def test_other_uids_over_the_real_socket(served):
    """The kernel's uid decides: a user's session is theirs and root's; another user gets "no such session"."""
    path = served.path

    def offer_and_relay() -> list[str]:
        pc = ServicePC(path, Path("/nonexistent"))
        sid = pc.call("session_offer", {"ticket": "T-1001", "host_key": HOST_KEY})["id"]
        return [sid, pc.call("session_relay", {"session_id": sid})["token"]]

    sid, token = as_user(USER.uid, offer_and_relay)["ok"]
    assert token == "pass-2"
    relay = lambda: ServicePC(path, Path("/nonexistent")).call("session_relay", {"session_id": sid})  # noqa: E731
    refused = as_user(OTHER.uid, relay)
    assert refused["error"] == "NotFoundError" and "no such session for you" in refused["message"]
    assert ServicePC(path).call("session_relay", {"session_id": sid})["token"] == "pass-2"  # root, in this process
    offered_by = [c[1].username for c in served.api.sessions._client.calls if c[0] == "offer"]
    assert offered_by == ["nobody"]
