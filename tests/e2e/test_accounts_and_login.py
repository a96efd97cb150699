"""Journey 1 and 2 (login): the first admin, engineer accounts, logging in and the refusals."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ADMIN, ADMIN_PASSWORD, ENGINEER_PASSWORD, create_engineer

pytestmark = pytest.mark.e2e

def test_first_admin_logs_in_and_creates_an_engineer(live_server, make_pc):
    admin = make_pc("admin")
    out = admin.login(live_server).stdout
    assert f"as {ADMIN} (admin)" in out
    creds = admin.config_dir / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert ADMIN_PASSWORD not in creds.read_text()

    create_engineer(admin)
    accounts = admin.ok("account", "list", "--json").json()
    assert {a["username"]: a["role"] for a in accounts} == {ADMIN: "admin", "alice": "engineer"}
    assert all("password" not in json.dumps(a) for a in accounts)

    engineer = make_pc("engineer")
    assert "as alice (engineer)" in engineer.login(live_server, "alice", ENGINEER_PASSWORD).stdout
    assert engineer.ok("whoami", "--json").json()["role"] == "engineer"


def test_wrong_password_is_refused(live_server, make_pc):
    pc = make_pc("someone")
    result = pc.run("login", live_server.url, "-u", ADMIN, "--password-stdin", input="not-the-password\n")
    assert result.code == ExitStatus.AUTH
    assert "Wrong username or password" in result.stderr
    unknown = pc.run("login", live_server.url, "-u", "nobody", "--password-stdin", input="whatever-password\n")
    assert unknown.code == ExitStatus.AUTH
    assert unknown.stderr == result.stderr  # no hint about which usernames exist
    assert not (pc.config_dir / "credentials.json").exists()


def test_login_is_rate_limited_per_user(server_factory, make_pc):
    server = server_factory(rate_limits__login_per_user_address="3")
    pc = make_pc("guesser")
    for _ in range(3):
        assert pc.run("login", server.url, "-u", ADMIN, "--password-stdin", input="wrong-guess\n").code == ExitStatus.AUTH
    # Even the right password is refused from this address while its pause lasts (other addresses: test_guessing_locks_nobody_out).
    locked = pc.run("login", server.url, "-u", ADMIN, "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert locked.code == ExitStatus.RATE_LIMITED
    assert "Too many failed login attempts" in locked.stderr


def test_missing_and_expired_tokens(server_factory, make_pc):
    server = server_factory(token_ttl_hours="0.002")  # 7.2 s
    pc = make_pc("admin")
    not_logged_in = pc.run("ticket", "list")
    assert not_logged_in.code == ExitStatus.CONFIG
    assert "not logged in" in not_logged_in.stderr

    pc.login(server)
    assert pc.run("ticket", "list").code == 0
    import time
    from datetime import UTC, datetime

    expires = datetime.fromisoformat(json.loads((pc.config_dir / "credentials.json").read_text())["expires_at"])
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    expired = pc.run("ticket", "list")
    assert expired.code == ExitStatus.AUTH
    assert "expired" in expired.stderr
    assert "`helpline login`" in expired.stderr  # no URL needed: login reuses the saved server
    # The hint works as it says: the saved server and account are reused.
    again = pc.run("login", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert again.code == 0, again.stderr
    assert server.url in again.stdout and ADMIN in again.stdout
    assert pc.run("ticket", "list").code == 0

    # The API itself refuses a request without a token.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/v1/tickets", timeout=5)
    assert err.value.code == 401
    assert json.loads(err.value.read())["error"]["code"] == "unauthenticated"


def test_engineer_cannot_do_admin_work(live_server, admin_pc, make_pc):
    create_engineer(admin_pc)
    engineer = make_pc("engineer")
    engineer.login(live_server, "alice", ENGINEER_PASSWORD)
    for args in (["enroll-token", "create"], ["account", "list"], ["audit"]):
        result = engineer.run(*args)
        assert result.code == ExitStatus.FORBIDDEN, args
        assert "admin role" in result.stderr
    denied = engineer.run("account", "create", "mallory", "--role", "admin", "--password-stdin", input="a strong enough passphrase\n")
    assert denied.code == ExitStatus.FORBIDDEN


def test_no_unauthenticated_setup_route(live_server):
    body = json.dumps({"username": "intruder", "password": "p" * 20, "role": "admin"}).encode()
    request = urllib.request.Request(f"{live_server.url}/v1/accounts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 401
    spec = json.loads(urllib.request.urlopen(f"{live_server.url}/openapi.json", timeout=5).read())
    assert not any("setup" in path or "init" in path for path in spec["paths"])


def test_logout_revokes_the_token(live_server, admin_pc):
    token = json.loads((admin_pc.config_dir / "credentials.json").read_text())["token"]
    admin_pc.ok("logout")
    request = urllib.request.Request(f"{live_server.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 401
