"""Webhooks through a real server and the real CLI: an admin adds endpoints, a PC opens a ticket, and the server
delivers, signed, to a loopback receiver that fails twice before it accepts, and to the Zammad example receiver
talking to a STAND-IN for Zammad's REST API (tests/support/zammad.py; no Zammad runs here)."""

from __future__ import annotations

import importlib.util
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from protocol.webhooks import EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.zammad import ZammadStandIn

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FAST = {  # deliveries looked for every 0.3 s and retried after at most 0.4 s, so the test waits seconds, not minutes
    "webhooks__deliver_seconds": "0.3", "webhooks__backoff_seconds": "0.4", "webhooks__allow_private_networks": "true",
    "webhooks__deadline_check_seconds": "0.3", "webhooks__due_soon_minutes": "100000",
}
WAIT_SECONDS = 30


class FlakyReceiver:
    """A loopback HTTP receiver answering 500 to its first ``failures`` POSTs and 200 after; keeps them all."""

    def __init__(self, failures: int):
        self.failures, self.received = failures, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((dict(self.headers), body))
                status = 500 if len(receiver.received) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"waited {WAIT_SECONDS} s for {what}")


def enrolled_pc(admin_pc, make_pc, server):
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    pc = make_pc("pc")
    pc.ok("agent", "enroll", server.url, token)
    return pc


def test_a_pc_opened_ticket_reaches_a_receiver_that_fails_twice_then_accepts(server_factory, make_pc):
    server = server_factory(**FAST)
    admin_pc = make_pc("admin")
    admin_pc.login(server)
    receiver = FlakyReceiver(failures=2)
    try:
        hook = admin_pc.ok("webhook", "add", receiver.url, "--events", "ticket.opened", "--json").json()
        pc = enrolled_pc(admin_pc, make_pc, server)
        number = pc.ok("request", "Cannot print", "--json").json()["ticket"]["number"]
        wait_for(lambda: len(receiver.received) >= 3, "the third attempt")
        deliveries = admin_pc.ok("webhook", "deliveries", "--json").json()
        wait_for(lambda: admin_pc.ok("webhook", "deliveries", "--json").json()[0]["state"] == "delivered",
                 "the delivery to be recorded")
        (delivery,) = admin_pc.ok("webhook", "deliveries", "--json").json()
        assert (delivery["state"], delivery["attempts"], delivery["kind"]) == ("delivered", 3, "ticket.opened")
        assert deliveries and admin_pc.ok("webhook", "deliveries", "--failed", "--json").json() == []
        for headers, body in receiver.received:
            assert headers[EVENT_HEADER] == "ticket.opened"
            assert verify(hook["secret"], headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
        assert number in receiver.received[-1][1].decode()
        listed = admin_pc.ok("webhook", "list").stdout
        assert receiver.url in listed and hook["secret"] not in listed
        assert "delivered" in admin_pc.ok("webhook", "deliveries").stdout

        admin_pc.ok("webhook", "test", str(hook["id"]))
        wait_for(lambda: len(receiver.received) >= 4, "the test event")
        assert receiver.received[3][0][EVENT_HEADER] == "webhook.test"
        admin_pc.ok("webhook", "remove", str(hook["id"]))
        assert admin_pc.ok("webhook", "list", "--json").json() == []
        refused = admin_pc.run("webhook", "add", "ftp://127.0.0.1/x", "--events", "ticket.opened")
        assert refused.code != 0 and "http:// or https://" in refused.stderr
    finally:
        receiver.stop()


def test_the_zammad_example_files_a_pc_opened_ticket_and_a_note(server_factory, make_pc, tmp_path):
    server = server_factory(**FAST)
    admin_pc = make_pc("admin")
    admin_pc.login(server)
    zammad = ZammadStandIn()
    zammad_url = zammad.start()
    spec = importlib.util.spec_from_file_location("helpline_zammad", ROOT / "deploy/examples/zammad/helpline_zammad.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    receiver = None
    try:
        # The secret exists only once the endpoint is added; the receiver starts on a port chosen first.
        receiving = example.Receiver("", example.Zammad(zammad_url, zammad.token), example.State(tmp_path / "z.json"),
                                     group="Users", customer="helpdesk@example.org")
        receiver = example.serve(receiving, "127.0.0.1", 0)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        hook = admin_pc.ok("webhook", "add", f"http://127.0.0.1:{receiver.server_address[1]}/", "--events", "all",
                           "--json").json()
        receiving.secret = hook["secret"]
        pc = enrolled_pc(admin_pc, make_pc, server)
        number = pc.ok("request", "Outlook crashes", "--json").json()["ticket"]["number"]
        wait_for(lambda: zammad.articles, "a Zammad article")
        assert zammad.refused == []
        ticket = zammad.tickets[1]
        assert ticket["title"] == f"[{number}] Outlook crashes" and ticket["group"] == "Users"
        assert zammad.calls[0].headers["authorization"] == f"Token token={zammad.token}"
        article = zammad.articles[0]
        assert article["ticket_id"] == 1 and f"[{number}] ticket.first_response_due_soon" == article["subject"]
    finally:
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()
        zammad.stop()
