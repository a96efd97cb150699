"""Short ids and host names for agents, and hints worded for the role of whoever asked."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from protocol.schemas import Role
from server.models import Agent
from tests.server.conftest import PCKey


def _set_agent_id(helpline, old: str, new: str) -> None:
    with helpline.db() as session:
        session.execute(update(Agent).where(Agent.id == old).values(id=new))


@pytest.fixture
def fleet(helpline):
    """Three PCs with chosen ids: two share the start 'abcd12', one host name is used twice."""
    ids = {"laptop-7": "abcd1234-0000-4000-8000-000000000001", "desk-2": "abcd12ff-0000-4000-8000-000000000002",
           "kiosk": "0f0f0f0f-0000-4000-8000-000000000003"}
    for host, wanted in ids.items():
        _set_agent_id(helpline, helpline.enrolled_pc(host).agent_id, wanted)
    return ids


def test_an_agent_is_found_by_a_unique_start_of_its_id_or_by_host_name(helpline, fleet):
    engineer = helpline.token(Role.ENGINEER)
    assert helpline.ok("GET", "agents/abcd1234", engineer)["hostname"] == "laptop-7"
    assert helpline.ok("GET", "agents/ABCD12F", engineer)["hostname"] == "desk-2"
    assert helpline.ok("GET", "agents/Kiosk", engineer)["id"] == fleet["kiosk"]
    assert helpline.ok("GET", f"agents/{fleet['desk-2']}", engineer)["hostname"] == "desk-2"


def test_an_ambiguous_start_lists_the_candidates_on_one_line(helpline, fleet):
    engineer = helpline.token(Role.ENGINEER)
    answer = helpline.call("GET", "agents/abcd", engineer)
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "ambiguous"
    assert error["message"] == "'abcd' matches 2 agents: abcd12ff (desk-2), abcd1234 (laptop-7)."
    assert "\n" not in error["message"] and error["hint"]


def test_two_pcs_with_one_host_name_are_ambiguous(helpline, fleet):
    helpline.enrolled_pc("kiosk")
    answer = helpline.call("GET", "agents/kiosk", helpline.token(Role.ENGINEER))
    assert answer.status_code == 409 and "matches 2 agents" in answer.json()["error"]["message"]


def test_too_short_or_unknown_references_find_nothing(helpline, fleet):
    engineer = helpline.token(Role.ENGINEER)
    for reference in ("abc", "ffff", "no-such-host"):
        answer = helpline.call("GET", f"agents/{reference}", engineer)
        assert answer.status_code == 404, reference
        assert "`helpline agent list`" in answer.json()["error"]["hint"]


def test_resolution_needs_an_account(helpline, fleet):
    answer = helpline.call("GET", "agents/abcd")
    assert answer.status_code == 401 and "abcd" not in answer.text
    pc = helpline.enrolled_pc("spy")
    assert helpline.call("GET", "agents/abcd", pc.credential).status_code == 401


def test_a_missing_ticket_hint_fits_the_reader(helpline):
    engineer = helpline.token(Role.ENGINEER)
    hint = helpline.call("GET", "tickets/T-9999", engineer).json()["error"]["hint"]
    assert "`helpline ticket list`" in hint
    pc = helpline.enrolled_pc("user-pc")
    hint = helpline.call("GET", "agent/tickets/T-9999", pc).json()["error"]["hint"]
    assert "helpline ticket" not in hint and "`helpline status`" in hint


def test_an_unknown_account_is_listed_for_admins_only(helpline):
    engineer, admin = helpline.token(Role.ENGINEER), helpline.admin()
    number = helpline.ticket(engineer)
    for token, listed in ((engineer, False), (admin, True)):
        answer = helpline.call("PATCH", f"tickets/{number}", token, json={"assignee": "ghost"})
        assert answer.status_code == 404
        assert ("`helpline account list`" in answer.json()["error"]["hint"]) is listed


def test_a_wait_is_said_as_a_duration(helpline):
    for _ in range(12):
        answer = helpline.call("POST", "auth/login", json={"username": "nobody", "password": "wrong-password-1"})
        if answer.status_code == 429:
            break
    assert answer.status_code == 429
    hint = answer.json()["error"]["hint"]
    assert "seconds" not in hint and ("min" in hint or " s " in hint), hint


def test_a_refused_enrollment_does_not_use_up_the_token(helpline):
    admin = helpline.admin()
    pc = helpline.enrolled_pc("revoked-pc")
    with helpline.db() as session:
        session.execute(update(Agent).where(Agent.id == pc.agent_id).values(revoked_at=helpline.clock()))
    created = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", "max_uses": 1})
    token = created["token"]
    refused = helpline.call("POST", "agents/enroll", json={"token": token, **pc.key.signed("enroll", "token", token)})
    assert refused.status_code in (401, 403)
    [listed] = [t for t in helpline.ok("GET", "enrollment-tokens", admin) if t["id"] == created["id"]]
    assert listed["uses"] == 0
    fresh = PCKey("fresh")
    assert helpline.call("POST", "agents/enroll", json={"token": token, **fresh.signed("enroll", "token", token)}).status_code == 200
