"""Restarting the server loses no ticket, pairing or audit event."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_restart_keeps_everything(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Survives restarts", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    token = admin_pc.ok("enroll-token", "create", "--max-uses", "3", "--json").json()["token"]
    before_ticket = admin_pc.ok("ticket", "show", number, "--json").json()
    before_audit = admin_pc.ok("audit", "--limit", "500", "--json").json()
    before_key = live_server.data_dir.joinpath("server-signing-key.pem").read_bytes()

    live_server.restart()

    assert admin_pc.ok("ticket", "show", number, "--json").json() == before_ticket  # login token still valid too
    after_audit = admin_pc.ok("audit", "--limit", "500", "--json").json()
    assert after_audit[-len(before_audit):] == before_audit
    assert user.ok("status", "--json").json()[0]["number"] == number
    assert live_server.data_dir.joinpath("server-signing-key.pem").read_bytes() == before_key
    # The token's uses are counted in the database: three uses, then it is used up.
    for name in ("a", "b", "c"):
        make_pc(name).ok("agent", "enroll", live_server.url, token)
    assert make_pc("d").run("agent", "enroll", live_server.url, token).code != 0
    # The PC that paired before the restart still trusts the same server key.
    number2 = admin_pc.ok("ticket", "create", "Second", "--json").json()["number"]
    code2 = admin_pc.ok("ticket", "pair-code", number2, "--json").json()["code"]
    user.ok("pair", code2)
