"""Journeys 4-6: pairing by code, self-service tickets, and the user's status view."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, create_engineer, json_request, token_of

pytestmark = pytest.mark.e2e


def ticket_and_code(admin_pc, title="Outlook crashes") -> tuple[str, str]:
    number = admin_pc.ok("ticket", "create", title, "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    return number, code


def test_unenrolled_pc_pairs_with_a_code(live_server, admin_pc, make_pc):
    number, code = ticket_and_code(admin_pc)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)
    pc = make_pc("user")
    # Typo-tolerant: lower case, no dash, O for 0 and I/L for 1 still work.
    typed = code.replace("-", "").lower().replace("0", "o").replace("1", "l")
    out = pc.ok("pair", typed, "--server", live_server.url).stdout
    assert f"linked to ticket {number}" in out
    assert "An engineer will answer by" in out

    shown = admin_pc.ok("ticket", "show", number, "--json").json()
    assert len(shown["agents"]) == 1
    assert shown["timeline"][-1]["kind"] == "paired"

    again = make_pc("other").run("pair", code, "--server", live_server.url)
    assert again.code == ExitStatus.CONFLICT and "already been used" in again.stderr


def test_enrolled_pc_pairs_with_its_credential(live_server, admin_pc, make_pc):
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    pc = make_pc("fleet-pc")
    agent_id = pc.ok("agent", "enroll", live_server.url, token, "--json").json()["agent_id"]
    number, code = ticket_and_code(admin_pc)
    pc.ok("pair", code)  # the server comes from the enrollment
    agents = admin_pc.ok("agent", "list", "--json").json()
    assert [a["id"] for a in agents] == [agent_id]
    assert agents[0]["tickets"] == [number]


def test_malformed_code_is_caught_locally(live_server, make_pc):
    result = make_pc("user").run("pair", "ABC", "--server", live_server.url)
    assert result.code == ExitStatus.INVALID
    assert "is not a pairing code" in result.stderr


def test_guessed_codes_hit_the_rate_limit(server_factory, make_pc):
    # Guesses one after another, unpaced: this is about one address's own limit.
    server = server_factory(rate_limits__pairing_per_address="5", rate_limits__pairing_suspects_per_second="1000")
    admin = make_pc("admin")
    admin.login(server)
    number, code = ticket_and_code(admin)
    guesser = make_pc("guesser")
    for guess in ("AAAA-AAAA", "BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD", "EEEE-EEEE"):
        result = guesser.run("pair", guess, "--server", server.url)
        assert result.code == ExitStatus.AUTH, result.stderr
    locked = guesser.run("pair", code, "--server", server.url)
    assert locked.code == ExitStatus.RATE_LIMITED
    assert "Too many failed pairing attempts" in locked.stderr
    # The code was never spent, and the ticket has no PC.
    assert admin.ok("ticket", "show", number, "--json").json()["agents"] == []
    refused = admin.ok("audit", "--action", "pairing.refused", "--json").json()
    assert len(refused) == 5


def test_pairing_code_expires(server_factory, make_pc):
    server = server_factory(pairing_code_ttl_minutes="0.02")  # 1.2 s
    admin = make_pc("admin")
    admin.login(server)
    number, code = ticket_and_code(admin)
    issued = admin.ok("ticket", "pair-code", number).stdout
    assert re.search(r"single use, valid for [01] s, until", issued), issued
    import time

    time.sleep(1.6)
    result = make_pc("late").run("pair", code, "--server", server.url)
    assert result.code == ExitStatus.AUTH and "expired" in result.stderr
    assert "valid for 1 s;" in result.stderr  # this server's lifetime, not the default's


def test_self_service_ticket_answers_with_number_and_promise(server_factory, make_pc):
    server = server_factory(self_service="anyone")
    pc = make_pc("user")
    out = pc.ok("request", "Cannot print", "-d", "since this morning", "--name", "Dana", "--server", server.url).stdout
    match = re.search(r"Ticket (T-\d+) is open\. An engineer will answer by (today|tomorrow) \d\d:\d\d [A-Z][A-Z0-9:+-]+ \(within 4 h\)\.", out)
    assert match, out
    number = match.group(1)
    admin = make_pc("admin")
    admin.login(server)
    shown = admin.ok("ticket", "show", number, "--json").json()
    assert shown["channel"] == "self-service" and shown["requester"] == "Dana"
    due = datetime.fromisoformat(shown["first_response_due"])
    assert due - datetime.fromisoformat(shown["created_at"]) == timedelta(hours=4)
    assert len(shown["agents"]) == 1

    # A second request from the same PC reuses its credential: still one agent.
    pc.ok("request", "Also the scanner")
    assert len(admin.ok("agent", "list", "--json").json()) == 1


def test_self_service_policy_is_enforced(server_factory, make_pc):
    enrolled_only = server_factory()  # default: enrolled PCs only
    result = make_pc("stranger").run("request", "help", "--server", enrolled_only.url)
    assert result.code == ExitStatus.FORBIDDEN and "Only enrolled PCs" in result.stderr

    closed = server_factory(self_service="off")
    result = make_pc("stranger2").run("request", "help", "--server", closed.url)
    assert result.code == ExitStatus.FORBIDDEN


def test_status_shows_ticket_assignee_and_timeline(live_server, admin_pc, make_pc):
    create_engineer(admin_pc, "alice")
    number, code = ticket_and_code(admin_pc, "Laptop fan is loud")
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    eng = make_pc("alice")
    eng.login(live_server, "alice", ENGINEER_PASSWORD)
    eng.ok("ticket", "update", number, "--status", "open", "--assign", "alice")
    eng.ok("ticket", "note", number, "I will call you at 3 pm.")

    tickets = user.ok("status", "--json").json()
    assert [t["number"] for t in tickets] == [number]
    assert tickets[0]["status"] == "open" and tickets[0]["assignee"] == "Alice"
    text = user.ok("status", number).stdout
    assert "Status: open" in text and "Engineer: Alice" in text and "I will call you at 3 pm." in text

    # A PC sees only its own tickets.
    other_number, _ = ticket_and_code(admin_pc, "Someone else's problem")
    hidden = user.run("status", other_number)
    assert hidden.code == ExitStatus.NOT_FOUND
    status, body = json_request(live_server, "GET", f"/v1/agent/tickets/{other_number}", token_of(admin_pc))
    assert status == 401  # an engineer token is not an agent credential


def test_status_without_pairing_says_what_to_do(make_pc):
    result = make_pc("fresh").run("status")
    assert result.code == ExitStatus.CONFIG
    assert "helpline pair" in result.stderr
