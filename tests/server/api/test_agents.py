"""Enrollment: bootstrap tokens, their expiry by the clock, refusals counted and audited."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from server.security import TOKEN_PREFIX_ENROLL
from tests.server.conftest import CLIENT_IP, PCKey


@pytest.fixture
def server_settings(server_settings):
    limits = server_settings.rate_limits.model_copy(update={"enroll_per_ip": 2, "enroll_window_seconds": 300})
    return server_settings.model_copy(update={"rate_limits": limits})


def enroll(helpline, token: str, pc: PCKey):
    return helpline.call("POST", "agents/enroll", json={"token": token, **pc.signed("enroll", "token", token)})


def test_enrollment_registers_the_pc_in_the_tokens_group(helpline, clock):
    admin = helpline.admin()
    created = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", "expires_in_hours": 2, "max_uses": 1})
    assert datetime.fromisoformat(created["expires_at"]) == clock() + timedelta(hours=2)
    answer = enroll(helpline, created["token"], PCKey("lab-1"))
    assert answer.status_code == 200, answer.text
    agent = helpline.ok("GET", f"agents/{answer.json()['agent_id']}", admin)
    assert (agent["hostname"], agent["group"], agent["enrolled"]) == ("lab-1", "lab", True)
    assert datetime.fromisoformat(agent["created_at"]) == clock()
    [listed] = helpline.ok("GET", "enrollment-tokens", admin)
    assert listed["uses"] == 1 and datetime.fromisoformat(listed["last_used_at"]) == clock()
    [event] = helpline.audit("agent.enroll")
    assert event.details["group"] == "lab" and event.details["new"] is True


def test_an_expired_or_used_up_token_is_refused_and_the_refusal_kept(helpline, clock):
    admin = helpline.admin()
    token = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", "expires_in_hours": 1, "max_uses": 1})["token"]
    assert enroll(helpline, token, PCKey("first")).status_code == 200
    used_up = enroll(helpline, token, PCKey("second"))
    assert used_up.status_code == 401 and used_up.json()["error"]["message"] == "That enrollment token has been used up."
    assert helpline.failures(f"enroll-ip:{CLIENT_IP}") == 1

    other = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", "expires_in_hours": 1})["token"]
    clock.advance(hours=1)
    expired = enroll(helpline, other, PCKey("third"))
    assert expired.json()["error"]["message"] == "That enrollment token has expired."

    refused = helpline.audit("agent.enroll_refused")
    assert [(e.details["hostname"], e.details["reason"]) for e in refused] == [
        ("second", "That enrollment token has been used up."), ("third", "That enrollment token has expired.")]
    assert helpline.failures(f"enroll-ip:{CLIENT_IP}") == 1  # an hour later: a new window
    assert [a["hostname"] for a in helpline.ok("GET", "agents", admin)] == ["first"]


def test_refusals_pause_enrollment_from_the_address_for_the_window(helpline, clock):
    for _ in range(2):
        assert enroll(helpline, TOKEN_PREFIX_ENROLL + "not-a-token", PCKey("guess")).status_code == 401
    token = helpline.ok("POST", "enrollment-tokens", helpline.admin(), json={"group": "lab"})["token"]
    paused = enroll(helpline, token, PCKey("real"))
    assert paused.status_code == 429 and paused.headers["Retry-After"] == "300"
    clock.advance(minutes=5)
    assert enroll(helpline, token, PCKey("real")).status_code == 200


def test_a_revoked_token_is_refused(helpline):
    admin = helpline.admin()
    created = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab"})
    assert helpline.ok("DELETE", f"enrollment-tokens/{created['id']}", admin)["revoked"] is True
    response = enroll(helpline, created["token"], PCKey("late"))
    assert response.json()["error"]["message"] == "That enrollment token has been revoked."


def test_a_request_not_signed_by_the_registered_key_is_refused_without_using_the_token(helpline):
    admin = helpline.admin()
    token = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", "max_uses": 1})["token"]
    pc, impostor = PCKey("pc"), PCKey("pc")
    body = {"token": token, "identity": pc.identity, "signature": impostor.signed("enroll", "token", token)["signature"]}
    response = helpline.call("POST", "agents/enroll", json=body)
    assert response.status_code == 401 and "not signed" in response.json()["error"]["message"]
    assert helpline.ok("GET", "enrollment-tokens", admin)[0]["uses"] == 0
    assert enroll(helpline, token, pc).status_code == 200
