"""Pairing a PC with a ticket: codes, their expiry by the clock, wrong codes counted and audited."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.server.conftest import CLIENT_IP, PCKey


@pytest.fixture
def server_settings(server_settings):
    """Codes that live 3 minutes, and few wrong guesses before a pause: nothing here is the default."""
    limits = server_settings.rate_limits.model_copy(update={"pairing_per_ip": 3, "pairing_window_seconds": 120})
    return server_settings.model_copy(update={"pairing_code_ttl_minutes": 3.0, "rate_limits": limits})


def pair(helpline, code: str, pc: PCKey, token: str | None = None):
    return helpline.call("POST", "pair", token, json={"code": code, **pc.signed("pair", "code", code)})


def test_a_code_expires_as_the_settings_say_and_is_single_use(helpline, clock):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    issued = helpline.pairing_code(engineer, number)
    assert datetime.fromisoformat(issued["expires_at"]) == clock() + timedelta(minutes=3)
    timeline = helpline.ok("GET", f"tickets/{number}", engineer)["timeline"]
    assert "valid 3 min," in timeline[-1]["message"]

    clock.advance(minutes=3, seconds=-1)
    answer = pair(helpline, issued["code"], PCKey("pc-1"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["ticket"]["number"] == number and answer.json()["agent"]["credential"]

    again = pair(helpline, issued["code"], PCKey("pc-2"))
    assert again.status_code == 409 and "already been used" in again.json()["error"]["message"]


def test_an_expired_code_is_refused_with_this_servers_lifetime_in_the_hint(helpline, clock):
    engineer = helpline.token()
    code = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    clock.advance(minutes=3)
    response = pair(helpline, code, PCKey("late"))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"] == "That pairing code has expired."
    assert error["hint"] == "Codes are valid for 3 min; ask your engineer for a new one."
    assert [e.details["reason"] for e in helpline.audit("pairing.refused")] == ["That pairing code has expired."]


def test_wrong_codes_are_counted_audited_and_paused_until_the_window_passes(helpline, clock):
    engineer = helpline.token()
    good = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    guesser = PCKey("guesser")
    for guess in ("AAAA-AAAA", "BBBB-BBBB", "CCCC-CCCC"):
        assert pair(helpline, guess, guesser).status_code == 401
    assert helpline.failures(f"pair-ip:{CLIENT_IP}") == 3 and helpline.failures("pair-global") == 3
    refused = helpline.audit("pairing.refused")
    assert [(e.actor_type, e.ip, e.target_id, e.details["reason"]) for e in refused] == [
        ("anonymous", CLIENT_IP, "unknown", "That pairing code is not valid.")] * 3

    # The limit is reached: even the right code waits until the window is over.
    paused = pair(helpline, good, guesser)
    assert paused.status_code == 429 and paused.json()["error"]["code"] == "rate_limited"
    assert int(paused.headers["Retry-After"]) == 120
    clock.advance(seconds=60)
    assert int(pair(helpline, good, guesser).headers["Retry-After"]) == 60
    clock.advance(seconds=60)
    assert pair(helpline, good, guesser).status_code == 200
    assert len(helpline.audit("pairing.refused")) == 3  # a paused attempt is not audited as a guess


def test_a_refused_code_keeps_its_trace(helpline, clock):
    """The count and the audit event stay; that the agent was seen is bookkeeping, kept as for any call it makes."""
    pc = helpline.enrolled_pc()
    admin = helpline.admin()
    enrolled_seen = helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"]
    clock.advance(minutes=1)  # long enough for this call to update last_seen_at
    response = pair(helpline, "AAAA-AAAA", pc.key, pc.credential)
    assert response.status_code == 401
    assert helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"] not in (None, enrolled_seen)
    [event] = helpline.audit("pairing.refused")
    assert (event.actor_type, event.actor_id) == ("agent", pc.agent_id)
    assert helpline.failures(f"pair-ip:{CLIENT_IP}") == 1


def test_an_enrolled_pc_pairs_with_its_credential_and_keeps_it(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, number)["code"]
    answer = helpline.ok("POST", "pair", pc.credential, json={"code": code, **pc.key.signed("pair", "code", code)})
    assert answer["agent"]["agent_id"] == pc.agent_id and answer["agent"]["credential"] is None
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", pc.credential)] == [number]
    assert helpline.ok("GET", f"agent/tickets/{number}", pc.credential)["number"] == number


def test_a_pc_with_a_credential_must_present_its_own_key(helpline):
    engineer = helpline.token()
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    response = pair(helpline, code, PCKey("someone-else"), pc.credential)
    assert response.status_code == 401 and "does not match" in response.json()["error"]["message"]


def test_a_ticket_the_pc_is_not_linked_to_looks_missing(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    response = helpline.call("GET", f"agent/tickets/{number}", pc.credential)
    assert response.status_code == 404 and "not linked" in response.json()["error"]["message"]
