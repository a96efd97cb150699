"""Agent requests signed with the PC's key: replays, wrong or missing signatures, stale dates and altered bodies
are refused and audited; every answer to an agent carries the server's signature."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from agent.client import HelplineClient
from agent.http import AgentSigner, UnverifiedAnswerError
from protocol import agent_requests, signing
from protocol.errors import ExitStatus, NotFoundError
from server.db import transaction
from server.agent_requests import sweep_nonces
from server.models import AgentNonce
from tests.server.conftest import CLIENT_IP, EnrolledPC, PCKey


@pytest.fixture
def server_settings(server_settings):
    return server_settings.model_copy(update={"upload_chunk_bytes": 1024})


def refusals(helpline) -> list[tuple[str, str]]:
    return [(e.target_id, e.details["reason"]) for e in helpline.audit("agent.request_refused")]


def linked(helpline) -> tuple[EnrolledPC, str]:
    """An enrolled PC linked to a fresh ticket; the ticket's number."""
    engineer = helpline.token()
    number = helpline.ticket(engineer, "Printer offline")
    code = helpline.pairing_code(engineer, number)["code"]
    pc = helpline.enrolled_pc()
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return pc, number


def test_a_signed_request_is_answered_with_the_servers_signature(helpline):
    pc, number = linked(helpline)
    request = helpline.signed(pc, "GET", f"agent/tickets/{number}")
    response = helpline.http.send(request)
    assert response.status_code == 200 and response.json()["title"] == "Printer offline"
    assert helpline.answer_is_signed(request, response)
    # Refusals are signed too, so an agent can believe a refusal it shows.
    missing = helpline.signed(pc, "GET", "agent/tickets/T-999999")
    refused = helpline.http.send(missing)
    assert refused.status_code == 404 and helpline.answer_is_signed(missing, refused)
    # An answer is bound to its request: the same answer does not verify for another request.
    other = helpline.signed(pc, "GET", "agent/tickets")
    assert not helpline.answer_is_signed(other, response)


def test_a_replayed_request_is_refused_and_audited(helpline, clock):
    pc, number = linked(helpline)
    request = helpline.signed(pc, "GET", f"agent/tickets/{number}")
    assert helpline.http.send(request).status_code == 200
    clock.advance(seconds=30)
    again = helpline.http.send(request)
    assert again.status_code == 401 and "replay" in again.json()["error"]["message"]
    assert refusals(helpline) == [(pc.agent_id, "replayed nonce")]
    # A replayed write does nothing twice either.
    body = {"title": "Second problem"}
    opened = helpline.signed(pc, "POST", "self-service/tickets", json=body)
    assert helpline.http.send(opened).status_code == 201
    assert helpline.http.send(opened).status_code == 401
    assert len(helpline.ok("GET", "agent/tickets", pc)) == 2


def test_a_request_signed_by_another_key_or_not_at_all_is_refused(helpline):
    pc, number = linked(helpline)
    impostor = EnrolledPC(PCKey("impostor"), pc.agent_id, pc.credential)
    forged = helpline.call("GET", "agent/tickets", impostor)
    assert forged.status_code == 401 and "does not match this PC's key" in forged.json()["error"]["message"]
    # The bearer credential alone no longer opens anything.
    bearer = helpline.call("GET", f"agent/tickets/{number}", pc.credential)
    assert bearer.status_code == 401 and "bearer credential" in bearer.json()["error"]["hint"]
    # A signature header with the rest missing, and a signature that is not base64.
    request = helpline.signed(pc, "GET", "agent/tickets")
    del request.headers[agent_requests.NONCE_HEADER]
    assert helpline.http.send(request).status_code == 401
    garbled = helpline.signed(pc, "GET", "agent/tickets")
    garbled.headers[agent_requests.SIGNATURE_HEADER] = "not base64!"
    assert helpline.http.send(garbled).status_code == 401
    unknown = EnrolledPC(pc.key, "00000000-0000-0000-0000-000000000000", "")
    assert helpline.call("GET", "agent/tickets", unknown).status_code == 401
    assert [reason for _, reason in refusals(helpline)] == [
        "bad signature", "unsigned: it carries no Helpline-Agent header", "unsigned: it carries no Helpline-Nonce header",
        "bad signature", "unknown agent"]


def test_a_request_for_another_path_or_method_does_not_carry_the_signature(helpline):
    pc, number = linked(helpline)
    request = helpline.signed(pc, "GET", "agent/tickets")
    moved = helpline.http.build_request("GET", f"/v1/agent/tickets/{number}", headers=dict(request.headers))
    assert helpline.http.send(moved).status_code == 401
    queried = helpline.http.build_request("GET", "/v1/agent/tickets?limit=1", headers=dict(request.headers))
    assert helpline.http.send(queried).status_code == 401
    assert [reason for _, reason in refusals(helpline)] == ["bad signature", "bad signature"]


