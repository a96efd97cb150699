"""A PC runs an engineer's request only when its pinned server key signed it for this PC, it has not
expired, it never ran before (also across restarts) and, for a restore, its user agreed."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agent.service.consent import ConsentBox
from agent.service.requests import ReceivedRequests, RequestRunner
from protocol import signing
from protocol.errors import InvalidInputError
from protocol.pc_requests import PcRequest, PcRequestKind, PcRequestState, SignedPcRequest, sign_pc_request

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AGENT = "3f1c2b4e-0000-4000-8000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Harness:
    """A runner for one PC with a recording handler per kind and a list of what it reported."""

    def __init__(self, tmp_path, *, server_key=None, consent: bool = True):
        self.server_key = server_key or signing.generate_key()
        self.clock = Clock()
        self.ran: list[str] = []
        self.sent: list[tuple[str, str, str]] = []
        self.stop = threading.Event()
        self.consent = ConsentBox(tmp_path / "requests", clock=self.clock) if consent else None
        self.tmp_path = tmp_path

    def runner(self, server_key=None) -> RequestRunner:
        def handler(request, report):
            self.ran.append(request.id)
            report(progress=0.5, detail="half way")
            return {"snapshot": "abcd1234"}

        def failing(request, report):
            raise InvalidInputError("That snapshot does not hold /nowhere.")

        return RequestRunner(
            agent_id=AGENT, server_public_key=signing.public_key_b64(server_key or self.server_key),
            received=ReceivedRequests(self.tmp_path), handlers={"restore": handler, "snapshot": handler,
                                                                 "diagnostics": handler, "diff": failing},
            send=lambda rid, update: self.sent.append((rid, update.state.value, update.detail)), consent=self.consent,
            stop=self.stop, clock=self.clock,
        )

    def request(self, kind: str = "snapshot", *, agent_id: str = AGENT, minutes: int = 60, key=None,
                unattended: bool = False, params: dict | None = None) -> SignedPcRequest:
        request = PcRequest(
            id=str(uuid.uuid4()), agent_id=agent_id, kind=PcRequestKind(kind),
            params=params if params is not None else ({"paths": ["/home/ana/report.odt"]} if kind == "restore" else
                                                      ({"snapshot": "abcd1234", "other": "latest"} if kind == "diff" else {})),
            ticket="T-1042", requested_by="eve", requested_by_name="Eve Engineer", created_at=self.clock(),
            expires_at=self.clock() + timedelta(minutes=minutes), nonce=uuid.uuid4().hex, unattended=unattended,
        )
        return sign_pc_request(key or self.server_key, request)

    def states(self, request_id: str) -> list[str]:
        return [state for rid, state, _ in self.sent if rid == request_id]


@pytest.fixture
def pc(tmp_path) -> Harness:
    return Harness(tmp_path)


def test_a_signed_request_for_this_pc_runs_and_reports_each_step(pc):
    signed = pc.request("snapshot")
    assert pc.runner().handle(signed) is PcRequestState.DONE
    rid = signed.payload["id"]
    assert pc.ran == [rid]
    assert pc.states(rid) == ["running", "running", "done"]


def test_a_request_signed_by_another_key_is_refused_and_never_runs(pc):
    signed = pc.request("snapshot", key=signing.generate_key())
    assert pc.runner().handle(signed) is PcRequestState.REFUSED
    assert pc.ran == []
    [(rid, state, detail)] = pc.sent
    assert state == "refused" and "not signed by this PC's server" in detail


def test_a_request_altered_after_signing_is_refused(pc):
    signed = pc.request("restore", unattended=False)
    altered = SignedPcRequest(payload={**signed.payload, "unattended": True}, signature=signed.signature)
    assert pc.runner().handle(altered) is PcRequestState.REFUSED
    assert pc.ran == []


def test_a_request_for_another_pc_is_refused(pc):
    assert pc.runner().handle(pc.request("snapshot", agent_id="another-agent")) is PcRequestState.REFUSED
    assert pc.ran == [] and "another PC" in pc.sent[0][2]


def test_an_expired_request_is_refused_after_the_skew_allowance(pc):
    within, after = pc.request("snapshot", minutes=5), pc.request("snapshot", minutes=5)
    pc.clock.now = NOW + timedelta(minutes=5, seconds=59)  # a minute's allowance for clocks apart
    assert pc.runner().handle(within) is PcRequestState.DONE
    pc.clock.now = NOW + timedelta(minutes=6, seconds=1)
    assert pc.runner().handle(after) is PcRequestState.REFUSED
    assert "expired" in pc.sent[-1][2]
    assert pc.ran == [within.payload["id"]]


def test_a_replayed_request_never_runs_twice_even_after_a_restart(pc):
    signed = pc.request("snapshot")
    assert pc.runner().handle(signed) is PcRequestState.DONE
    assert pc.runner().handle(signed) is PcRequestState.REFUSED  # a new runner: as after a restart
    assert pc.ran == [signed.payload["id"]]
    assert "received before" in pc.sent[-1][2]
    # The same nonce under a new id is a replay too (the server never reuses one).
    again = PcRequest.model_validate({**signed.payload, "id": str(uuid.uuid4())})
    assert pc.runner().handle(sign_pc_request(pc.server_key, again)) is PcRequestState.REFUSED
    assert len(pc.ran) == 1


def test_a_damaged_record_of_received_requests_refuses_everything(pc):
    (pc.tmp_path / "received-requests.json").write_text("{not json")
    assert pc.runner().handle(pc.request("snapshot")) is PcRequestState.REFUSED
    assert pc.ran == []


def test_a_request_this_version_cannot_read_is_refused(pc):
    signed = pc.request("snapshot")
    payload = {**signed.payload, "params": {"shell": "rm -rf ~"}}
    forged_by_server = SignedPcRequest(payload=payload, signature=signing.sign(
        pc.server_key, {"purpose": "pc-request", "request": payload}))
    assert pc.runner().handle(forged_by_server) is PcRequestState.REFUSED
    assert pc.ran == []


def test_a_handler_error_fails_the_request_with_its_message(pc):
    signed = pc.request("diff")
    assert pc.runner().handle(signed) is PcRequestState.FAILED
    assert pc.sent[-1][1:] == ("failed", "That snapshot does not hold /nowhere.")


def test_a_kind_this_pc_has_no_handler_for_fails_clearly(tmp_path):
    pc = Harness(tmp_path)
    runner = pc.runner()
    runner.handlers.pop(PcRequestKind.SNAPSHOT)
    assert runner.handle(pc.request("snapshot")) is PcRequestState.FAILED
    assert "cannot do snapshot" in pc.sent[-1][2]


def answer_when_asked(pc: Harness, approve: bool) -> threading.Thread:
    """Answer the first waiting request as the user would, from another thread (bounded: about 10 s)."""

    def user() -> None:
        for _ in range(1000):
            waiting = pc.consent.waiting()
            if waiting:
                pc.consent.answer(waiting[0].id[:8], approve=approve, by="ana")
                return
            pc.stop.wait(0.01)

    thread = threading.Thread(target=user)
    thread.start()
    return thread


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "refused"])
def test_a_restore_waits_for_its_users_answer(pc, approve):
    signed = pc.request("restore")
    user = answer_when_asked(pc, approve)
    end = pc.runner().handle(signed)
    user.join(timeout=15)
    rid = signed.payload["id"]
    if approve:
        assert end is PcRequestState.DONE and pc.ran == [rid]
        assert pc.states(rid) == ["waiting_consent", "running", "running", "done"]
    else:
        assert end is PcRequestState.REFUSED and pc.ran == []
        assert pc.states(rid) == ["waiting_consent", "refused"] and "user refused" in pc.sent[-1][2]
    assert pc.consent.waiting() == []  # the question is withdrawn


def test_an_unanswered_restore_expires_and_never_runs(pc):
    signed = pc.request("restore", minutes=1)
    pc.clock.now += timedelta(minutes=3)
    runner = pc.runner()
    request = PcRequest.model_validate(signed.payload)
    assert runner.run(request) is PcRequestState.EXPIRED
    assert pc.ran == [] and pc.consent.waiting() == []


def test_an_admins_unattended_setting_lets_a_restore_run_without_asking_but_never_diagnostics(pc):
    restore = pc.request("restore", unattended=True)
    assert pc.runner().handle(restore) is PcRequestState.DONE
    assert "waiting_consent" not in pc.states(restore.payload["id"])
    diagnostics = pc.request("diagnostics", unattended=True)
    pc.stop.set()  # nobody answers: the runner stops waiting
    assert pc.runner().handle(diagnostics) is PcRequestState.WAITING_CONSENT
    assert pc.ran == [restore.payload["id"]]


def test_a_pc_with_nobody_to_ask_refuses_a_restore(tmp_path):
    pc = Harness(tmp_path, consent=False)
    assert pc.runner().handle(pc.request("restore")) is PcRequestState.REFUSED
    assert pc.ran == []


def test_the_user_sees_only_waiting_unexpired_requests_and_answers_by_a_unique_start(pc):
    first = PcRequest.model_validate(pc.request("restore").payload)
    second = PcRequest.model_validate(pc.request("restore", minutes=1).payload)
    pc.consent.ask(first)
    pc.consent.ask(second)
    assert [w.id for w in pc.consent.waiting()] == sorted([first.id, second.id], key=lambda i: (NOW, i))
    pc.clock.now += timedelta(minutes=3)
    assert [w.id for w in pc.consent.waiting()] == [first.id]
    with pytest.raises(Exception, match="No request"):
        pc.consent.answer(second.id, approve=True, by="ana")
    assert pc.consent.answer(first.id[:6], approve=False, by="ana").id == first.id
    assert pc.consent.waiting() == []


def test_the_consent_box_allows_the_same_clock_skew_as_the_requests():
    from agent.service import consent
    from protocol import pc_requests

    assert consent.CLOCK_SKEW == pc_requests.CLOCK_SKEW


def test_a_restore_still_waiting_when_the_agent_stops_waits_on_after_its_restart(pc):
    signed = pc.request("restore")
    rid = signed.payload["id"]
    pc.stop.set()
    assert pc.runner().handle(signed) is PcRequestState.WAITING_CONSENT  # stopping: the question stays
    assert [w.id for w in pc.consent.waiting()] == [rid]
    pc.consent.answer(rid[:8], approve=True, by="ana")  # answered while the agent was down
    pc.stop.clear()
    restarted = pc.runner()
    [waiting] = pc.consent.unfinished()
    assert restarted.resume(SignedPcRequest.model_validate(waiting)) is PcRequestState.DONE
    assert pc.ran == [rid]
    assert pc.states(rid) == ["waiting_consent", "running", "running", "done"]  # asked once, run once
    assert restarted.handle(signed) is PcRequestState.REFUSED  # the same request again is still a replay
    assert pc.consent.unfinished() == [] and pc.ran == [rid]


def test_a_waiting_request_this_pc_never_received_is_not_resumed(pc, tmp_path):
    planted = pc.request("restore")
    pc.consent.ask(PcRequest.model_validate(planted.payload), signed=planted.model_dump())
    assert pc.runner().resume(planted) is PcRequestState.REFUSED
    assert pc.ran == [] and pc.consent.waiting() == []
