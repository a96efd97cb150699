"""The request channel: runs what its long poll brings, backs off with jitter when polls fail,
and stops promptly when told, even with a poll in flight."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

from agent.service.channel import BACKOFF_MAX, RequestChannel
from agent.store import AgentState, AgentStore
from protocol import signing
from protocol.errors import UnavailableError
from protocol.pc_requests import PcRequest, PcRequestKind, sign_pc_request

AGENT = "3f1c2b4e-0000-4000-8000-000000000001"


class FakeServer:
    """Answers polls from a list of batches (an error for an exception), then holds each poll until released."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.polls = 0
        self.reports: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def client(self) -> FakeClient:
        return FakeClient(self)


class FakeClient:
    def __init__(self, server: FakeServer):
        self.server = server

    def next_pc_requests(self, wait=None):
        with self.server.lock:
            self.server.polls += 1
            batch = self.server.batches.pop(0) if self.server.batches else None
        if isinstance(batch, Exception):
            raise batch
        if batch is None:
            self.server.release.wait(30)  # a long poll with nothing to bring
            return []
        return batch

    def update_pc_request(self, request_id, update):
        with self.server.lock:
            self.server.reports.append((request_id, update.state.value))

    def close(self):
        pass


def linked_store(tmp_path, server_key) -> AgentStore:
    store = AgentStore(tmp_path / "agent")
    store.save(AgentState(server_url="http://127.0.0.1:9", agent_id=AGENT, credential="-",
                          server_public_key=signing.public_key_b64(server_key)))
    return store


def signed_request(server_key, kind="snapshot"):
    now = datetime.now(UTC)
    return sign_pc_request(server_key, PcRequest(
        id=str(uuid.uuid4()), agent_id=AGENT, kind=PcRequestKind(kind), params={}, requested_by="eve",
        requested_by_name="Eve", created_at=now, expires_at=now + timedelta(minutes=10), nonce=uuid.uuid4().hex))


def wait_until(condition, what: str) -> None:
    """Until ``condition()`` holds (bounded: about 10 s)."""
    pause = threading.Event()
    for _ in range(1000):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_the_channel_runs_what_the_poll_brings_and_stops_with_a_poll_in_flight(tmp_path):
    key = signing.generate_key()
    first, second = signed_request(key), signed_request(key)
    server = FakeServer([[first], [second]])
    ran = []
    stop = threading.Event()
    channel = RequestChannel(server.client, {"snapshot": lambda request, report: ran.append(request.id) or {}}, stop,
                             store=linked_store(tmp_path, key), rng=random.Random(7))
    thread = channel.start()
    try:
        wait_until(lambda: len(ran) == 2 and server.polls >= 3, "both requests ran and a third poll is held")
        wait_until(lambda: sum(1 for _, s in server.reports if s == "done") == 2, "both reported done")
    finally:
        stop.set()
        thread.join(timeout=5)
        alive = thread.is_alive()
        server.release.set()
    assert not alive, "the channel did not stop while a poll was held"
    assert sorted(ran) == sorted([first.payload["id"], second.payload["id"]])


def test_failed_polls_back_off_doubling_with_jitter_up_to_a_minute(tmp_path):
    key = signing.generate_key()
    server = FakeServer([UnavailableError("The server is away.")] * 3 + [[signed_request(key)]])
    stop = threading.Event()
    channel = RequestChannel(server.client, {"snapshot": lambda request, report: {}}, stop,
                             store=linked_store(tmp_path, key), rng=random.Random(3))
    waits = []
    for failures in range(1, 12):
        channel.failures = failures
        waits.append(channel.backoff())
    ceilings = [min(BACKOFF_MAX, 2.0 ** (n - 1)) for n in range(1, 12)]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert max(waits) <= BACKOFF_MAX and len(set(waits)) == len(waits)  # jittered: no two alike
    # The channel keeps going after errors, and a success resets the count.
    channel.failures = 0
    channel.backoff = lambda: 0.01  # type: ignore[method-assign]
    thread = channel.start()
    try:
        wait_until(lambda: any(s == "done" for _, s in server.reports), "the request after the errors ran")
    finally:
        stop.set()
        thread.join(timeout=5)
        server.release.set()
    assert server.polls >= 4 and channel.failures == 0 and channel.last_error is None


def test_a_request_left_waiting_for_consent_by_an_earlier_run_goes_on_when_the_channel_starts(tmp_path):
    from agent.service.requests import ReceivedRequests, consent_box

    key = signing.generate_key()
    store = linked_store(tmp_path, key)
    signed = signed_request(key, kind="restore")
    request = PcRequest.model_validate(signed.payload)
    ReceivedRequests(store.directory).claim(request, now=datetime.now(UTC))  # the earlier run received it
    box = consent_box(store.directory)
    box.ask(request, signed=signed.model_dump())
    box.answer(request.id, approve=True, by="ana")
    server = FakeServer([])
    ran = []
    stop = threading.Event()
    channel = RequestChannel(server.client, {"restore": lambda req, report: ran.append(req.id) or {}}, stop,
                             store=store, rng=random.Random(1))
    thread = channel.start()
    try:
        wait_until(lambda: ran == [request.id] and (request.id, "done") in server.reports, "the restore ran")
    finally:
        stop.set()
        thread.join(timeout=5)
        server.release.set()
    assert box.unfinished() == []