@pytest.mark.parametrize("offset", [timedelta(minutes=6), -timedelta(minutes=6), timedelta(days=1)])
def test_a_request_dated_outside_the_window_is_refused(helpline, clock, offset):
    pc, _ = linked(helpline)
    response = helpline.http.send(helpline.signed(pc, "GET", "agent/tickets", at=clock() + offset))
    assert response.status_code == 401 and "clock" in response.json()["error"]["hint"]
    assert refusals(helpline) == [(pc.agent_id, "stale date")]
    # Within the window either way is fine: PCs' clocks drift.
    for skew in (timedelta(minutes=4, seconds=59), -timedelta(minutes=4, seconds=59)):
        assert helpline.http.send(helpline.signed(pc, "GET", "agent/tickets", at=clock() + skew)).status_code == 200


def test_a_tampered_body_is_refused(helpline):
    pc, number = linked(helpline)
    request = helpline.signed(pc, "POST", "self-service/tickets", json={"title": "Mouse is broken"})
    tampered = helpline.http.build_request("POST", "/v1/self-service/tickets", headers=dict(request.headers),
                                           content=request.content.replace(b"Mouse is broken", b"Call 555-0100 now"))
    response = helpline.http.send(tampered)
    assert response.status_code == 401 and "not the one it was signed with" in response.json()["error"]["message"]
    assert refusals(helpline) == [(pc.agent_id, "altered body")]
    assert len(helpline.ok("GET", "agent/tickets", pc)) == 1  # nothing was opened


def test_a_tampered_upload_chunk_is_refused_and_the_rest_is_kept(helpline):
    pc, number = linked(helpline)
    data = bytes(range(256)) * 8  # two chunks of 1024 bytes
    body = {"filename": "bundle.tar.gz", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    upload = helpline.ok("POST", f"agent/tickets/{number}/uploads", pc, json=body)
    chunk = data[:1024]
    headers = {"X-Chunk-SHA256": hashlib.sha256(chunk).hexdigest(), "Content-Type": "application/octet-stream"}
    assert helpline.call("PUT", f"uploads/{upload['id']}/chunks/0", pc, content=chunk, headers=headers).status_code == 200
    second = data[1024:]
    request = helpline.signed(pc, "PUT", f"uploads/{upload['id']}/chunks/1", content=second,
                              headers={**headers, "X-Chunk-SHA256": hashlib.sha256(second).hexdigest()})
    swapped = helpline.http.build_request("PUT", request.url.path, headers=dict(request.headers), content=bytes(reversed(second)))
    response = helpline.http.send(swapped)
    assert response.status_code == 401 and helpline.answer_is_signed(swapped, response)
    assert refusals(helpline) == [(pc.agent_id, "altered body")]
    assert helpline.ok("GET", f"uploads/{upload['id']}", pc)["received"] == [0]  # what was stored stays


def test_nonces_are_kept_through_the_window_and_swept_after_it(helpline, clock):
    pc, _ = linked(helpline)
    request = helpline.signed(pc, "GET", "agent/tickets")
    assert helpline.http.send(request).status_code == 200
    with transaction(helpline.runtime.sessions) as session:
        assert sweep_nonces(session, now=clock.advance(minutes=4)) == 0
    assert helpline.http.send(request).status_code == 401  # still remembered: still a replay
    with transaction(helpline.runtime.sessions) as session:
        swept = sweep_nonces(session, now=clock.advance(minutes=2))
        assert swept >= 1 and session.query(AgentNonce).count() == 0
    # Gone from the table, yet the request is refused: its date is now outside the window.
    response = helpline.http.send(request)
    assert response.status_code == 401 and refusals(helpline)[-1] == (pc.agent_id, "stale date")


def test_an_unsigned_request_from_a_pc_without_a_link_still_bootstraps(helpline):
    """Enrolling, pairing with a code and opening a ticket need no earlier link; their answers are not signed."""
    engineer = helpline.token()
    code = helpline.pairing_code(engineer, helpline.ticket(engineer))["code"]
    fresh = PCKey("new-pc")
    response = helpline.call("POST", "pair", json={"code": code, **fresh.signed("pair", "code", code)})
    assert response.status_code == 200 and agent_requests.RESPONSE_SIGNATURE_HEADER not in response.headers
    assert [e.ip for e in helpline.audit("ticket.pair")] == [CLIENT_IP]


def test_the_agent_client_checks_every_answer_against_the_pinned_key(helpline, monkeypatch):
    """agent/http.py signs once for every call and refuses an answer the pinned key did not sign."""
    monkeypatch.setenv("HELPLINE_INSECURE_HTTP", "1")  # the in-process app answers as http://testserver
    pc, number = linked(helpline)
    transport = helpline.http._transport

    def client(pinned: str) -> HelplineClient:
        signer = AgentSigner(pc.agent_id, pc.key.key, pinned, clock=helpline.clock)
        return HelplineClient.connect("http://testserver", agent=signer, transport=transport)

    with client(helpline.runtime.public_key) as api:
        assert api.my_ticket(number).title == "Printer offline"
        with pytest.raises(NotFoundError):  # a signed refusal is believed
            api.my_ticket("T-999999")
    with client(signing.public_key_b64(signing.generate_key())) as api, pytest.raises(UnverifiedAnswerError) as refused:
        api.my_tickets()
    assert refused.value.status == ExitStatus.AUTH and "intercept" in refused.value.message
