"""Pairing a PC with a ticket: codes, their expiry by the clock, wrong codes counted, limited and audited.

Nobody can stop others pairing: only an address's own wrong codes refuse it;
addresses that failed before are slowed together, and one without failures
is never held up, whatever the flood (docs/threat-model.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fastapi.testclient import TestClient

from tests.server.conftest import CLIENT_IP, EnrolledPC, PCKey


@pytest.fixture
def server_settings(server_settings):
    """Codes that live 3 minutes, and few wrong guesses before a pause: nothing here is the default."""
    limits = server_settings.rate_limits.model_copy(update={"pairing_per_address": 3, "pairing_window_seconds": 120})
    return server_settings.model_copy(update={"pairing_code_ttl_minutes": 3.0, "rate_limits": limits})


def pair(helpline, code: str, pc: PCKey, token: EnrolledPC | None = None):
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
        clock.advance(seconds=1)  # past the one-a-second pace of addresses that failed before
    assert helpline.failures(f"pair-addr:{CLIENT_IP}") == 3
    refused = helpline.audit("pairing.refused")
    assert [(e.actor_type, e.ip, e.target_id, e.details["reason"]) for e in refused] == [
        ("anonymous", CLIENT_IP, "unknown", "That pairing code is not valid.")] * 3

    # This address's limit is reached: even the right code from it waits until the window is over.
    paused = pair(helpline, good, guesser)
    assert paused.status_code == 429 and paused.json()["error"]["code"] == "rate_limited"
    assert paused.json()["error"]["message"] == "Too many failed pairing attempts from this address."
    assert int(paused.headers["Retry-After"]) == 120 - 3
    clock.advance(seconds=60)
    assert int(pair(helpline, good, guesser).headers["Retry-After"]) == 60 - 3
    clock.advance(seconds=60 - 3)
    assert pair(helpline, good, guesser).status_code == 200
    assert len(helpline.audit("pairing.refused")) == 3  # a paused attempt is not audited as a guess ...
    [paused_event] = helpline.audit("pairing.rate_limited")  # ... but the pause is, once per window
    assert (paused_event.ip, paused_event.details["limit"]) == (CLIENT_IP, f"pair-addr:{CLIENT_IP}")
    assert helpline.failures(f"refused:pair-addr:{CLIENT_IP}@{CLIENT_IP}") == 2


def test_a_refused_code_keeps_its_trace(helpline, clock):
    """The count and the audit event stay; that the agent was seen is bookkeeping, kept as for any call it makes."""
    pc = helpline.enrolled_pc()
    admin = helpline.admin()
    enrolled_seen = helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"]
    clock.advance(minutes=1)  # long enough for this call to update last_seen_at
    response = pair(helpline, "AAAA-AAAA", pc.key, pc)
    assert response.status_code == 401
    assert helpline.ok("GET", f"agents/{pc.agent_id}", admin)["last_seen_at"] not in (None, enrolled_seen)
    [event] = helpline.audit("pairing.refused")
    assert (event.actor_type, event.actor_id) == ("agent", pc.agent_id)
    assert helpline.failures(f"pair-addr:{CLIENT_IP}") == 1


def test_an_enrolled_pc_pairs_as_itself_and_keeps_its_agent(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, number)["code"]
    answer = helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    assert answer["agent"]["agent_id"] == pc.agent_id and answer["agent"]["credential"] is None
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", pc)] == [number]
    assert helpline.ok("GET", f"agent/tickets/{number}", pc)["number"] == number


def test_a_signed_pc_must_present_its_own_key(helpline):
    engineer = helpline.token()
    pc = helpline.enrolled_pc()
    code = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    response = pair(helpline, code, PCKey("someone-else"), pc)
    assert response.status_code == 401 and "does not match" in response.json()["error"]["message"]


def test_a_ticket_the_pc_is_not_linked_to_looks_missing(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    pc = helpline.enrolled_pc()
    response = helpline.call("GET", f"agent/tickets/{number}", pc)
    assert response.status_code == 404 and "not linked" in response.json()["error"]["message"]


def caller(helpline, ip: str):
    """Requests to the in-process server from client address ``ip``."""
    client = TestClient(helpline.http.app, raise_server_exceptions=False, client=(ip, 50000))

    def pair_from(code: str, pc: PCKey):
        return client.post("/v1/pair", json={"code": code, **pc.signed("pair", "code", code)})

    return pair_from


def flood(helpline, addresses: list[str], per_address: int) -> dict[int, int]:
    """``per_address`` wrong codes from each of ``addresses`` (all within one second); the answers by status."""
    answers: dict[int, int] = {}
    attacker = PCKey("attacker")
    for n, ip in enumerate(addresses):
        send = caller(helpline, ip)
        for i in range(per_address):
            status = send(f"{n:04d}-{i:04d}", attacker).status_code
            answers[status] = answers.get(status, 0) + 1
    return answers


def test_a_flood_of_wrong_codes_from_many_addresses_does_not_stop_a_pc_pairing(helpline, clock):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    ipv4 = [f"198.51.100.{i}" for i in range(1, 21)]
    one_site = [f"2001:db8:aa:{i:x}::7" for i in range(30)]  # 30 /64s in one /48
    many_sites = [f"2001:db8:{i + 0x100:x}:1::1" for i in range(20)]  # 20 /48s
    answers = flood(helpline, ipv4 + one_site + many_sites, per_address=5)
    sent = 5 * (20 + 30 + 20)
    # Checked: each address's first code while its /48 is still clean, and one a second from addresses that
    # failed before; the rest waited a second without being checked.
    checked = 20 + 10 + 20 + 1
    assert answers == {401: checked, 429: sent - checked}
    assert len(helpline.audit("pairing.refused")) == checked

    # In the same second: a PC on an address without failures (IPv4 in the flooders' /24, IPv6 elsewhere) pairs.
    for ip, name in (("198.51.100.200", "pc-v4"), ("2001:db8:ff:1::20", "pc-v6")):
        code = helpline.pairing_code(engineer, number)["code"]
        answer = caller(helpline, ip)(code, PCKey(name))
        assert answer.status_code == 200, answer.text
    assert len(helpline.ok("GET", f"tickets/{number}", engineer)["agents"]) == 2

    # Addresses that failed are still held to their own limit, however many seconds pass.
    send = caller(helpline, "198.51.100.1")
    good = helpline.pairing_code(engineer, number)["code"]
    assert helpline.failures("pair-addr:198.51.100.1") == 2  # its first code, and the first paced one
    clock.advance(seconds=1)
    assert send("QQQQ-QQQQ", PCKey("attacker")).status_code == 401
    clock.advance(seconds=1)
    refused = send(good, PCKey("attacker"))
    assert refused.status_code == 429 and "from this address" in refused.json()["error"]["message"]
    assert helpline.failures("pair-addr:198.51.100.1") == 3


def test_addresses_that_failed_before_are_slowed_together_not_locked(helpline, clock):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    mistyped = caller(helpline, "203.0.113.5")
    assert mistyped("AAAA-AAAA", PCKey("user")).status_code == 401
    flood(helpline, [f"192.0.2.{i}" for i in range(100, 110)], per_address=2)  # fills this second's pace
    code = helpline.pairing_code(engineer, number)["code"]
    waiting = mistyped(code, PCKey("user"))
    assert waiting.status_code == 429 and waiting.headers["Retry-After"] == "1"
    assert "waits its turn" in waiting.json()["error"]["message"]
    # Each address the pace refused is audited once a second: the flooders' second tries (the first of them
    # was this second's paced try, and checked), then this one.
    paced = [(e.ip, e.details["limit"]) for e in helpline.audit("pairing.rate_limited")]
    assert paced == [(f"192.0.2.{i}", "pair-suspects") for i in range(101, 110)] + [("203.0.113.5", "pair-suspects")]
    clock.advance(seconds=1)
    assert mistyped(code, PCKey("user")).status_code == 200


def test_an_ipv6_site_counts_as_one_once_it_has_failed_often(helpline, clock):
    """Rotating through the /64s of one /48 gains an attacker ten unpaced guesses a window, not 65,536."""
    site = [f"2001:db8:5:{i:x}::1" for i in range(40)]
    answers = flood(helpline, site, per_address=1)
    assert answers == {401: helpline.settings.rate_limits.pairing_network_clean + 1, 429: 40 - 11}
    assert helpline.failures("pair-net:2001:db8:5::/48") == 11
    assert helpline.failures("pair-addr:2001:db8:5::/64") == 1


def test_the_number_of_live_codes_is_capped(helpline, clock):
    helpline.runtime.settings = helpline.settings.model_copy(update={
        "rate_limits": helpline.settings.rate_limits.model_copy(update={"pairing_live_codes": 2})})
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    first = helpline.pairing_code(engineer, number)["code"]
    clock.advance(seconds=30)
    helpline.pairing_code(engineer, number)
    refused = helpline.call("POST", f"tickets/{number}/pairing-codes", engineer)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(3 * 60 - 30)
    assert "2 pairing codes waiting to be used" in refused.json()["error"]["message"]
    assert [e.action for e in helpline.audit("pairing_code.refused")] == ["pairing_code.refused"]
    assert caller(helpline, "192.0.2.77")(first, PCKey("pc")).status_code == 200  # a used code is no longer live
    helpline.pairing_code(engineer, number)
