"""Logging in under attack: brute force stays bounded, and nobody can keep an account's owner out.

Only an address's own wrong passwords refuse it (for that username, or for
all); once a username has had a few wrong passwords, addresses that failed for
it before are paced together, and an address without failures is always
checked, so the right password from it is always accepted (docs/threat-model.md).
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient

from protocol.schemas import Role
from tests.server.conftest import PASSWORD


def login_from(helpline, ip: str):
    """Logins sent to the in-process server from client address ``ip``."""
    client = TestClient(helpline.http.app, raise_server_exceptions=False, client=(ip, 50000))
    return lambda username, password: client.post("/v1/auth/login", json={"username": username, "password": password})


def flood(helpline, username: str, addresses: list[str], per_address: int) -> dict[int, int]:
    """``per_address`` wrong passwords for ``username`` from each of ``addresses``; the answers by status."""
    answers: dict[int, int] = {}
    for n, ip in enumerate(addresses):
        send = login_from(helpline, ip)
        for i in range(per_address):
            status = send(username, f"guess-{n}-{i}-password").status_code
            answers[status] = answers.get(status, 0) + 1
    return answers


def test_the_owner_logs_in_during_a_wrong_password_flood_from_other_addresses(helpline, clock):
    owner = helpline.account(Role.ADMIN)
    limits = helpline.settings.rate_limits
    ipv4 = [f"198.51.100.{i}" for i in range(1, 41)]
    one_site = [f"2001:db8:aa:{i:x}::7" for i in range(20)]  # 20 /64s in one /48
    many_sites = [f"2001:db8:{i + 0x100:x}:1::1" for i in range(10)]  # 10 /48s
    answers = flood(helpline, owner, ipv4 + one_site + many_sites, per_address=12)
    sent = 12 * (40 + 20 + 10)
    # Checked (all in one second): the first address's ten before the username's free ten run out, then the
    # first try of each address without failures (ten /64s of the site, then the site counts as failed), and
    # one paced try from addresses that failed before. The rest waited without their password being checked.
    checked = limits.login_per_user_free + 39 + 1 + limits.login_network_clean + 10
    assert answers == {401: checked, 429: sent - checked}
    assert len(helpline.audit("auth.login_failed")) == checked

    # The owner, on an address without failures (even in the flooders' /24, or by IPv6), gets in at once.
    for ip in ("198.51.100.200", "2001:db8:ff:1::20"):
        answer = login_from(helpline, ip)(owner, PASSWORD)
        assert answer.status_code == 200, answer.text
        assert answer.json()["account"]["role"] == "admin"

    # Over a day the flooders' pace is one guess per login_user_slow_seconds for the username, whatever they send.
    before = len(helpline.audit("auth.login_failed"))
    for _ in range(4):
        clock.advance(seconds=limits.login_user_slow_seconds)
        flood(helpline, owner, ipv4[20:30], per_address=1)
    assert len(helpline.audit("auth.login_failed")) - before == 4


def test_an_address_that_failed_too_often_waits_for_that_username_and_others_do_not(helpline, clock):
    owner, other = helpline.account(Role.ENGINEER), helpline.account(Role.ENGINEER)
    limits = helpline.settings.rate_limits
    guesser = login_from(helpline, "203.0.113.9")
    for i in range(limits.login_per_user_address):
        assert guesser(owner, f"wrong-password-{i}").status_code == 401
    clock.advance(seconds=100)
    refused = guesser(owner, PASSWORD)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["message"] == "Too many failed login attempts for this username from this address."
    assert int(refused.headers["Retry-After"]) == limits.login_window_seconds - 100
    assert guesser(other, PASSWORD).status_code == 200  # the same address, another username
    assert login_from(helpline, "203.0.113.10")(owner, PASSWORD).status_code == 200  # the owner, elsewhere
    [event] = helpline.audit("auth.login_rate_limited")
    assert (event.target_id, event.ip, event.details["limit"]) == (owner, "203.0.113.9", f"login-ua:{owner}:203.0.113.9")
    clock.advance(seconds=limits.login_window_seconds - 100)
    assert guesser(owner, PASSWORD).status_code == 200


def test_one_address_guessing_many_usernames_is_stopped(helpline):
    limits = helpline.settings.rate_limits
    sprayer = login_from(helpline, "2001:db8:77:1::5")
    for i in range(limits.login_per_address):
        assert sprayer(f"user-{i}", "wrong-password").status_code == 401
    # Another address in the same /64 is the same client; one in another /64 is not.
    refused = login_from(helpline, "2001:db8:77:1::6")("someone-else", "wrong-password")
    assert refused.status_code == 429 and "from this address" in refused.json()["error"]["message"]
    assert login_from(helpline, "2001:db8:77:2::5")("someone-else", "wrong-password").status_code == 401


def test_an_owner_who_mistyped_during_a_flood_waits_seconds_not_minutes(helpline, clock):
    owner = helpline.account(Role.ADMIN)
    limits = helpline.settings.rate_limits
    mine = login_from(helpline, "192.0.2.44")
    assert mine(owner, "a-typo-in-my-password").status_code == 401
    flood(helpline, owner, [f"198.51.100.{i}" for i in range(1, 20)], per_address=2)
    waiting = mine(owner, PASSWORD)
    assert waiting.status_code == 429 and "waits its turn" in waiting.json()["error"]["message"]
    assert 1 <= int(waiting.headers["Retry-After"]) <= limits.login_user_slow_seconds
    clock.advance(seconds=int(waiting.headers["Retry-After"]))
    assert mine(owner, PASSWORD).status_code == 200


def test_unknown_usernames_get_the_same_answers(helpline):
    real = helpline.account(Role.ENGINEER)
    send = login_from(helpline, "192.0.2.50")
    answers = [send(name, "wrong-password").json()["error"] for name in (real, "nobody-by-that-name")]
    assert answers[0] == answers[1]



def test_attempts_arriving_at_once_are_each_counted_before_the_next_is_checked(helpline):
    """A burst from one address gets no more password checks than the limit: each attempt is counted first."""
    helpline.runtime.settings = helpline.settings.model_copy(update={
        "rate_limits": helpline.settings.rate_limits.model_copy(update={"login_per_user_address": 3})})
    owner = helpline.account(Role.ENGINEER)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=helpline.http.app, client=("203.0.113.77", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://helpline") as client:
            answers = await asyncio.wait_for(asyncio.gather(*(
                client.post("/v1/auth/login", json={"username": owner, "password": f"wrong-password-{i}"})
                for i in range(12))), timeout=120)
        return [a.status_code for a in answers]

    assert sorted(asyncio.run(burst())) == [401] * 3 + [429] * 9
    assert helpline.failures(f"login-ua:{owner}:203.0.113.77") == 3
    assert login_from(helpline, "203.0.113.78")(owner, PASSWORD).status_code == 200
    assert helpline.failures(f"login-user:{owner}") == 3  # the right password gave its count back
