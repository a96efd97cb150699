"""Engineer -> PC requests: made and signed by the server, taken by the named PC's long poll only,
reported on by that PC only, expired by the clock, and followed by engineers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from protocol.errors import ForbiddenError
from protocol.pc_requests import SignedPcRequest, verify_pc_request
from server import jobs
from server import pc_requests as svc
from server.models import Agent, PcRequestRow
from tests.server.conftest import EnrolledPC

RESTORE = {"kind": "restore", "params": {"paths": ["/home/ana/Documents/report.odt"], "target": "beside"}}


def linked_pc(helpline, engineer: str, hostname: str = "pc-ana") -> tuple[EnrolledPC, str]:
    """An enrolled PC linked to a new ticket; return it and the ticket number."""
    pc = helpline.enrolled_pc(hostname)
    number = helpline.ticket(engineer, "Lost my report")
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return pc, number


def wait_for_listener(helpline, count: int = 1) -> None:
    """Until ``count`` long polls listen on the in-process doorbell (bounded: about 10 s)."""
    for _ in range(1000):
        if len(helpline.runtime.doorbell) >= count:
            return
        time.sleep(0.01)
    raise AssertionError("the long poll never started listening")


@pytest.fixture
def engineer(helpline) -> str:
    return helpline.token()


def test_a_request_reaches_its_pc_signed_once_and_is_followed_to_its_end(helpline, engineer):
    pc, number = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={**RESTORE, "ticket": number})
    assert made["state"] == "queued" and made["hostname"] == "pc-ana" and made["ticket"] == number
    assert made["requested_by"].startswith("engineer-") and made["unattended"] is False

    taken = helpline.ok("GET", "agent/requests", pc)
    assert len(taken) == 1
    request = verify_pc_request(SignedPcRequest.model_validate(taken[0]), pinned_server_key=helpline.runtime.public_key,
                                agent_id=pc.agent_id, now=helpline.clock())
    assert request.id == made["id"] and request.params["paths"] == ["/home/ana/Documents/report.odt"]
    assert helpline.ok("GET", "agent/requests", pc) == []  # delivered once

    for body in ({"state": "waiting_consent", "detail": "asked ana"}, {"state": "running", "progress": 0.5},
                 {"state": "done", "result": {"snapshot": "abcd1234", "target": "beside", "files_restored": 1}}):
        helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json=body)
    seen = helpline.ok("GET", f"agents/pc-ana/requests/{made['id'][:8]}", engineer)
    assert seen["state"] == "done" and seen["progress"] == 1.0 and seen["result"]["files_restored"] == 1
    assert seen["version"] > made["version"]

    timeline = helpline.ok("GET", f"tickets/{number}", engineer)["timeline"]
    kinds = [e["kind"] for e in timeline if e["kind"].startswith("pc-request")]
    assert kinds == ["pc-request", "pc-request-waiting_consent", "pc-request-running", "pc-request-done"]
    assert "report.odt" in timeline[-1]["message"]
    assert [e.details["kind"] for e in helpline.audit("pc_request.created")] == ["restore"]
    assert len(helpline.audit("pc_request.done")) == 1
    # A final request takes no more reports.
    again = helpline.call("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running"})
    assert again.status_code == 409


def test_only_the_named_pc_takes_and_reports_on_its_request(helpline, engineer):
    pc, _ = linked_pc(helpline, engineer)
    other = helpline.enrolled_pc("pc-other")
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
    assert helpline.ok("GET", "agent/requests", other) == []
    refused = helpline.call("POST", f"agent/requests/{made['id']}/update", other, json={"state": "running"})
    assert refused.status_code == 404
    # Nobody unsigned polls, and a PC is no engineer.
    assert helpline.call("GET", "agent/requests").status_code == 401
    assert helpline.call("GET", "agent/requests", headers={"Authorization": f"Bearer {pc.credential}"}).status_code == 401
    assert helpline.call("POST", f"agents/{pc.agent_id}/requests", pc, json=RESTORE).status_code == 401
    assert helpline.call("GET", f"agents/{pc.agent_id}/requests").status_code == 401
    assert len(helpline.ok("GET", "agent/requests", pc)) == 1


def test_a_revoked_pc_gets_no_requests_and_none_are_made_for_it(helpline, engineer):
    pc, _ = linked_pc(helpline, engineer)
    helpline.ok("POST", f"agents/{pc.agent_id}/revoke", helpline.admin(), json={"reason": "stolen"})
    assert helpline.call("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE).status_code == 409
    assert helpline.call("GET", "agent/requests", pc).status_code == 401


def test_requests_nobody_started_expire_by_the_clock(helpline, engineer, clock):
    pc, number = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer,
                       json={**RESTORE, "ticket": number, "expires_minutes": 5})
    clock.advance(minutes=6)
    assert helpline.ok("GET", "agent/requests", pc) == []  # expired ones are never handed out
    seen = helpline.ok("GET", f"agents/{pc.agent_id}/requests/{made['id']}", engineer)
    assert seen["state"] == "expired"
    late = helpline.call("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running"})
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    timeline = helpline.ok("GET", f"tickets/{number}", engineer)["timeline"]
    assert timeline[-1]["kind"] == "pc-request-expired"


def test_a_delivered_request_waiting_for_consent_expires_in_the_sweep_job(helpline, engineer, clock):
    pc, _ = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={**RESTORE, "expires_minutes": 10})
    helpline.ok("GET", "agent/requests", pc)
    helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "waiting_consent"})
    clock.advance(minutes=9)
    assert jobs.sweep_pc_requests(helpline.runtime) == "expired 0 requests to PCs"
    clock.advance(minutes=2)
    assert jobs.sweep_pc_requests(helpline.runtime) == "expired 1 requests to PCs"
    listed = helpline.ok("GET", f"agents/{pc.agent_id}/requests", engineer)
    assert [r["state"] for r in listed] == ["expired"]
    assert helpline.audit("pc_request.expired")[0].actor_type == "system"


def test_a_running_request_does_not_expire_but_fails_when_the_pc_goes_silent(helpline, engineer, clock):
    pc, _ = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={**RESTORE, "expires_minutes": 10})
    helpline.ok("GET", "agent/requests", pc)
    helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running", "progress": 0.1})
    clock.advance(hours=1)
    assert helpline.ok("GET", f"agents/{pc.agent_id}/requests/{made['id']}", engineer)["state"] == "running"
    helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running", "progress": 0.2})
    clock.advance(hours=7)
    seen = helpline.ok("GET", f"agents/{pc.agent_id}/requests/{made['id']}", engineer)
    assert seen["state"] == "failed" and "stopped reporting" in seen["detail"]


def test_the_pcs_long_poll_answers_as_soon_as_a_request_is_queued(helpline, engineer):
    # The database is looked at only once a minute here: only the doorbell can answer within the wait.
    helpline.runtime.settings.snapshots.request_poll_seconds = 60
    pc, _ = linked_pc(helpline, engineer)
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(helpline.ok, "GET", "agent/requests?wait=50", pc)
        wait_for_listener(helpline)
        made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
        taken = poll.result(timeout=60)
    assert [t["payload"]["id"] for t in taken] == [made["id"]]
    assert len(helpline.runtime.doorbell) == 0


def test_a_queued_request_is_answered_at_once_without_waiting(helpline, engineer):
    helpline.runtime.settings.snapshots.request_poll_seconds = 60
    pc, _ = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
    taken = helpline.ok("GET", "agent/requests?wait=50", pc)  # would take 50 s if it waited
    assert [t["payload"]["id"] for t in taken] == [made["id"]]


def test_an_engineer_following_a_request_hears_of_each_report(helpline, engineer):
    helpline.runtime.settings.snapshots.request_poll_seconds = 60
    pc, _ = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
    helpline.ok("GET", "agent/requests", pc)
    version = helpline.ok("GET", f"agents/{pc.agent_id}/requests/{made['id']}", engineer)["version"]
    with ThreadPoolExecutor(1) as pool:
        follow = pool.submit(helpline.ok, "GET", f"agents/{pc.agent_id}/requests/{made['id']}?wait=50&seen={version}",
                             engineer)
        wait_for_listener(helpline)
        helpline.ok("POST", f"agent/requests/{made['id']}/update", pc, json={"state": "running", "progress": 0.25})
        seen = follow.result(timeout=60)
    assert seen["state"] == "running" and seen["progress"] == 0.25 and seen["version"] == version + 1


@pytest.mark.parametrize("body, words", [
    ({"kind": "restore", "params": {"paths": ["Documents"]}}, "absolute path"),
    ({"kind": "restore", "params": {"paths": ["/home/ana/../bob"]}}, "'..'"),
    ({"kind": "restore", "params": {"target": "somewhere"}}, "folder:"),
    ({"kind": "restore", "params": {"snapshot": "abcd1234", "at": "2026-03-01T10:00:00Z"}}, "not both"),
    ({"kind": "diagnostics"}, "ticket"),
    ({"kind": "format-disk"}, "kind"),
    ({"kind": "restore", "params": {"shell": "rm -rf /"}}, "shell"),
], ids=["relative", "dotdot", "target", "snapshot-and-time", "diagnostics-without-ticket", "unknown-kind", "extra-param"])
def test_bad_requests_are_refused_with_one_clear_line(helpline, engineer, body, words):
    pc, _ = linked_pc(helpline, engineer)
    refused = helpline.call("POST", f"agents/{pc.agent_id}/requests", engineer, json=body)
    assert refused.status_code == 422, refused.text
    assert words in refused.json()["error"]["message"]
    with helpline.db() as session:
        assert session.scalar(select(PcRequestRow.id)) is None


def test_diagnostics_go_only_to_a_ticket_the_pc_is_linked_to(helpline, engineer):
    pc, number = linked_pc(helpline, engineer)
    other = helpline.ticket(engineer, "Someone else's")
    refused = helpline.call("POST", f"agents/{pc.agent_id}/requests", engineer,
                            json={"kind": "diagnostics", "ticket": other})
    assert refused.status_code == 422 and "not linked" in refused.json()["error"]["message"]
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={"kind": "diagnostics", "ticket": number})
    assert made["kind"] == "diagnostics"


def test_unattended_restore_is_the_admins_setting_and_signed_into_the_request(helpline, engineer):
    pc, _ = linked_pc(helpline, engineer)
    helpline.runtime.settings.snapshots.unattended_restore = True
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
    snapshot = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={"kind": "snapshot"})
    assert made["unattended"] is True and snapshot["unattended"] is False
    taken = {t["payload"]["id"]: t for t in helpline.ok("GET", "agent/requests", pc)}
    assert taken[made["id"]]["payload"]["unattended"] is True


def test_a_replacement_restore_names_the_old_pc_by_id_and_releases_its_data_for_that_request_only(helpline, engineer, clock):
    old, _ = linked_pc(helpline, engineer, "pc-old")
    new, _ = linked_pc(helpline, engineer, "pc-new")
    itself = helpline.call("POST", f"agents/{new.agent_id}/requests", engineer,
                           json={"kind": "restore", "params": {"source_agent_id": "pc-new"}})
    assert itself.status_code == 422
    made = helpline.ok("POST", f"agents/pc-new/requests", engineer,
                       json={"kind": "restore", "params": {"source_agent_id": "pc-old"}, "expires_minutes": 30})
    assert made["params"]["source_agent_id"] == old.agent_id

    def release(pc: EnrolledPC, request_id: str | None):
        with helpline.db() as session:
            return svc.replacement_request(session, session.get(Agent, pc.agent_id), request_id, now=clock()).source_agent_id

    with pytest.raises(ForbiddenError):
        release(new, made["id"])  # still queued: not yet the PC's to run
    helpline.ok("GET", "agent/requests", new)
    assert release(new, made["id"]) == old.agent_id
    with pytest.raises(ForbiddenError):
        release(old, made["id"])  # another PC's request
    with pytest.raises(ForbiddenError):
        release(new, None)
    plain = helpline.ok("POST", f"agents/pc-new/requests", engineer, json=RESTORE)
    with pytest.raises(ForbiddenError):
        release(new, plain["id"])  # a restore of its own snapshots releases nothing of another PC
    clock.advance(minutes=31)
    with pytest.raises(ForbiddenError):
        release(new, made["id"])


def test_a_request_queued_by_another_replica_reaches_a_waiting_poll_by_the_database_look(helpline, engineer):
    # Another server process queues it: no in-process doorbell rings here, the poll's own look finds it.
    helpline.runtime.settings.snapshots.request_poll_seconds = 0.2  # where the bus is away (PostgreSQL)
    helpline.runtime.settings.bus.safety_look_seconds = 1.0  # where every ring is heard (SQLite): the safety net
    pc, _ = linked_pc(helpline, engineer)
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=RESTORE)
    with helpline.db() as session:
        session.get(PcRequestRow, made["id"]).state = "failed"  # park it while the poll starts
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(helpline.ok, "GET", "agent/requests?wait=50", pc)
        wait_for_listener(helpline)
        with helpline.db() as session:
            session.get(PcRequestRow, made["id"]).state = "queued"
        taken = poll.result(timeout=60)
    assert [t["payload"]["id"] for t in taken] == [made["id"]]


def test_a_poll_notes_when_its_agent_was_seen_and_refuses_a_revoked_one(helpline, clock):
    pc = helpline.enrolled_pc("pc-seen")
    helpline.ok("GET", "agent/requests", pc)
    with helpline.db() as session:
        first = session.get(Agent, pc.agent_id).last_seen_at
    clock.advance(minutes=5)  # past the last-seen interval: this poll writes it, with its nonce
    assert helpline.ok("GET", "agent/requests", pc) == []
    with helpline.db() as session:
        seen = session.get(Agent, pc.agent_id).last_seen_at
    assert first is not None and (seen - first).total_seconds() == 300
    helpline.ok("POST", f"agents/{pc.agent_id}/revoke", helpline.admin(), json={"reason": "stolen"})
    assert helpline.call("GET", "agent/requests", pc).status_code == 401
