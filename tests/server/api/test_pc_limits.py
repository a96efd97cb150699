"""What a PC may do with tickets: only enrolled PCs open them (within a cap and a rate), closed tickets take no
PC, and a PC cannot tell a ticket it is not linked to from a missing one."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from tests.server.conftest import CLIENT_IP, EnrolledPC, PCKey


@pytest.fixture
def server_settings(server_settings):
    """Two open self-service tickets per PC and three a window: nothing here is the default."""
    limits = server_settings.rate_limits.model_copy(update={"self_service_per_agent": 3, "self_service_window_seconds": 600})
    return server_settings.model_copy(update={"self_service": "enrolled", "self_service_open_per_agent": 2, "rate_limits": limits})


def pair(helpline, code: str, pc: PCKey, signer: EnrolledPC | None = None):
    return helpline.call("POST", "pair", signer, json={"code": code, **pc.signed("pair", "code", code)})


def open_ticket(helpline, pc: EnrolledPC, title: str = "The printer is offline"):
    return helpline.call("POST", "self-service/tickets", pc, json={"title": title})


def error_of(response) -> dict:
    return response.json()["error"]


def test_a_pc_that_was_only_paired_cannot_open_tickets_when_only_enrolled_pcs_may(helpline):
    engineer = helpline.token()
    code = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    visitor = PCKey("visitor-laptop")
    paired = pair(helpline, code, visitor).json()["agent"]
    paired_pc = EnrolledPC(visitor, paired["agent_id"], paired["credential"])
    response = open_ticket(helpline, paired_pc)
    assert response.status_code == 403 and "only paired" in error_of(response)["message"]
    assert [e.target_id for e in helpline.audit("self_service.refused")] == [paired["agent_id"]]
    assert helpline.ok("GET", "agent/tickets", paired_pc)[0]["number"]  # its paired ticket is untouched
    assert open_ticket(helpline, helpline.enrolled_pc()).status_code == 201


def test_one_pc_has_at_most_the_configured_open_tickets(helpline):
    engineer = helpline.token()
    pc = helpline.enrolled_pc()
    first = open_ticket(helpline, pc).json()["ticket"]["number"]
    assert open_ticket(helpline, pc).status_code == 201
    refused = open_ticket(helpline, pc)
    assert refused.status_code == 409 and "already has 2 open tickets" in error_of(refused)["message"]
    assert helpline.audit("self_service.refused")[-1].details["reason"] == "open tickets cap"
    assert open_ticket(helpline, helpline.enrolled_pc("pc-2")).status_code == 201  # other PCs are not held up
    helpline.ok("PATCH", f"tickets/{first}", engineer, json={"status": "resolved"})
    assert open_ticket(helpline, pc).status_code == 201


def test_one_pc_opens_at_most_the_configured_tickets_per_window(helpline, clock):
    engineer = helpline.token()
    pc = helpline.enrolled_pc()
    for _ in range(3):
        number = open_ticket(helpline, pc).json()["ticket"]["number"]
        helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "closed"})
    refused = open_ticket(helpline, pc)
    assert refused.status_code == 429 and "too many tickets" in error_of(refused)["message"]
    assert int(refused.headers["Retry-After"]) <= 600
    assert helpline.audit("self_service.refused")[-1].details["reason"] == "rate"
    clock.advance(seconds=600)
    assert open_ticket(helpline, pc).status_code == 201


def test_a_closed_ticket_takes_no_pc_by_code_and_the_code_is_not_spent(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "closed"})
    new_pc = pair(helpline, code, PCKey("pc-3"))
    assert new_pc.status_code == 409 and error_of(new_pc)["message"] == f"{number} is closed and takes no new PCs."
    enrolled = helpline.enrolled_pc("pc-4")
    by_enrolled = pair(helpline, code, enrolled.key, enrolled)
    assert by_enrolled.status_code == 409 and "closed" in error_of(by_enrolled)["message"]
    assert helpline.ok("GET", f"tickets/{number}", engineer)["agents"] == []
    refusals = [e for e in helpline.audit("pairing.refused") if e.details.get("reason") == "ticket closed"]
    assert refusals and all(e.target_id == number for e in refusals)
    assert helpline.failures(f"pair-addr:{CLIENT_IP}") == 0  # not a wrong guess


def test_a_pc_cannot_tell_a_ticket_it_is_not_linked_to_from_a_missing_one(helpline):
    engineer = helpline.token()
    existing = helpline.ticket(engineer, title="Payroll export fails")
    pc = helpline.enrolled_pc()
    mine = open_ticket(helpline, pc).json()["ticket"]["number"]
    missing = f"T-{int(existing[2:]) + 500}"

    def answer(number):
        response = helpline.call("GET", f"agent/tickets/{number}", pc)
        body = response.json()
        body["error"]["message"] = body["error"]["message"].replace(number, "T-N")
        return response.status_code, body

    assert answer(existing) == answer(missing)
    assert answer(existing)[0] == 404
    assert helpline.call("GET", f"agent/tickets/{mine}", pc).status_code == 200
    upload = {"filename": "bundle.tar.gz", "size": 10, "sha256": "0" * 64}
    on_existing = helpline.call("POST", f"agent/tickets/{existing}/uploads", pc, json=upload)
    on_missing = helpline.call("POST", f"agent/tickets/{missing}/uploads", pc, json=upload)
    assert on_existing.status_code == on_missing.status_code == 404
    assert error_of(on_existing)["message"].replace(existing, "T-N") == error_of(on_missing)["message"].replace(missing, "T-N")


def test_asking_for_an_existing_ticket_does_the_same_database_work_as_for_a_missing_one(helpline):
    """The same statements either way, so response times fall in one class (no extra lookup for tickets that exist)."""
    engineer = helpline.token()
    existing = helpline.ticket(engineer)
    missing = f"T-{int(existing[2:]) + 500}"
    pc = helpline.enrolled_pc()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def work(number):
        statements.clear()
        helpline.call("GET", f"agent/tickets/{number}", pc)
        return list(statements)

    work(existing)  # the credential's last-used time is written once; leave that out
    event.listen(helpline.runtime.engine, "before_cursor_execute", count)
    try:
        assert work(existing) == work(missing)
    finally:
        event.remove(helpline.runtime.engine, "before_cursor_execute", count)
