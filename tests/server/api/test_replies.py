"""Users talking back from the PC: replies on the timeline, a small file in the blob store, fetched by engineers."""

from __future__ import annotations

import base64
import hashlib

import pytest

from protocol.schemas import MAX_ATTACHMENT_BYTES


def paired(helpline, title: str = "Printer offline"):
    engineer = helpline.token()
    number = helpline.ticket(engineer, title)
    pc = helpline.enrolled_pc("dana-laptop")
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    return engineer, number, pc


def attachment(name: str, data: bytes) -> dict:
    return {"filename": name, "content": base64.b64encode(data).decode()}


def test_a_reply_with_a_file_reaches_the_engineer(helpline, clock):
    engineer, number, pc = paired(helpline)
    data = b"\x89PNG fake screenshot \x00\x01" * 100
    clock.advance(minutes=3)
    answer = helpline.ok("POST", f"agent/tickets/{number}/replies", pc,
                         json={"message": "It printed one page, then stopped.", "attachment": attachment("../../etc/passwd", data)})
    assert answer["timeline"][-1]["kind"] == "reply" and answer["timeline"][-1]["actor"] == "PC dana-laptop"

    shown = helpline.ok("GET", f"tickets/{number}", engineer)
    assert shown["first_responded_at"] is None  # the user's reply is not the engineer's answer
    [stored] = shown["attachments"]
    assert stored["filename"] == "etc_passwd" and stored["hostname"] == "dana-laptop"
    assert stored["size"] == len(data) and stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert "It printed one page" in shown["timeline"][-1]["message"] and stored["id"] in shown["timeline"][-1]["message"]

    got = helpline.call("GET", f"tickets/{number}/attachments/{stored['id']}", engineer)
    assert got.status_code == 200 and got.content == data
    assert got.headers["x-content-sha256"] == stored["sha256"]
    assert 'filename="etc_passwd"' in got.headers["content-disposition"]
    assert [e.details["attachment_id"] for e in helpline.audit("attachment.download")] == [stored["id"]]
    assert [e.details["attachment_id"] for e in helpline.audit("ticket.reply")] == [stored["id"]]


def test_a_reply_moves_a_waiting_ticket_back_to_open(helpline):
    engineer, number, pc = paired(helpline)
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "waiting"})
    helpline.ok("POST", f"agent/tickets/{number}/replies", pc, json={"message": "Done, rebooted."})
    assert helpline.ok("GET", f"tickets/{number}", engineer)["status"] == "open"


def test_too_large_bad_or_foreign_replies_are_refused_and_nothing_is_kept(helpline, runtime):
    engineer, number, pc = paired(helpline)
    other = helpline.ticket(engineer, "Someone else's")
    too_big = helpline.call("POST", f"agent/tickets/{number}/replies", pc,
                            json={"message": "big", "attachment": attachment("big.bin", b"x" * (MAX_ATTACHMENT_BYTES + 1))})
    assert too_big.status_code in (413, 422)
    not_base64 = helpline.call("POST", f"agent/tickets/{number}/replies", pc,
                               json={"message": "bad", "attachment": {"filename": "a.txt", "content": "!!notbase64!!"}})
    assert not_base64.status_code == 422
    foreign = helpline.call("POST", f"agent/tickets/{other}/replies", pc, json={"message": "hi"})
    assert foreign.status_code == 404
    engineer_token = helpline.call("POST", f"agent/tickets/{number}/replies", engineer, json={"message": "hi"})
    assert engineer_token.status_code == 401
    assert helpline.ok("GET", f"tickets/{number}", engineer)["attachments"] == []
    assert list(runtime.blobs.iter_keys("attachments/")) == []


def test_a_closed_ticket_takes_no_replies(helpline):
    engineer, number, pc = paired(helpline)
    helpline.ok("PATCH", f"tickets/{number}", engineer, json={"status": "closed"})
    refused = helpline.call("POST", f"agent/tickets/{number}/replies", pc,
                            json={"message": "still broken", "attachment": attachment("a.txt", b"x")})
    assert refused.status_code == 409 and "helpline request" in refused.json()["error"]["hint"]
    assert [e.target_id for e in helpline.audit("ticket.reply.refused")] == [number]
    assert helpline.ok("GET", f"tickets/{number}", engineer)["attachments"] == []


@pytest.mark.parametrize("attachment_id", ["00000000-0000-0000-0000-000000000000", "not-an-id"])
def test_an_attachment_of_another_ticket_or_none_is_not_found(helpline, attachment_id):
    engineer, number, pc = paired(helpline)
    helpline.ok("POST", f"agent/tickets/{number}/replies", pc,
                json={"message": "file", "attachment": attachment("a.txt", b"hello")})
    other = helpline.ticket(engineer, "Other")
    stored = helpline.ok("GET", f"tickets/{number}", engineer)["attachments"][0]["id"]
    assert helpline.call("GET", f"tickets/{other}/attachments/{stored}", engineer).status_code == 404
    assert helpline.call("GET", f"tickets/{number}/attachments/{attachment_id}", engineer).status_code in (404, 422)
