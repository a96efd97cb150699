"""A per-user identity hands its tickets over to the PC's agent service: both keys sign, the server links, revokes
the old agent and audits; anything less changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from protocol import signing
from protocol.hand_over import hand_over_payload
from tests.server.conftest import EnrolledPC


@pytest.fixture
def paired(helpline):
    """A per-user identity linked to a ticket, and the PC's service agent (both enrolled on the test server)."""
    old = helpline.enrolled_pc("laptop-user")
    service = helpline.enrolled_pc("laptop")
    engineer = helpline.token()
    number = helpline.ticket(engineer, "VPN drops")
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", old, json={"code": code, **old.key.signed("pair", "code", code)})
    return old, service, number


def statement(old: EnrolledPC, to: str, tickets: list[str], at) -> dict:
    return {"from_agent_id": old.agent_id, "tickets": tickets, "signed_at": at.isoformat(),
            "signature": signing.sign(old.key.key, hand_over_payload(old.agent_id, to, tickets, at))}


def test_the_service_takes_over_and_the_old_identity_is_revoked(helpline, paired):
    old, service, number = paired
    answer = helpline.ok("POST", "agent/hand-over", service, json=statement(old, service.agent_id, [number], helpline.clock()))
    assert answer == {"tickets": [number], "from_agent_id": old.agent_id}
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", service)] == [number]
    assert helpline.call("GET", "agent/tickets", old).status_code == 401  # the per-user key is retired
    [event] = helpline.audit("agent.hand_over")
    assert event.target_id == old.agent_id and event.details["to"] == service.agent_id
    assert helpline.audit("agent.revoke")


@pytest.mark.parametrize("case", ["other-signer", "named-someone-else", "stale", "not-its-ticket", "itself"],
                         ids=lambda c: c)
def test_anything_less_changes_nothing(helpline, paired, case):
    old, service, number = paired
    now = helpline.clock()
    body = statement(old, service.agent_id, [number], now)
    sender = service
    if case == "other-signer":  # the service signs the statement itself: it cannot take another agent's tickets
        body["signature"] = signing.sign(service.key.key, hand_over_payload(old.agent_id, service.agent_id, [number], now))
    elif case == "named-someone-else":  # a statement made out to another agent, replayed by this one
        body = statement(old, "someone-else", [number], now)
    elif case == "stale":
        body = statement(old, service.agent_id, [number], now - timedelta(hours=1))
    elif case == "not-its-ticket":
        other = helpline.ticket(helpline.token(), "Not theirs")
        body = statement(old, service.agent_id, [other], now)
    elif case == "itself":
        sender, body = old, statement(old, old.agent_id, [number], now)
    response = helpline.call("POST", "agent/hand-over", sender, json=body)
    assert response.status_code in (401, 404), response.text
    assert helpline.ok("GET", "agent/tickets", old)  # still the old agent's, and it still works
    if sender is service:
        assert helpline.ok("GET", "agent/tickets", service) == []


def test_a_bearer_credential_alone_is_refused(helpline, paired):
    old, service, number = paired
    response = helpline.call("POST", "agent/hand-over", service.credential,
                             json=statement(old, service.agent_id, [number], helpline.clock()))
    assert response.status_code == 401
