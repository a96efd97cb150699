"""Journeys: strangers guess passwords and pairing codes from many addresses; the owner and the PC still get in.

The guessers talk HTTP from other loopback addresses (127.0.x.y: other clients
to the server); the owner and the user run the real `helpline` from 127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest

from protocol import signing
from protocol.errors import ExitStatus
from protocol.schemas import AgentIdentity
from tests.support.live import ADMIN, ADMIN_PASSWORD

pytestmark = pytest.mark.e2e

GUESSERS = [f"127.0.{i}.1" for i in range(1, 13)]


def guess(server_url: str, address: str, password: str) -> int:
    """One wrong login for the admin from loopback address ``address``; the HTTP status."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(f"{server_url}/v1/auth/login", json={"username": ADMIN, "password": password}).status_code


def test_guessing_from_many_addresses_does_not_lock_the_owner_out(server_factory, make_pc):
    # Paced guesses wait a minute here, so the owner's own pace is certain to be full below.
    server = server_factory(rate_limits__login_user_slow_seconds="60")
    answers = [guess(server.url, address, f"guess-{n}-{i}") for n, address in enumerate(GUESSERS) for i in range(3)]
    # Checked: ten while the username's free failures last, one paced, then the first of each fresh address.
    assert answers.count(401) == 10 + 1 + (len(GUESSERS) - 4) and answers.count(429) == len(answers) - answers.count(401)

    owner = make_pc("owner")
    logged_in = owner.login(server)
    assert f"as {ADMIN} (admin)" in logged_in.stdout

    # The owner mistypes once: that address has now failed, so during the flood it waits its turn, in one line.
    typo = owner.run("login", server.url, "-u", ADMIN, "--password-stdin", input="not-my-password\n")
    assert typo.code == ExitStatus.AUTH
    paced = owner.run("login", server.url, "-u", ADMIN, "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert paced.code == ExitStatus.RATE_LIMITED
    assert "waits its turn" in paced.stderr and len(paced.stderr.strip().splitlines()) <= 2, paced.stderr

    events = owner.ok("audit", "--action", "auth.login_rate_limited", "--json").json()
    assert ("127.0.0.1", f"login-slow:{ADMIN}") in {(e["ip"], e["details"]["limit"]) for e in events}
    assert len(owner.ok("audit", "--action", "auth.login_failed", "--json").json()) == answers.count(401) + 1


def wrong_code(server_url: str, address: str, code: str) -> int:
    """One wrong pairing code from loopback address ``address`` (a made-up PC); the HTTP status."""
    key = signing.generate_key()
    identity = AgentIdentity(public_key=signing.public_key_b64(key), hostname="guesser", os="Linux", agent_version="x")
    body = {"code": code, "identity": identity.model_dump(),
            "signature": signing.sign(key, signing.proof_payload("pair", "code", code, identity.model_dump()))}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as client:
        return client.post(f"{server_url}/v1/pair", json=body).status_code


def test_wrong_codes_from_many_addresses_do_not_stop_a_pc_pairing(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Scanner offline", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    # 25 addresses x 10 codes: more than any one budget over all addresses could take without locking everyone.
    guessers = [f"127.1.{i}.1" for i in range(1, 26)]
    answers = [wrong_code(live_server.url, address, f"{n:04d}-{i:04d}") for n, address in enumerate(guessers) for i in range(10)]
    assert answers.count(401) + answers.count(429) == len(answers) and answers.count(429) > len(answers) / 2

    out = make_pc("user").ok("pair", code, "--server", live_server.url).stdout
    assert f"linked to ticket {number}" in out
