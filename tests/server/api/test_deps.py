"""The request dependencies: tokens (missing, wrong kind, expired, revoked), roles and signed agent requests."""

from __future__ import annotations

from datetime import datetime

from protocol.schemas import Role
from server.security import TOKEN_PREFIX_USER


def error_of(response) -> dict:
    return response.json()["error"]


def test_a_request_without_a_token_is_unauthenticated(helpline):
    response = helpline.call("GET", "me")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response)["message"] == "This request needs a token."


def test_an_unknown_token_and_a_token_of_the_wrong_kind_are_refused(helpline):
    assert error_of(helpline.call("GET", "me", TOKEN_PREFIX_USER + "x" * 40))["message"] == "Your token is not valid."
    pc = helpline.enrolled_pc()
    response = helpline.call("GET", "me", pc.credential)
    assert response.status_code == 401 and "engineer's or admin's token" in error_of(response)["message"]


def test_a_token_works_until_it_expires_by_the_clock(helpline, clock):
    token = helpline.token()
    clock.advance(hours=helpline.settings.token_ttl_hours, seconds=-1)
    assert helpline.ok("GET", "me", token)["role"] == "engineer"
    clock.advance(seconds=1)
    response = helpline.call("GET", "me", token)
    assert response.status_code == 401 and error_of(response)["message"] == "Your token has expired."


def test_login_answers_with_an_expiry_from_the_clock_and_settings(helpline, clock):
    username = helpline.account()
    answer = helpline.ok("POST", "auth/login", json={"username": username, "password": "a-password-for-tests"})
    expected = clock().timestamp() + helpline.settings.token_ttl_hours * 3600
    assert datetime.fromisoformat(answer["expires_at"]).timestamp() == expected


def test_a_revoked_token_is_refused(helpline):
    token = helpline.token()
    helpline.ok("POST", "auth/logout", token)
    response = helpline.call("GET", "me", token)
    assert response.status_code == 401 and error_of(response)["message"] == "Your token is not valid."


def test_a_disabled_account_token_is_refused_for_good(helpline):
    admin = helpline.admin()
    username = helpline.account()
    token = helpline.ok("POST", "auth/login", json={"username": username, "password": "a-password-for-tests"})["token"]
    helpline.ok("PATCH", f"accounts/{username}", admin, json={"disabled": True})
    response = helpline.call("GET", "me", token)
    assert response.status_code == 401 and error_of(response)["message"] == "Your token is not valid."  # revoked


def test_admin_routes_need_the_admin_role(helpline):
    engineer = helpline.token(Role.ENGINEER)
    response = helpline.call("GET", "accounts", engineer)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    assert helpline.call("GET", "accounts", helpline.admin()).status_code == 200


def test_agent_routes_need_a_request_signed_by_the_agent(helpline):
    response = helpline.call("GET", "agent/tickets", helpline.token())
    assert response.status_code == 401 and "not signed with this PC's key" in error_of(response)["message"]
    pc = helpline.enrolled_pc()
    assert helpline.ok("GET", "agent/tickets", pc) == []


def test_an_agent_is_seen_when_it_calls_at_most_once_a_minute(helpline, clock):
    pc = helpline.enrolled_pc()
    admin = helpline.admin()
    enrolled_at = datetime.fromisoformat(helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"])
    assert enrolled_at == clock()
    clock.advance(seconds=40)
    helpline.ok("GET", "agent/tickets", pc)
    assert datetime.fromisoformat(helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"]) == enrolled_at
    clock.advance(seconds=20)
    helpline.ok("GET", "agent/tickets", pc)
    assert datetime.fromisoformat(helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"]) == clock()
