"""The CLI's manners through the real command against a real server: hints for the reader's role,
short ids and host names, login without a URL, exit statuses, times and durations, and the small things
(asking twice for a password, Ctrl-C in share, the audit's details, a PC changing group, note --json)."""

from __future__ import annotations

import re

import pexpect
import pytest

from agent.identity import TEST_HOSTNAME_ENV
from protocol.errors import ExitStatus
from tests.support.live import ADMIN, ADMIN_PASSWORD, ENGINEER_PASSWORD, create_engineer, helpline_bin

pytestmark = pytest.mark.e2e

UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def spawn(pc, *args: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    full = pc.env()
    full.update(env or {})
    return pexpect.spawn(helpline_bin(), list(args), env=full, encoding="utf-8", timeout=60, dimensions=(50, 160))


def enroll(admin_pc, pc, server, group: str = "default", hostname: str | None = None):
    token = admin_pc.ok("enroll-token", "create", "--group", group, "--json").json()["token"]
    env = {TEST_HOSTNAME_ENV: hostname} if hostname else None
    return pc.run("agent", "enroll", server.url, token, env=env)


def engineer_pc(admin_pc, make_pc, server, name: str = "alice"):
    create_engineer(admin_pc, name)
    pc = make_pc(name)
    pc.login(server, name, ENGINEER_PASSWORD)
    return pc


# --- 5: hints fit the reader ----------------------------------------------------------------------


def test_hints_name_only_commands_the_reader_can_run(live_server, admin_pc, make_pc):
    alice = engineer_pc(admin_pc, make_pc, live_server)
    number = alice.ok("ticket", "create", "Printer offline", "--json").json()["number"]
    code = alice.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)

    missing = user.run("status", "T-99999")
    assert missing.code == ExitStatus.NOT_FOUND
    assert "hint:" in missing.stderr and "helpline ticket" not in missing.stderr

    missing = alice.run("ticket", "show", "T-99999")
    assert missing.code == ExitStatus.NOT_FOUND and "`helpline ticket list`" in missing.stderr

    engineer = alice.run("ticket", "update", number, "--assign", "ghost")
    assert engineer.code == ExitStatus.NOT_FOUND and "hint:" in engineer.stderr
    assert "account list" not in engineer.stderr
    admin = admin_pc.run("ticket", "update", number, "--assign", "ghost")
    assert admin.code == ExitStatus.NOT_FOUND and "`helpline account list`" in admin.stderr

    # A hint made on this computer (not by the server) fits the reader too.
    assert "`helpline account list`" not in alice.run("account", "update", "bad/name", "--role", "admin").stderr
    assert "`helpline account list`" in admin_pc.run("account", "update", "bad/name", "--role", "admin").stderr


# --- 6: short ids and host names --------------------------------------------------------------------


