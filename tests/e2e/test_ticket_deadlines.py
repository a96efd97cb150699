"""Deadlines and closing through the real CLI: overdue tickets listed and marked, the user told
the truth once the promise passed, closed tickets hidden, closing asked for, reopening audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pexpect
import pytest
from sqlalchemy import create_engine, update

from protocol.errors import ExitStatus
from server.models import Ticket
from tests.support.live import helpline_bin

pytestmark = pytest.mark.e2e


def backdate(server, number: str, hours: float) -> None:
    """Move a ticket's opening and promised first response ``hours`` into the past, as time passing would."""
    url = server.database_url or f"sqlite:///{server.data_dir / 'helpline.db'}"
    engine = create_engine(url)
    try:
        with engine.begin() as db:
            row = db.execute(Ticket.__table__.select().where(Ticket.number == int(number.removeprefix("T-")))).one()
            shift = timedelta(hours=hours)
            db.execute(update(Ticket.__table__).where(Ticket.id == row.id).values(
                created_at=row.created_at - shift, first_response_due=row.first_response_due - shift))
    finally:
        engine.dispose()


def spawn(pc, *args: str) -> pexpect.spawn:
    env = pc.env()
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(helpline_bin(), list(args), env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))


def test_an_overdue_ticket_is_listed_marked_and_the_user_told(live_server, admin_pc, make_pc):
    late = admin_pc.ok("ticket", "create", "Laptop very slow", "--json").json()["number"]
    fresh = admin_pc.ok("ticket", "create", "Mouse squeaks", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", late, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    assert "An engineer will answer by" in user.ok("status").stdout
    backdate(live_server, late, hours=30)  # a normal ticket promises 4 h: long past, on another day

    overdue = admin_pc.ok("ticket", "list", "--overdue", "--json").json()
    assert [t["number"] for t in overdue] == [late]
    listing = admin_pc.ok("ticket", "list").stdout
    late_row = next(line for line in listing.splitlines() if late in line)
    fresh_row = next(line for line in listing.splitlines() if fresh in line)
    assert "OVERDUE since" in late_row and "due " in fresh_row and "OVERDUE" not in fresh_row
    due_first = admin_pc.ok("ticket", "list", "--sort", "due", "--json").json()
    assert [t["number"] for t in due_first][:2] == [late, fresh]
    soon = (datetime.now(UTC) + timedelta(hours=1)).astimezone().replace(tzinfo=None).isoformat(timespec="minutes")
    assert [t["number"] for t in admin_pc.ok("ticket", "list", "--due-before", soon, "--json").json()] == [late]
    assert admin_pc.run("ticket", "list", "--due-before", "next tuesday").code == ExitStatus.INVALID

    told = user.ok("status").stdout
    assert "was due to answer by" in told and "it is late" in told and "will answer by" not in told

    admin_pc.ok("ticket", "note", late, "Sorry for the wait, looking now.")
    assert admin_pc.ok("ticket", "list", "--overdue", "--json").json() == []
    late_row = next(line for line in admin_pc.ok("ticket", "list").stdout.splitlines() if late in line)
    assert "answered" in late_row and "OVERDUE" not in late_row and "due " not in late_row
    told = user.ok("status").stdout
    assert "An engineer answered at" in told and "late" not in told


def test_closing_asks_and_a_closed_ticket_gives_no_codes_until_reopened(live_server, admin_pc):
    number = admin_pc.ok("ticket", "create", "Printer offline", "--json").json()["number"]

    refused = admin_pc.run("ticket", "close", number)  # no terminal, no --yes
    assert refused.code == ExitStatus.INVALID and "--yes" in refused.stderr
    refused = admin_pc.run("ticket", "update", number, "--status", "closed")
    assert refused.code == ExitStatus.INVALID
    assert admin_pc.ok("ticket", "show", number, "--json").json()["status"] == "new"

    child = spawn(admin_pc, "ticket", "close", number)
    child.expect(rf"Close {number} 'Printer offline'\? .*\[y/N\]")
    child.sendline("n")
    child.expect("Nothing was changed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert admin_pc.ok("ticket", "show", number, "--json").json()["status"] == "new"

    child = spawn(admin_pc, "ticket", "close", number)
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect(f"{number} is closed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    assert number not in {t["number"] for t in admin_pc.ok("ticket", "list", "--json").json()}
    assert number in {t["number"] for t in admin_pc.ok("ticket", "list", "--all", "--json").json()}

    no_code = admin_pc.run("ticket", "pair-code", number)
    assert no_code.code == ExitStatus.CONFLICT
    assert "is closed" in no_code.stderr and f"helpline ticket reopen {number}" in no_code.stderr

    admin_pc.ok("ticket", "reopen", number)
    shown = admin_pc.ok("ticket", "show", number, "--json").json()
    assert shown["status"] == "open" and shown["timeline"][-1]["kind"] == "reopened"
    audit = admin_pc.ok("audit", "--json").json()
    assert any(e["action"] == "ticket.reopen" and e["target"].endswith(number) for e in audit)
    assert any(e["action"] == "pairing_code.refused" for e in audit)
    assert admin_pc.ok("ticket", "pair-code", number, "--json").json()["ticket"] == number
