"""Engineers' logins through the real CLI: listing and revoking tokens, changing one's password, weak passwords."""

from __future__ import annotations

import re

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, create_engineer

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "staple battery horse correct"
# A time with its day and zone, as `token list` shows it: "Wed 02 Dec 2026 09:00 UTC".
FULL_TIME = re.compile(r"[A-Z][a-z]{2} \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2} \S+")


def test_an_engineer_lists_and_revokes_logins_and_an_admin_any(live_server, admin_pc, make_pc):
    create_engineer(admin_pc)
    laptop, desk = make_pc("laptop"), make_pc("desk")
    laptop.login(live_server, "alice", ENGINEER_PASSWORD)
    desk.login(live_server, "alice", ENGINEER_PASSWORD)

    listed = laptop.ok("token", "list", "--json").json()
    assert [t["current"] for t in listed] == [True, False] and {t["account"] for t in listed} == {"alice"}
    table = laptop.ok("token", "list").stdout
    assert len(FULL_TIME.findall(table)) >= 4 and "*" in table

    desk_id = listed[1]["id"]
    assert f"Revoked token {desk_id}" in laptop.ok("token", "revoke", str(desk_id)).stdout
    refused = desk.run("whoami")
    assert refused.code == ExitStatus.AUTH and "not valid" in refused.stderr
    laptop.ok("whoami")

    not_mine = desk.run("token", "revoke", str(listed[0]["id"]))
    assert not_mine.code == ExitStatus.AUTH  # the desk is logged out by now
    other = make_pc("other")
    create_engineer(admin_pc, "bob")
    other.login(live_server, "bob", ENGINEER_PASSWORD)
    assert other.run("token", "revoke", str(listed[0]["id"])).code == ExitStatus.NOT_FOUND
    assert other.run("token", "list", "--account", "alice").code == ExitStatus.FORBIDDEN

    [alices] = admin_pc.ok("token", "list", "--account", "alice", "--json").json()
    assert alices["id"] == listed[0]["id"] and not alices["current"]
    admin_pc.ok("token", "revoke", str(alices["id"]))
    assert laptop.run("whoami").code == ExitStatus.AUTH
    actions = [e["action"] for e in admin_pc.ok("audit", "--action", "token.", "--json").json()]
    assert actions == ["token.revoke", "token.revoke"]


def test_changing_ones_password_ends_the_other_logins(live_server, admin_pc, make_pc):
    create_engineer(admin_pc)
    laptop, desk = make_pc("laptop"), make_pc("desk")
    laptop.login(live_server, "alice", ENGINEER_PASSWORD)
    desk.login(live_server, "alice", ENGINEER_PASSWORD)

    weak = laptop.run("account", "password", "--password-stdin", input=f"{ENGINEER_PASSWORD}\n{' ' * 12}\n")
    assert weak.code == ExitStatus.INVALID and "only spaces" in weak.stderr
    wrong = laptop.run("account", "password", "--password-stdin", input=f"not-my-password\n{NEW_PASSWORD}\n")
    assert wrong.code == ExitStatus.AUTH
    desk.ok("whoami")

    changed = laptop.ok("account", "password", "--password-stdin", input=f"{ENGINEER_PASSWORD}\n{NEW_PASSWORD}\n")
    assert "ended 1 other login" in changed.stdout
    laptop.ok("whoami")
    assert desk.run("whoami").code == ExitStatus.AUTH
    assert desk.run("login", live_server.url, "-u", "alice", "--password-stdin",
                    input=ENGINEER_PASSWORD + "\n").code == ExitStatus.AUTH
    desk.login(live_server, "alice", NEW_PASSWORD)
    events = admin_pc.ok("audit", "--action", "account.", "--json").json()
    assert {"account.password_change", "account.password_change_refused", "account.tokens_ended"} <= {e["action"] for e in events}


def test_a_reset_or_disable_ends_the_logins_for_good(live_server, admin_pc, make_pc):
    create_engineer(admin_pc)
    laptop = make_pc("laptop")
    laptop.login(live_server, "alice", ENGINEER_PASSWORD)
    admin_pc.ok("account", "update", "alice", "--disable")
    admin_pc.ok("account", "update", "alice", "--enable")
    assert laptop.run("whoami").code == ExitStatus.AUTH
    laptop.login(live_server, "alice", ENGINEER_PASSWORD)
    admin_pc.ok("account", "update", "alice", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert laptop.run("whoami").code == ExitStatus.AUTH
    weak = admin_pc.run("account", "create", "carol", "--password-stdin", input="carol\n")
    assert weak.code == ExitStatus.INVALID and "at least 12 characters" in weak.stderr


def test_on_a_terminal_the_new_password_is_asked_twice(live_server, admin_pc, make_pc):
    import pexpect

    from tests.support.live import helpline_bin

    create_engineer(admin_pc)
    laptop = make_pc("laptop")
    laptop.login(live_server, "alice", ENGINEER_PASSWORD)

    def change(new: str, again: str) -> pexpect.spawn:
        child = pexpect.spawn(helpline_bin(), ["account", "password"], env=laptop.env(), encoding="utf-8", timeout=60)
        child.expect("Current password: ")
        child.sendline(ENGINEER_PASSWORD)
        child.expect("New password: ")
        child.sendline(new)
        child.expect("Type it again: ")
        child.sendline(again)
        child.expect(pexpect.EOF)
        child.close()
        return child

    mistyped = change(NEW_PASSWORD, NEW_PASSWORD + "x")
    assert mistyped.exitstatus == ExitStatus.INVALID and "differ" in mistyped.before
    done = change(NEW_PASSWORD, NEW_PASSWORD)
    assert done.exitstatus == 0 and "Password changed" in done.before
    assert NEW_PASSWORD not in done.before  # not echoed
    make_pc("desk").login(live_server, "alice", NEW_PASSWORD)
