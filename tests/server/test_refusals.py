"""Refusals keep their trace and nothing else, whoever ends the session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from protocol.errors import AuthError, RateLimitedError
from protocol.schemas import Role
from server import logins
from server.audit import Actor, record
from server.models import ApiToken, AuditEvent, RateLimitWindow
from server.refusals import keep_trace, refusal, roll_back
from tests.server.conftest import CLIENT_IP, PASSWORD

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_roll_back_keeps_only_the_traces(runtime):
    session = runtime.sessions()
    try:
        record(session, Actor.system("tests"), "work.done", "thing", 1)  # the request's own work
        problem = refusal(session, AuthError("No."), actor=Actor.anonymous("192.0.2.1"), action="thing.refused",
                          target_type="thing", target_id=2, counted=[("thing-ip:192.0.2.1", 60)], now=NOW, reason="No.")
        assert isinstance(problem, AuthError) and problem.message == "No."
        roll_back(session)
    finally:
        session.close()
    with runtime.sessions() as session:
        assert [e.action for e in session.scalars(select(AuditEvent))] == ["thing.refused"]
        window = session.get(RateLimitWindow, "thing-ip:192.0.2.1")
        assert (window.count, window.window_start) == (1, NOW)


def test_a_trace_is_written_at_once_and_once_only_when_the_work_commits(runtime):
    writes = []

    def write(session) -> None:
        writes.append(1)
        record(session, Actor.system("tests"), "noted", "thing", 1)

    with runtime.sessions() as session:
        keep_trace(session, write)
        assert count(session, AuditEvent) == 1  # visible to the rest of the request
        session.commit()
    with runtime.sessions() as session:
        assert count(session, AuditEvent) == 1 and writes == [1]


def test_roll_back_without_traces_is_a_plain_rollback(runtime):
    with runtime.sessions() as session:
        record(session, Actor.system("tests"), "work.done", "thing", 1)
        roll_back(session)
        assert count(session, AuditEvent) == 0


def test_failed_logins_are_counted_through_the_service_and_then_paused(runtime, helpline):
    username = helpline.account(Role.ENGINEER)
    limits = runtime.settings.rate_limits
    for _ in range(limits.login_per_user_address):
        session = runtime.sessions()
        with pytest.raises(AuthError):
            logins.log_in(session, runtime.settings, CLIENT_IP, username.upper(), "wrong-password", "cli", now=NOW)
        roll_back(session)
        session.close()
    with runtime.sessions() as session:
        assert session.get(RateLimitWindow, f"login-ua:{username}:{CLIENT_IP}").count == limits.login_per_user_address
        assert session.get(RateLimitWindow, f"login-user:{username}").count == limits.login_per_user_address
        assert count(session, AuditEvent) - 1 == limits.login_per_user_address  # and account.create
        with pytest.raises(RateLimitedError):
            logins.log_in(session, runtime.settings, CLIENT_IP, username, PASSWORD, "cli", now=NOW)
    with runtime.sessions() as session:
        assert count(session, ApiToken) == 0


def test_a_failed_login_through_the_api_is_audited_by_name(helpline):
    response = helpline.call("POST", "auth/login", json={"username": "Nobody", "password": "wrong-password"})
    assert response.status_code == 401
    [event] = helpline.audit("auth.login_failed")
    assert (event.actor_type, event.target_id, event.ip) == ("anonymous", "nobody", CLIENT_IP)
    assert helpline.failures("login-user:nobody") == 1 and helpline.failures(f"login-addr:{CLIENT_IP}") == 1
    assert helpline.failures(f"login-ua:nobody:{CLIENT_IP}") == 1