def test_agents_by_short_id_and_host_name_and_ambiguity(live_server, admin_pc, make_pc):
    first, second, third = make_pc("pc-a"), make_pc("pc-b"), make_pc("pc-c")
    assert enroll(admin_pc, first, live_server, hostname="laptop-7").code == 0
    assert enroll(admin_pc, second, live_server, hostname="kiosk").code == 0
    # Enrolled PCs with one machine id and host name are one PC re-keyed; a paired one stays apart.
    number = admin_pc.ok("ticket", "create", "Kiosk", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    third.ok("pair", code, "--server", live_server.url, env={TEST_HOSTNAME_ENV: "kiosk"})
    agents = {a["id"]: a["hostname"] for a in admin_pc.ok("agent", "list", "--json").json()}

    table = admin_pc.ok("agent", "list").stdout
    assert not UUID.search(table), table  # the table shows ids cut short…
    shown = [word for word in re.findall(r"\b[0-9a-f]{8,35}\b", table) if any(i.startswith(word) for i in agents)]
    assert len(shown) == 3, table
    for short in shown:  # …and each short id is accepted back
        full = next(i for i in agents if i.startswith(short))
        assert admin_pc.ok("agent", "show", short, "--json").json()["id"] == full

    assert admin_pc.ok("agent", "show", "LAPTOP-7", "--json").json()["hostname"] == "laptop-7"
    ambiguous = admin_pc.run("agent", "show", "kiosk")
    assert ambiguous.code == ExitStatus.AMBIGUOUS
    [line] = [l for l in ambiguous.stderr.splitlines() if l.startswith("error:")]
    assert "matches 2 agents" in line and line.count("(kiosk)") == 2
    assert "hint:" in ambiguous.stderr
    assert admin_pc.run("agent", "show", "zzzz-not-a-pc").code == ExitStatus.NOT_FOUND


def test_bundles_by_short_id(live_server, admin_pc, make_pc, tmp_path):
    number = admin_pc.ok("ticket", "create", "Slow laptop", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("share", "--code", code, "--server", live_server.url, "--yes", "--what", "slow", "--deadline", "30")
    [bundle] = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    shown = admin_pc.ok("ticket", "show", number).stdout
    assert bundle["id"] not in shown and bundle["id"][:8] in shown
    got = admin_pc.ok("diag", "get", bundle["id"][:8], "--dir", str(tmp_path / "b"), "--json").json()
    assert got["bundle"]["id"] == bundle["id"]
    assert admin_pc.run("diag", "get", "ffffffff", "--dir", str(tmp_path / "c")).code == ExitStatus.NOT_FOUND


# --- 8: login remembers the server -------------------------------------------------------------------


def test_login_without_a_url_reuses_the_saved_server(live_server, make_pc):
    pc = make_pc("eng")
    first = pc.run("login", "-u", ADMIN, "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert first.code == ExitStatus.CONFIG and "`helpline login URL`" in first.stderr
    pc.login(live_server)
    pc.ok("logout")
    assert pc.run("ticket", "list").code == ExitStatus.CONFIG
    again = pc.ok("login", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert live_server.url in again.stdout
    assert pc.ok("whoami", "--json").json()["username"] == ADMIN


# --- 9: exit statuses -------------------------------------------------------------------------------


def test_a_pairing_code_is_not_spent_on_a_server_with_the_wrong_key(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Careful", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    wrong = user.run("pair", code, "--server", live_server.url, "--server-key", "SHA256:someone-else")
    assert wrong.code == ExitStatus.AUTH and "not the expected" in wrong.stderr
    user.ok("pair", code, "--server", live_server.url)  # the code is still good


# --- 10: times and durations -----------------------------------------------------------------------


def test_times_say_day_and_zone_and_waits_say_durations(live_server, admin_pc, make_pc):
    admin_pc.ok("ticket", "create", "Clock check")
    utc = admin_pc.ok("audit", "--limit", "3", env={"TZ": "UTC"}).stdout
    assert re.search(r"today \d\d:\d\d UTC", utc), utc
    paris = admin_pc.ok("audit", "--limit", "3", env={"TZ": "Europe/Paris"}).stdout
    assert re.search(r"(today|tomorrow) \d\d:\d\d CE[S]?T", paris), paris
    listed = admin_pc.ok("ticket", "list", env={"TZ": "Asia/Tokyo"}).stdout
    assert re.search(r"\d\d:\d\d JST", listed), listed

    intruder = make_pc("intruder")
    for _ in range(15):
        result = intruder.run("login", live_server.url, "-u", ADMIN, "--password-stdin", input="wrong-password-1\n")
        if result.code == ExitStatus.RATE_LIMITED:
            break
    assert result.code == ExitStatus.RATE_LIMITED
    hint = next(l for l in result.stderr.splitlines() if l.startswith("hint:"))
    assert "seconds" not in hint and re.search(r"Wait (\d+ min( \d+ s)?|\d+ s)( before|,)", hint), hint


# --- 11: the small things ---------------------------------------------------------------------------


def test_account_create_asks_twice_and_speaks_plainly(live_server, admin_pc):
    child = spawn(admin_pc, "account", "create", "bob")
    child.expect("Password for the new account: ")
    child.sendline("first-password-1")
    child.expect("The same password again: ")
    child.sendline("other-password-2")
    child.expect("The two passwords differ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitStatus.INVALID

    child = spawn(admin_pc, "account", "create", "bob")
    child.expect("Password for the new account: ")
    child.sendline("a-good-password-1")
    child.expect("The same password again: ")
    child.sendline("a-good-password-1")
    child.expect("Created engineer account")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    short = admin_pc.run("account", "create", "carol", "--password-stdin", input="short\n")
    assert short.code == ExitStatus.INVALID
    assert "A password needs at least 12 characters" in short.stderr
    assert "String should" not in short.stderr


def test_ctrl_c_in_share_says_nothing_was_sent_on_its_own_line(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Interrupted", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    child = spawn(user, "share", "--ticket", number)
    child.expect("What happened\\? ")
    assert "?:" not in child.after + child.buffer
    child.sendintr()
    child.expect("Nothing was sent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitStatus.INTERRUPTED
    transcript = child.before or ""
    assert "What happened? error" not in transcript
    assert admin_pc.ok("ticket", "show", number, "--json").json()["bundles"] == []


def test_audit_details_group_moves_and_note_json(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Details", "--json").json()["number"]
    admin_pc.ok("ticket", "update", number, "--status", "open")
    audit = admin_pc.ok("audit", "--action", "ticket.status").stdout
    assert "Details" in audit and "new → open" in audit

    note = admin_pc.ok("ticket", "note", number, "Called the user", "--json").json()
    assert note["number"] == number and any("Called the user" in e["message"] for e in note["timeline"])

    pc = make_pc("moving")
    assert enroll(admin_pc, pc, live_server, group="finance").code == 0
    moved = enroll(admin_pc, pc, live_server, group="lab")
    assert moved.code == 0 and "moved from group finance to group lab" in moved.stdout
    stayed = enroll(admin_pc, pc, live_server, group="lab")
    assert "moved" not in stayed.stdout
