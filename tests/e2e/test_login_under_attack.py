"""Journey: strangers guess an admin's password from many addresses; the admin still logs in with the CLI.

The guessers talk HTTP from other loopback addresses (127.0.x.y: other clients
to the server); the owner runs the real `helpline login` from 127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest

from protocol.errors import ExitStatus
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
