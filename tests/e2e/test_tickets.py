"""Journey 2: an engineer works tickets: create, list, show, status and assignee, notes."""

from __future__ import annotations

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, create_engineer, json_request, token_of

pytestmark = pytest.mark.e2e


def test_engineer_ticket_lifecycle(live_server, admin_pc, make_pc):
    create_engineer(admin_pc, "alice")
    eng = make_pc("alice")
    eng.login(live_server, "alice", ENGINEER_PASSWORD)

    created = eng.ok("ticket", "create", "VPN drops every hour", "-r", "Dana (accounts)", "-p", "high", "--json").json()
    number = created["number"]
    assert number.startswith("T-") and created["status"] == "new" and created["assignee"] is None
    assert created["channel"] == "engineer"
    window = (_ts(created["first_response_due"]) - _ts(created["created_at"])).total_seconds()
    assert window == pytest.approx(120 * 60, abs=2)  # the high-priority policy

    second = eng.ok("ticket", "create", "Printer jams", "--json").json()
    assert int(second["number"][2:]) == int(number[2:]) + 1

    listed = eng.ok("ticket", "list", "--json").json()
    assert [t["number"] for t in listed] == [second["number"], number]

    eng.ok("ticket", "update", number, "--status", "open", "--assign", "alice")
    eng.ok("ticket", "note", number, "Asked Dana to reboot the router.")
    shown = eng.ok("ticket", "show", number, "--json").json()
    assert shown["status"] == "open" and shown["assignee"] == "alice"
    assert shown["first_responded_at"] is not None
    kinds = [e["kind"] for e in shown["timeline"]]
    assert kinds == ["created", "assigned", "status", "note"]

    mine = eng.ok("ticket", "list", "--mine", "--json").json()
    assert [t["number"] for t in mine] == [number]
    assert [t["number"] for t in eng.ok("ticket", "list", "--status", "new", "--json").json()] == [second["number"]]

    text = eng.ok("ticket", "show", number).stdout
    assert "VPN drops every hour" in text and "Asked Dana to reboot the router." in text

    eng.ok("ticket", "update", number, "--status", "closed", "--yes")
    refused = eng.run("ticket", "update", number, "--status", "open")
    assert refused.code == ExitStatus.CONFLICT
    assert "cannot go from closed to open" in refused.stderr


def test_ticket_not_found_and_bad_input(live_server, admin_pc):
    missing = admin_pc.run("ticket", "show", "T-999999")
    assert missing.code == ExitStatus.NOT_FOUND
    assert "T-999999 does not exist" in missing.stderr
    bad = admin_pc.run("ticket", "show", "not-a-ticket")
    assert bad.code == ExitStatus.INVALID
    nobody = admin_pc.run("ticket", "create", "x", "--assign", "ghost")
    assert nobody.code == ExitStatus.NOT_FOUND
    usage = admin_pc.run("ticket", "create", "x", "--priority", "sky-high")
    assert usage.code == ExitStatus.USAGE


def test_every_spelling_of_a_ticket_reaches_it(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Spellings", "--json").json()["number"]
    digits = number.removeprefix("T-")
    for spelling in (f"#{digits}", f"t-{digits}", digits, f" {number} "):
        assert admin_pc.ok("ticket", "show", spelling, "--json").json()["number"] == number
    admin_pc.ok("ticket", "note", f"#{digits}", "Reached by its short name.")
    no_bundle = admin_pc.run("diag", "show", f"#{digits}")
    assert no_bundle.code == ExitStatus.NOT_FOUND and f"{number} has no diagnostics yet" in no_bundle.stderr

    code = admin_pc.ok("ticket", "pair-code", f"t-{digits}", "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", live_server.url)
    assert [t["number"] for t in pc.ok("status", f"#{digits}", "--json").json()] == [number]

    # Every command refuses what is not a ticket number the same way (tests/protocol/test_tickets.py has the
    # full list of spellings; here a few reach each command through the real CLI).
    for bad in (f"{number}?x=1", f"../{digits}", f"t{digits}"):
        for result in (admin_pc.run("ticket", "show", bad), admin_pc.run("ticket", "note", bad, "x"),
                       admin_pc.run("diag", "get", bad), pc.run("status", bad)):
            assert result.code == ExitStatus.INVALID, (bad, result)
            lines = result.stderr.splitlines()
            assert lines[0].startswith("error: ") and "is not a ticket number" in lines[0]
            assert len(lines) == 2 and lines[1].startswith("hint: ") and "Traceback" not in result.stderr

    # The server reads the same spellings, and refuses the same others, when asked directly.
    token = token_of(admin_pc)
    assert json_request(live_server, "GET", f"/v1/tickets/%23{digits}", token)[1]["number"] == number
    status, body = json_request(live_server, "GET", f"/v1/tickets/t{digits}", token)
    assert status == 422 and "is not a ticket number" in body["error"]["message"]


def test_concurrent_ticket_creation_gets_unique_numbers(live_server, admin_pc):
    """Writers queue instead of failing with 'database is locked' (SQLite) or clashing (PostgreSQL)."""
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    token = json.loads((admin_pc.config_dir / "credentials.json").read_text())["token"]

    def create(i: int) -> int:
        request = urllib.request.Request(
            f"{live_server.url}/v1/tickets", data=json.dumps({"title": f"load {i}"}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())["number"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(create, range(48)))
    assert all(status == 201 for status, _ in results)
    assert len({number for _, number in results}) == 48


def _ts(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))
