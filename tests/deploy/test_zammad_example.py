"""The Zammad example receiver (deploy/examples/zammad/helpline_zammad.py) against a STAND-IN for Zammad's REST API
on loopback (tests/support/zammad.py: no Zammad runs here): signatures checked, events become a ticket and notes."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from protocol.webhooks import signature
from tests.support.zammad import ZammadStandIn

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hlw_test-secret-for-the-zammad-example"


def load_example():
    spec = importlib.util.spec_from_file_location("helpline_zammad", ROOT / "deploy/examples/zammad/helpline_zammad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def zammad():
    stand_in = ZammadStandIn()
    url = stand_in.start()
    stand_in.url = url
    yield stand_in
    stand_in.stop()


@pytest.fixture
def receiver(zammad, tmp_path):
    example = load_example()
    state = example.State(tmp_path / "state.json")
    server = example.serve(example.Receiver(SECRET, example.Zammad(zammad.url, zammad.token), state,
                                            group="Users", customer="helpdesk@example.org"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def post(url: str, event: dict, *, secret: str = SECRET, timestamp: int | None = None) -> int:
    body = json.dumps(event).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Helpline-Webhook-Id": event["id"], "Helpline-Webhook-Event": event["kind"],
        "Helpline-Webhook-Timestamp": stamp, "Helpline-Webhook-Signature": signature(secret, stamp, body)})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def event(event_id: str, kind: str, number: str = "T-1042", **more) -> dict:
    ticket = {"number": number, "title": "Printer \x1b[31moffline", "priority": "normal", "status": "new",
              "channel": "self_service", "first_response_due": "2026-12-02T20:00:00+00:00"}
    return {"id": event_id, "kind": kind, "created_at": "2026-12-02T16:00:00+00:00", "data": {"ticket": ticket, **more}}


def test_an_opened_ticket_becomes_a_zammad_ticket_and_later_events_its_notes(receiver, zammad):
    url, state = receiver
    assert post(url, event("e1", "ticket.opened")) == 204
    assert post(url, event("e2", "diagnostics.arrived", bundle={"hostname": "pc-7", "files": 12, "size": 3000})) == 204
    assert zammad.refused == []
    created, noted = zammad.calls
    assert created.path == "/api/v1/tickets" and created.body["title"] == "[T-1042] Printer [31moffline"  # no ESC
    assert created.body["article"]["content_type"] == "text/plain"
    assert noted.path == "/api/v1/ticket_articles" and noted.body["ticket_id"] == 1 and noted.body["internal"] is True
    assert "pc-7 (12 files, 3000 bytes)" in noted.body["body"]
    assert state.tickets == {"T-1042": 1}


def test_a_bad_or_stale_signature_is_refused_and_reaches_nothing(receiver, zammad):
    url, _ = receiver
    assert post(url, event("e1", "ticket.opened"), secret="hlw_wrong") == 401
    assert post(url, event("e1", "ticket.opened"), timestamp=int(time.time()) - 3600) == 401
    assert zammad.calls == []


def test_a_repeated_event_is_applied_once(receiver, zammad):
    url, _ = receiver
    assert post(url, event("e1", "ticket.opened")) == 204
    assert post(url, event("e1", "ticket.opened")) == 204
    assert len(zammad.calls) == 1


def test_zammad_away_is_a_502_so_helpline_retries(receiver, zammad):
    url, _ = receiver
    zammad.down = True
    assert post(url, event("e1", "ticket.overdue")) == 502
    zammad.down = False
    assert post(url, event("e1", "ticket.overdue")) == 204  # the retry: a ticket first, then the note
    assert [c.path for c in zammad.calls] == ["/api/v1/tickets", "/api/v1/ticket_articles"]
