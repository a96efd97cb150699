"""Remote sessions on the server, in-process: offer, grant, consent, relay passes, chat, scopes, end and
recordings, each refusal, with the test's clock (no sleeping). The relay itself runs on uvicorn in
tests/server/test_relay_live.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from protocol.grants import SignedGrant, openssh_fingerprint, verification_string, verify_grant
from protocol.schemas import Role
from protocol.sessions import TIME_UP_REASON
from server.models import RelayToken, RemoteSession, TimelineEvent
from server.relay.hub import relay_hub
from tests.server.conftest import EnrolledPC

ASCIICAST = b'{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "hello\\r\\n"]\n'


def openssh_public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " test"


@dataclass
class Setup:
    engineer: str  # token
    engineer_name: str
    key_fp: str
    key_line: str
    number: str
    pc: EnrolledPC
    host_key: str


def setup(helpline, username: str = "eve") -> Setup:
    engineer = helpline.token(Role.ENGINEER, username)
    line = openssh_public_key()
    fp = helpline.ok("POST", "me/ssh-keys", engineer, json={"public_key": line})["fingerprint"]
    number = helpline.ticket(engineer, "Outlook \x1b[31mcrashes")
    pc = helpline.enrolled_pc("dana-laptop")
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return Setup(engineer, username, fp, line, number, pc, openssh_public_key())


def offer(helpline, s: Setup) -> dict:
    return helpline.ok("POST", "agent/sessions", s.pc, json={
        "ticket": s.number, "host_key": s.host_key, "platform": "linux", "username": "dana"})


def grant(helpline, s: Setup, sid: str, **body) -> dict:
    return helpline.ok("POST", f"sessions/{sid}/grants", s.engineer, json={"key_fingerprint": s.key_fp, **body})


def events(helpline, pc: EnrolledPC, sid: str, after: int = 0, wait: int = 0) -> list[dict]:
    return helpline.ok("GET", f"agent/sessions/{sid}/events?after={after}&wait={wait}", pc)


def approved(helpline, s: Setup, **body) -> tuple[str, dict, dict]:
    sid = offer(helpline, s)["id"]
    issued = grant(helpline, s, sid, **body)
    ticket = helpline.ok("POST", f"agent/sessions/{sid}/answer", s.pc,
                         json={"grant_id": issued["grant"]["payload"]["grant_id"], "approved": True})
    return sid, issued, ticket


def test_an_offer_a_signed_grant_and_consent_give_both_sides_relay_passes(helpline, clock, runtime):
    s = setup(helpline)
    offered = offer(helpline, s)
    sid = offered["id"]
    assert offered["state"] == "waiting" and offered["ticket"] == s.number
    assert offered["host_key_fingerprint"] == openssh_fingerprint(s.host_key)
    assert [x["id"] for x in helpline.ok("GET", f"sessions?ticket={s.number}&state=waiting", s.engineer)] == [sid]

    issued = grant(helpline, s, sid, scopes=["control"], max_minutes=30)
    assert issued["session"]["state"] == "requested" and issued["host_key"] == s.host_key
    signed = SignedGrant.model_validate(issued["grant"])
    checked = verify_grant(signed, pinned_server_key=runtime.public_key, agent_id=s.pc.agent_id,
                           host_key_fingerprint=offered["host_key_fingerprint"], now=clock())
    assert checked.engineer_username == "eve" and checked.engineer_key_fingerprint == s.key_fp
    assert {x.value for x in checked.scopes} == {"view", "control"} and checked.max_duration_seconds == 1800
    assert checked.ticket == s.number
    assert issued["verification"] == verification_string(checked, s.key_line)

    [request] = events(helpline, s.pc, sid)
    assert request["kind"] == "request" and request["engineer_username"] == "eve"
    assert request["grant"] == issued["grant"]
    assert request["ticket_title"] == "Outlook \x1b[31mcrashes"  # untrusted text, labelled and made printable by the PC

    pc_ticket = helpline.ok("POST", f"agent/sessions/{sid}/answer", s.pc,
                            json={"grant_id": checked.grant_id, "approved": True})
    assert pc_ticket["url"].startswith("ws://") and pc_ticket["url"].endswith("/v1/relay")
    assert pc_ticket["token"].startswith("hlr_") and pc_ticket["side"] == "pc"
    status = helpline.ok("GET", f"sessions/{sid}/grants/{checked.grant_id}?wait=0", s.engineer)
    assert status["state"] == "approved" and status["engineer"] == "eve"
    eng_ticket = helpline.ok("POST", f"sessions/{sid}/relay", s.engineer)
    assert eng_ticket["side"] == "engineer" and eng_ticket["token"] != pc_ticket["token"]

    with helpline.db() as db:  # passes are kept hashed, never as issued
        stored = {t.token_hash for t in db.scalars(select(RelayToken))}
    assert pc_ticket["token"] not in stored and len(stored) == 2

    with helpline.db() as db:
        ticket_id = db.get(RemoteSession, sid).ticket_id
        kinds = [e.kind for e in db.scalars(select(TimelineEvent).where(TimelineEvent.ticket_id == ticket_id))]
    assert {"session.offered", "session.requested", "session.approved"} <= set(kinds)
    assert [e.details["session_id"] for e in helpline.audit("session.approved")] == [sid]


def test_chat_goes_both_ways_and_the_user_can_take_scopes_back(helpline):
    s = setup(helpline)
    sid, issued, _ = approved(helpline, s, scopes=["control", "files"])
    sent = helpline.ok("POST", f"sessions/{sid}/chat", s.engineer, json={"text": "I am looking at the logs"})
    assert sent["sender"] == "engineer" and sent["seq"] == 1
    kinds = [(e["kind"], e.get("text")) for e in events(helpline, s.pc, sid)]
    assert ("chat", "I am looking at the logs") in kinds
    helpline.ok("POST", f"agent/sessions/{sid}/chat", s.pc, json={"text": "thanks!"})
    chat = helpline.ok("GET", f"sessions/{sid}/chat?after=1", s.engineer)
    assert [(c["sender"], c["text"]) for c in chat] == [("user", "thanks!")]
    bad = helpline.call("POST", f"sessions/{sid}/chat", s.engineer, json={"text": "ring\x07bell"})
    assert bad.status_code == 422

    narrowed = helpline.ok("POST", f"agent/sessions/{sid}/scopes", s.pc, json={"scopes": ["files"]})
    assert narrowed["scopes"] == ["files", "view"]
    widened = helpline.call("POST", f"agent/sessions/{sid}/scopes", s.pc, json={"scopes": ["forward"]})
    assert widened.status_code == 409
    assert helpline.audit("session.scopes_changed")[0].details["taken_back"] == ["control"]


def test_the_engineer_ends_a_session_and_the_pc_hears_it(helpline):
    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    ended = helpline.ok("POST", f"sessions/{sid}/end", s.engineer, json={"reason": "fixed", "bytes_to_pc": 10})
    assert ended["state"] == "ended" and ended["end_reason"] == "fixed" and ended["bytes_to_pc"] == 10
    assert events(helpline, s.pc, sid)[-1]["kind"] == "ended"
    assert helpline.call("POST", f"sessions/{sid}/relay", s.engineer).status_code == 409
    assert helpline.call("POST", f"agent/sessions/{sid}/relay", s.pc).status_code == 409
    again = helpline.ok("POST", f"agent/sessions/{sid}/end", s.pc, json={"reason": "closed", "bytes_from_pc": 99})
    assert again["end_reason"] == "fixed" and again["bytes_from_pc"] == 99  # counted, not ended twice
    assert len(helpline.audit("session.ended")) == 1


def test_a_refusal_ends_the_session_and_answering_twice_is_a_conflict(helpline):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    grant_id = grant(helpline, s, sid)["grant"]["payload"]["grant_id"]
    refused = helpline.ok("POST", f"agent/sessions/{sid}/answer", s.pc,
                          json={"grant_id": grant_id, "approved": False, "reason": "timed out"})
    assert refused == {"status": "refused"}
    status = helpline.ok("GET", f"sessions/{sid}/grants/{grant_id}", s.engineer)
    assert status["state"] == "ended" and "timed out" in status["end_reason"]
    twice = helpline.call("POST", f"agent/sessions/{sid}/answer", s.pc, json={"grant_id": grant_id, "approved": True})
    assert twice.status_code == 409
    assert helpline.audit("session.refused")[0].details["reason"] == "timed out"
    assert helpline.call("POST", f"sessions/{sid}/relay", s.engineer).status_code == 409


def test_an_answer_to_another_grant_is_refused_and_audited(helpline):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    grant(helpline, s, sid)
    forged = helpline.call("POST", f"agent/sessions/{sid}/answer", s.pc,
                           json={"grant_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "approved": True})
    assert forged.status_code == 409
    assert helpline.audit("session.answer_refused")[0].details["reason"] == "another grant"


def test_grants_need_a_waiting_session_the_engineers_own_key_and_known_scopes(helpline):
    s = setup(helpline)
    other = helpline.token(Role.ENGINEER, "mallory")
    theirs = helpline.ok("POST", "me/ssh-keys", other, json={"public_key": openssh_public_key()})["fingerprint"]
    sid = offer(helpline, s)["id"]

    foreign = helpline.call("POST", f"sessions/{sid}/grants", s.engineer, json={"key_fingerprint": theirs})
    assert foreign.status_code == 403
    assert helpline.audit("session.grant_refused")[0].details["reason"] == "not the engineer's key"
    unknown = helpline.call("POST", f"sessions/{sid}/grants", s.engineer,
                            json={"key_fingerprint": s.key_fp, "scopes": ["root"]})
    assert unknown.status_code == 422
    too_long = helpline.call("POST", f"sessions/{sid}/grants", s.engineer,
                             json={"key_fingerprint": s.key_fp, "max_minutes": 481})
    assert too_long.status_code == 422
    grant(helpline, s, sid)
    second = helpline.call("POST", f"sessions/{sid}/grants", s.engineer, json={"key_fingerprint": s.key_fp})
    assert second.status_code == 409
    assert helpline.call("POST", f"sessions/{sid}/grants", None, json={"key_fingerprint": s.key_fp}).status_code == 401
    assert helpline.call("POST", f"sessions/{sid}/grants", s.pc, json={"key_fingerprint": s.key_fp}).status_code == 401


def test_only_the_engineer_the_grant_names_gets_the_engineer_side(helpline):
    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    other = helpline.token(Role.ENGINEER, "mallory")
    assert helpline.call("POST", f"sessions/{sid}/relay", other).status_code == 403
    assert helpline.audit("session.relay_refused")[0].details["reason"] == "another engineer"


def test_pc_routes_answer_only_the_pc_that_offered_while_it_is_linked(helpline):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    stranger = helpline.enrolled_pc("other-pc")
    for method, path, body in [("GET", f"agent/sessions/{sid}/events", None),
                               ("POST", f"agent/sessions/{sid}/relay", None),
                               ("POST", f"agent/sessions/{sid}/chat", {"text": "hi"}),
                               ("POST", f"agent/sessions/{sid}/end", {"reason": "x"})]:
        assert helpline.call(method, path, stranger, json=body).status_code == 404, path
    unlinked = helpline.call("POST", "agent/sessions", stranger, json={"ticket": s.number, "host_key": s.host_key})
    assert unlinked.status_code == 404
    unsigned = helpline.call("POST", "agent/sessions", s.pc.credential, json={"ticket": s.number, "host_key": s.host_key})
    assert unsigned.status_code == 401
    bad_key = helpline.call("POST", "agent/sessions", s.pc, json={"ticket": s.number, "host_key": "ssh-ed25519 AAAA"})
    assert bad_key.status_code == 422


def test_a_new_offer_replaces_the_waiting_one_and_offers_run_out(helpline, clock):
    s = setup(helpline)
    first = offer(helpline, s)["id"]
    second = offer(helpline, s)["id"]
    assert helpline.ok("GET", f"sessions/{first}", s.engineer)["state"] == "ended"
    assert events(helpline, s.pc, first)[-1]["reason"] == "replaced by a new offer"
    clock.advance(minutes=20)
    events(helpline, s.pc, second)  # the PC's long-poll keeps its offer open
    clock.advance(minutes=20)
    assert helpline.ok("GET", f"sessions/{second}", s.engineer)["state"] == "waiting"
    clock.advance(minutes=31)
    gone = helpline.ok("GET", f"sessions/{second}", s.engineer)
    assert gone["state"] == "ended" and gone["end_reason"] == "the offer expired"
    late = helpline.call("POST", f"sessions/{second}/grants", s.engineer, json={"key_fingerprint": s.key_fp})
    assert late.status_code == 409


def test_an_unanswered_request_runs_out_and_cannot_be_approved_late(helpline, clock):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    grant_id = grant(helpline, s, sid)["grant"]["payload"]["grant_id"]
    clock.advance(minutes=11)
    late = helpline.call("POST", f"agent/sessions/{sid}/answer", s.pc, json={"grant_id": grant_id, "approved": True})
    assert late.status_code == 409
    assert helpline.ok("GET", f"sessions/{sid}", s.engineer)["end_reason"] == "the user did not answer in time"


def test_grant_requests_are_rate_limited_per_engineer(helpline, runtime):
    runtime.settings.sessions.grants_per_engineer_per_hour = 2
    s = setup(helpline)
    for _ in range(2):
        grant(helpline, s, offer(helpline, s)["id"])
    refused = helpline.call("POST", f"sessions/{offer(helpline, s)['id']}/grants", s.engineer,
                            json={"key_fingerprint": s.key_fp})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


def test_a_long_poll_returns_at_once_when_events_exist_and_wakes_for_a_new_one(helpline):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    got: list = []
    poller = threading.Thread(target=lambda: got.append(events(helpline, s.pc, sid, wait=20)), daemon=True)
    poller.start()
    grant(helpline, s, sid)
    poller.join(20)
    assert not poller.is_alive() and [e["kind"] for e in got[0]] == ["request"]
    assert relay_hub(helpline.http.app).doorbells.waiting(sid) == 0
    assert events(helpline, s.pc, sid, after=1, wait=0) == []
    assert [e["kind"] for e in events(helpline, s.pc, sid, after=0, wait=25)] == ["request"]


def test_a_recording_is_attached_once_capped_and_downloaded_by_who_may(helpline, runtime, clock):
    runtime.settings.sessions.max_recording_bytes = 1000
    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    put = lambda data, ctype="application/x-asciicast": helpline.call(  # noqa: E731
        "PUT", f"agent/sessions/{sid}/recording", s.pc, content=data, headers={"Content-Type": ctype})
    assert put(b"x" * 1001).status_code == 413
    assert put(b"not a cast\n").status_code == 422
    assert put(ASCIICAST, "text/plain").status_code == 422
    attached = put(ASCIICAST)
    assert attached.status_code == 200 and attached.json()["recording"] is True
    assert put(ASCIICAST).status_code == 409

    other = helpline.token(Role.ENGINEER, "mallory")
    assert helpline.call("GET", f"sessions/{sid}/recording", other).status_code == 403  # not the assignee
    helpline.ok("PATCH", f"tickets/{s.number}", s.engineer, json={"assignee": "eve"})
    got = helpline.call("GET", f"sessions/{sid}/recording", s.engineer)
    assert got.status_code == 200 and got.content == ASCIICAST
    assert got.headers["content-type"].startswith("application/x-asciicast")
    assert helpline.call("GET", f"sessions/{sid}/recording", helpline.admin()).status_code == 200
    assert len(helpline.audit("session.recording_downloaded")) == 2
    assert len(helpline.audit("session.recording_attached")) == 1
    clock.advance(days=91)
    assert helpline.call("GET", f"sessions/{sid}/recording", helpline.admin()).status_code == 404  # past retention


def test_a_recording_needs_an_approved_session(helpline):
    s = setup(helpline)
    sid = offer(helpline, s)["id"]
    refused = helpline.call("PUT", f"agent/sessions/{sid}/recording", s.pc, content=ASCIICAST,
                            headers={"Content-Type": "application/x-asciicast"})
    assert refused.status_code == 409


def test_a_session_runs_out_at_its_granted_duration(helpline, clock):
    s = setup(helpline)
    sid, _, _ = approved(helpline, s, max_minutes=5)
    with helpline.db() as db:
        row = db.get(RemoteSession, sid)
        row.state, row.started_at = "active", clock()
    clock.advance(minutes=5)
    shown = helpline.ok("GET", f"sessions/{sid}", s.engineer)
    assert shown["state"] == "ended" and shown["end_reason"] == TIME_UP_REASON
    assert isinstance(datetime.fromisoformat(shown["ended_at"]), datetime)


def test_sessions_that_ran_out_unnoticed_are_ended_audited_and_announced(helpline, runtime, clock):
    from server.jobs import JOBS
    from server.models import WebhookDelivery
    from tests.server.api.test_webhooks import add

    add(helpline, helpline.admin(), events=("session.ended",))
    s = setup(helpline)
    running, _, _ = approved(helpline, s, max_minutes=5)
    with helpline.db() as db:
        row = db.get(RemoteSession, running)
        row.state, row.started_at = "active", clock()
    [settle] = [job for job in JOBS if job.name == "session-settle"]
    assert settle.run(runtime) == "ended 0 sessions that ran out"  # within its time: left alone
    clock.advance(minutes=4)
    assert settle.run(runtime) == "ended 0 sessions that ran out"
    clock.advance(minutes=2)  # nobody reads the session again; the sweep ends it
    assert settle.run(runtime) == "ended 1 sessions that ran out"
    assert settle.run(runtime) == "ended 0 sessions that ran out"  # once
    with helpline.db() as db:
        row = db.get(RemoteSession, running)
        assert (row.state, row.end_reason) == ("ended", TIME_UP_REASON)
        assert db.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    [ended] = helpline.audit("session.ended")
    assert ended.details["session_id"] == running and ended.details["reason"] == TIME_UP_REASON
    timeline = helpline.ok("GET", f"tickets/{s.number}", s.engineer)["timeline"]
    assert any(TIME_UP_REASON in event["message"] for event in timeline)


def test_the_session_sweep_deletes_recordings_past_their_retention(helpline, runtime, clock):
    from server.jobs import JOBS

    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    helpline.ok("PUT", f"agent/sessions/{sid}/recording", s.pc, content=ASCIICAST,
                headers={"Content-Type": "application/x-asciicast"})
    with helpline.db() as db:
        key = db.get(RemoteSession, sid).recording_key
    assert runtime.blobs.exists(key)
    [sweep] = [job for job in JOBS if job.name == "session-sweep"]
    assert sweep.run(runtime) == "removed 0 expired session recordings and 0 old relay passes"
    clock.advance(days=91)
    assert sweep.run(runtime) == "removed 1 expired session recordings and 1 old relay passes"  # the PC's pass
    assert not runtime.blobs.exists(key)
    assert helpline.ok("GET", f"sessions/{sid}", helpline.admin())["recording"] is False
    assert [e.details["session_id"] for e in helpline.audit("session.recording_expired")] == [sid]


def test_the_relay_address_follows_the_address_the_request_came_to(helpline, runtime):
    from fastapi.testclient import TestClient

    from server.app import create_app

    s = setup(helpline)
    sid, _, _ = approved(helpline, s)
    with TestClient(create_app(runtime), base_url="https://help.example.com:8443") as tls:
        answer = tls.post(f"/v1/sessions/{sid}/relay", headers={"Authorization": f"Bearer {s.engineer}"})
    assert answer.status_code == 200 and answer.json()["url"] == "wss://help.example.com:8443/v1/relay"
