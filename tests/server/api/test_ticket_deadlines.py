"""What is due and what is late, by the server's clock: first responses, overdue lists, closed and reopened tickets."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest


def numbers(listing: list[dict]) -> list[str]:
    return [t["number"] for t in listing]


@pytest.mark.parametrize("answer", ["note", "take", "open"])
def test_an_engineer_answering_records_the_first_response_once(helpline, clock, answer):
    engineer = helpline.token(username="eve")
    number = helpline.ticket(engineer)
    clock.advance(minutes=13)
    if answer == "note":
        helpline.ok("POST", f"tickets/{number}/notes", engineer, json={"message": "On it"})
    elif answer == "take":
        helpline.ok("PATCH", f"tickets/{number}", engineer, json={"assignee": "eve"})
    else:
        helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "open"})
    answered = clock()
    clock.advance(minutes=30)
    helpline.ok("POST", f"tickets/{number}/notes", engineer, json={"message": "Later"})
    shown = helpline.ok("GET", f"tickets/{number}", engineer)
    assert datetime.fromisoformat(shown["first_responded_at"]) == answered


def test_closing_or_unassigning_is_not_an_answer(helpline, clock):
    engineer = helpline.token()
    first, second = helpline.ticket(engineer), helpline.ticket(engineer)
    clock.advance(minutes=5)
    helpline.ok("PATCH", f"tickets/{first}", engineer, json={"status": "closed"})
    helpline.ok("PATCH", f"tickets/{second}", engineer, json={"assignee": ""})
    for number in (first, second):
        assert helpline.ok("GET", f"tickets/{number}", engineer)["first_responded_at"] is None


def test_overdue_lists_only_late_unanswered_open_tickets_most_late_first(helpline, clock):
    engineer = helpline.token()
    normal = helpline.settings.response_policy.normal
    late = helpline.ticket(engineer, "Late one")  # due at +normal
    clock.advance(minutes=10)
    later = helpline.ticket(engineer, "Later one")  # due at +normal+10
    answered = helpline.ticket(engineer, "Answered one")
    helpline.ok("POST", f"tickets/{answered}/notes", engineer, json={"message": "Seen"})
    closed = helpline.ticket(engineer, "Closed one")
    helpline.ok("PATCH", f"tickets/{closed}", engineer, json={"status": "closed"})
    urgent = helpline.ticket(engineer, "Urgent one", priority="urgent")  # due soonest
    assert helpline.ok("GET", "tickets", engineer, params={"overdue": "true"}) == []

    clock.advance(minutes=normal + 1)  # every unanswered normal ticket is late now, the urgent one most of all
    overdue = helpline.ok("GET", "tickets", engineer, params={"overdue": "true", "sort": "due"})
    assert numbers(overdue) == [urgent, late, later]
    by_due = helpline.ok("GET", "tickets", engineer, params={"sort": "due"})
    assert numbers(by_due)[:3] == [urgent, late, later] and set(numbers(by_due)[3:]) == {answered}
    due_soon = helpline.ok("GET", "tickets", engineer,
                           params={"due_before": (clock() - timedelta(minutes=5)).isoformat()})
    assert set(numbers(due_soon)) == {urgent, late}


def test_closed_tickets_are_listed_only_when_asked_for(helpline):
    engineer = helpline.token()
    kept, closed = helpline.ticket(engineer), helpline.ticket(engineer)
    helpline.ok("PATCH", f"tickets/{closed}", engineer, json={"status": "closed"})
    assert numbers(helpline.ok("GET", "tickets", engineer)) == [kept]
    assert numbers(helpline.ok("GET", "tickets", engineer, params={"closed": "true"})) == [closed, kept]
    assert numbers(helpline.ok("GET", "tickets", engineer, params={"status": "closed"})) == [closed]


def test_a_closed_ticket_refuses_pairing_codes_until_reopened(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "closed"})
    refused = helpline.call("POST", f"tickets/{number}/pairing-codes", engineer)
    assert refused.status_code == 409
    assert f"helpline ticket reopen {number}" in refused.json()["error"]["hint"]
    assert [e.target_id for e in helpline.audit("pairing_code.refused")] == [number]
    assert helpline.audit("pairing_code.create") == []

    reopened = helpline.ok("POST", f"tickets/{number}/reopen", engineer)
    assert reopened["status"] == "open"
    assert reopened["timeline"][-1]["kind"] == "reopened"
    assert [e.details for e in helpline.audit("ticket.reopen")] == [{"old": "closed", "new": "open"}]
    assert helpline.pairing_code(engineer, number)["ticket"] == number


def test_only_a_closed_or_resolved_ticket_is_reopened(helpline):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    refused = helpline.call("POST", f"tickets/{number}/reopen", engineer)
    assert refused.status_code == 409 and "not closed" in refused.json()["error"]["message"]
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "resolved"})
    assert helpline.ok("POST", f"tickets/{number}/reopen", engineer)["status"] == "open"
