"""Tickets through the API: first-response due times from the clock, the status workflow, self-service."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.server.conftest import EnrolledPC, PCKey


@pytest.fixture
def server_settings(server_settings):
    return server_settings.model_copy(update={"self_service": "anyone", "self_service_priority": "high"})


def test_a_tickets_first_response_is_due_by_its_priority(helpline, clock):
    engineer = helpline.token()
    for priority in ("urgent", "high", "normal", "low"):
        ticket = helpline.ok("POST", "tickets", engineer, json={"title": f"{priority} one", "priority": priority})
        minutes = helpline.settings.response_policy.minutes_for(priority)
        assert datetime.fromisoformat(ticket["first_response_due"]) == clock() + timedelta(minutes=minutes)
        assert datetime.fromisoformat(ticket["created_at"]) == clock()
        clock.advance(minutes=7)


def test_numbers_count_up_and_the_workflow_refuses_a_closed_ticket(helpline):
    engineer = helpline.token()
    first, second = helpline.ticket(engineer), helpline.ticket(engineer)
    start = helpline.settings.ticket_number_start
    assert (first, second) == (f"T-{start}", f"T-{start + 1}")
    assert helpline.ok("PATCH", f"tickets/{first}", engineer, json={"status": "closed"})["status"] == "closed"
    refused = helpline.call("PATCH", f"tickets/{first}", engineer, json={"status": "open"})
    assert refused.status_code == 409 and "closed tickets stay closed" in refused.json()["error"]["hint"]


def test_a_pc_opens_a_ticket_itself_and_learns_when_it_will_be_answered(helpline, clock):
    pc = PCKey("kiosk")
    title = "Screen flickers"
    answer = helpline.call("POST", "self-service/tickets", json={"title": title, **pc.signed("self-service", "title", title)})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["response_minutes"] == helpline.settings.response_policy.high
    assert datetime.fromisoformat(body["ticket"]["first_response_due"]) == clock() + timedelta(minutes=body["response_minutes"])
    assert body["agent"]["credential"]
    shown = helpline.ok("GET", f"tickets/{body['ticket']['number']}", helpline.token())
    assert (shown["channel"], shown["priority"], shown["requester"]) == ("self-service", "high", "user of kiosk")
    # The PC comes back as its agent, signing with its key: the same agent, a second ticket.
    me = EnrolledPC(pc, body["agent"]["agent_id"], body["agent"]["credential"])
    again = helpline.ok("POST", "self-service/tickets", me, json={"title": "And the mouse"})
    assert again["agent"] is None
    assert len(helpline.ok("GET", "agent/tickets", me)) == 2


def test_the_first_thing_an_engineer_does_is_the_first_response(helpline, clock):
    engineer = helpline.token()
    number = helpline.ticket(engineer)
    assert helpline.ok("GET", f"tickets/{number}", engineer)["first_responded_at"] is None
    clock.advance(minutes=25)
    noted = helpline.ok("POST", f"tickets/{number}/notes", engineer, json={"message": "Looking at it"})
    assert datetime.fromisoformat(noted["first_responded_at"]) == clock()
    clock.advance(minutes=5)
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "open"})
    assert datetime.fromisoformat(helpline.ok("GET", f"tickets/{number}", engineer)["first_responded_at"]) == clock() - timedelta(minutes=5)
