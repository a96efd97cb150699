"""The support call as people make it: the engineer reads a code, the user pairs, and plain
`helpline share` and `helpline status` work on that ticket; several open tickets are asked
about; the question before sending names the ticket (on a real terminal, a pty)."""

from __future__ import annotations

import pexpect
import pytest

from protocol.errors import ExitStatus
from tests.support.live import helpline_bin

pytestmark = pytest.mark.e2e

QUICK = ["--deadline", "5", "--what", "Laptop very slow", "--since", "Monday", "--tried", "reboot"]


def spawn(pc, *args: str) -> pexpect.spawn:
    env = pc.env()
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(helpline_bin(), list(args), env=env, encoding="utf-8", timeout=90, dimensions=(50, 200))


def open_ticket(admin_pc, title: str) -> tuple[str, str]:
    number = admin_pc.ok("ticket", "create", title, "--json").json()["number"]
    return number, admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]


def all_numbers(admin_pc) -> set[str]:
    return {t["number"] for t in admin_pc.ok("ticket", "list", "--all", "--json").json()}


def test_pair_then_plain_share_goes_to_the_paired_ticket(live_server, admin_pc, make_pc, tmp_path):
    number, code = open_ticket(admin_pc, "Laptop very slow")
    user = make_pc("user")
    paired = user.ok("pair", code, "--server", live_server.url)
    assert number in paired.stdout and "helpline share" in paired.stdout
    before = all_numbers(admin_pc)

    sent = user.ok("share", "--yes", *QUICK, "--json").json()
    assert sent["ticket"] == number
    assert all_numbers(admin_pc) == before  # no second ticket
    bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
    assert len(bundles) == 1

    dest = tmp_path / "got"
    admin_pc.ok("diag", "get", number, "--dir", str(dest))
    report = (dest / "report.html").read_text()
    assert f"Ticket: <b>{number} — Laptop very slow</b>" in report and "new ticket" not in report

    status = user.ok("status")  # the one open ticket, without naming it
    assert number in status.stdout and "Laptop very slow" in status.stdout


def test_the_question_before_sending_names_the_ticket_on_a_terminal(live_server, admin_pc, make_pc):
    title = "Laptop \x1b[31mvery\x1b[0m slow"
    number, code = open_ticket(admin_pc, title)
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)

    child = spawn(user, "share", *QUICK)
    child.expect("What will be sent")
    child.expect(rf"Send to {number} 'Laptop \\x1b\[31mvery\\x1b\[0m slow'\? \[y/N\]")
    assert "\x1b[31mvery" not in child.before + child.after  # the title's escape codes are shown, not obeyed
    child.sendline("n")
    child.expect("Nothing was sent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert admin_pc.ok("ticket", "show", number, "--json").json()["bundles"] == []


def test_several_open_tickets_are_asked_about_or_named(live_server, admin_pc, make_pc):
    first, first_code = open_ticket(admin_pc, "Printer offline")
    second, second_code = open_ticket(admin_pc, "VPN drops")
    user = make_pc("user")
    user.ok("pair", first_code, "--server", live_server.url)
    user.ok("pair", second_code)

    for command in (["share", "--yes", *QUICK], ["status"]):
        refused = user.run(*command)
        assert refused.code == ExitStatus.INVALID, refused.stderr
        assert f"{first} 'Printer offline'" in refused.stderr and f"{second} 'VPN drops'" in refused.stderr
        assert f"--ticket {second}" in refused.stderr
    assert admin_pc.ok("ticket", "show", first, "--json").json()["bundles"] == []
    assert first in user.ok("status", "--ticket", first).stdout

    child = spawn(user, "share", *QUICK)
    child.expect("Which ticket is this about\\? \\[1-2\\]")
    assert "Printer offline" in child.before and "VPN drops" in child.before
    child.sendline(first)
    child.expect(rf"Send to {first} 'Printer offline'\? \[y/N\]")
    child.sendline("y")
    child.expect("your diagnostics were delivered")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert len(admin_pc.ok("ticket", "show", first, "--json").json()["bundles"]) == 1
    assert admin_pc.ok("ticket", "show", second, "--json").json()["bundles"] == []

    # Once the engineer closes one, the other is the PC's ticket again; the closed one is refused before gathering.
    admin_pc.ok("ticket", "update", second, "--status", "closed", "--yes")
    assert user.ok("share", "--yes", *QUICK, "--json").json()["ticket"] == first
    closed = user.run("share", "--ticket", second, "--yes", *QUICK)
    assert closed.code == ExitStatus.CONFLICT and "--new" in closed.stderr and "What will be sent" not in closed.stdout


def test_a_new_ticket_only_when_none_is_open_or_when_asked(server_factory, make_pc, tmp_path):
    server = server_factory(self_service="anyone")
    admin = make_pc("admin")
    admin.login(server)
    number, code = open_ticket(admin, "Laptop very slow")
    user = make_pc("user")
    user.ok("pair", code, "--server", server.url)

    fresh = user.ok("share", "--new", "--yes", *QUICK, "--json").json()["ticket"]
    assert fresh != number
    assert admin.ok("ticket", "show", number, "--json").json()["bundles"] == []

    for ticket in (number, fresh):
        admin.ok("ticket", "close", ticket, "--yes")
    after = user.ok("share", "--yes", *QUICK, "--json").json()["ticket"]
    assert after not in (number, fresh)
    assert len(admin.ok("ticket", "show", after, "--json").json()["bundles"]) == 1
