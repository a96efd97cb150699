#!/usr/bin/env python3
"""Receive Helpline's signed webhooks and turn them into Zammad tickets and ticket articles.

A small, standard-library-only receiver. Run it next to Zammad (or anywhere both can reach):

    export HELPLINE_WEBHOOK_SECRET=hlw_...   # printed once by `helpline webhook add`
    export ZAMMAD_TOKEN=...                  # a Zammad access token with ticket.agent permission
    python3 helpline_zammad.py --listen 127.0.0.1:8765 --zammad-url https://zammad.example.org \\
        --group Users --customer helpdesk@example.org --state-file /var/lib/helpline-zammad/state.json

then, on the Helpline side:

    helpline webhook add https://receiver.example.org/ --events all

What it does with each delivery:

1. verifies ``Helpline-Webhook-Signature`` (HMAC-SHA256 of ``<timestamp>.<raw body>`` with the secret) in
   constant time and refuses a timestamp more than five minutes off (401): only Helpline can make it act;
2. drops an event id it has handled before (Helpline retries until it gets a 2xx);
3. ``ticket.opened``: creates a Zammad ticket (``POST /api/v1/tickets``) and remembers which Zammad ticket
   stands for the Helpline ticket; every other event: adds an internal note to that ticket
   (``POST /api/v1/ticket_articles``), creating the ticket first if the receiver never saw it opened;
4. answers 204, or 502 when Zammad refused or was away, so that Helpline tries again later.

Titles and host names in events come from users and PCs: they are sent on as plain text
(``content_type: text/plain``) with control characters removed, never as HTML.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

log = logging.getLogger("helpline-zammad")

MAX_BODY = 1 << 20
TOLERANCE_SECONDS = 300
SEEN_KEPT = 2000


def verify(secret: str, timestamp: str, body: bytes, header: str, *, now: float | None = None) -> bool:
    """Whether ``header`` is Helpline's signature of ``body`` at ``timestamp``, made recently."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def plain(text: object, limit: int = 500) -> str:
    """Untrusted text as one plain line: control characters dropped, cut to ``limit`` characters."""
    return "".join(ch for ch in str(text) if ch.isprintable())[:limit]


class ZammadError(Exception):
    pass


class Zammad:
    """The two calls of Zammad's REST API this receiver makes, with token authentication."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0):
        self.base_url, self.token, self.timeout = base_url.rstrip("/"), token, timeout

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Token token={self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ZammadError(f"Zammad answered {exc.code} to {path}: {plain(exc.read()[:300].decode(errors='replace'))}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ZammadError(f"Zammad could not be reached for {path}: {exc}") from None

    def create_ticket(self, title: str, group: str, customer: str, subject: str, text: str) -> int:
        answer = self._post("/api/v1/tickets", {
            "title": title, "group": group, "customer": customer,
            "article": {"subject": subject, "body": text, "type": "note", "internal": False,
                        "content_type": "text/plain"}})
        return int(answer["id"])

    def add_article(self, ticket_id: int, subject: str, text: str) -> int:
        answer = self._post("/api/v1/ticket_articles", {
            "ticket_id": ticket_id, "subject": subject, "body": text, "content_type": "text/plain",
            "type": "note", "internal": True})
        return int(answer["id"])


class State:
    """Which Zammad ticket stands for which Helpline ticket, and the event ids handled; kept in a JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        data = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.tickets: dict[str, int] = data.get("tickets", {})
        self.seen: list[str] = data.get("seen", [])

    def save(self) -> None:
        if self.path is None:
            return
        self.seen = self.seen[-SEEN_KEPT:]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"tickets": self.tickets, "seen": self.seen}))
        os.replace(temporary, self.path)


def describe(kind: str, data: dict) -> tuple[str, str]:
    """(subject, plain-text body) of an event for a Zammad article."""
    ticket = data.get("ticket") or {}
    label = plain(ticket.get("number", "?"), 20)
    lines = {
        "ticket.opened": f"Helpline ticket {label} was opened ({plain(ticket.get('channel', ''), 20)}, "
                         f"{plain(ticket.get('priority', ''), 20)} priority).",
        "ticket.first_response_due_soon": f"The first response to {label} is due soon "
                                          f"({plain(ticket.get('first_response_due', ''), 40)}).",
        "ticket.overdue": f"The first response to {label} is overdue (it was due "
                          f"{plain(ticket.get('first_response_due', ''), 40)}).",
        "diagnostics.arrived": "Diagnostics arrived from PC {} ({} files, {} bytes).".format(
            plain((data.get("bundle") or {}).get("hostname", "?"), 100), int((data.get("bundle") or {}).get("files", 0)),
            int((data.get("bundle") or {}).get("size", 0))),
        "session.ended": "A remote session ended: {} ({} s).".format(
            plain((data.get("session") or {}).get("reason", ""), 200),
            int((data.get("session") or {}).get("duration_seconds", 0))),
        "restore.done": "A restore on PC {} finished: {}.".format(
            plain((data.get("restore") or {}).get("hostname", "?"), 100),
            plain((data.get("restore") or {}).get("outcome", "?"), 20)),
        "webhook.test": "A test event from Helpline.",
    }
    text = lines.get(kind, f"Helpline event {plain(kind, 60)}.")
    title = plain(ticket.get("title", ""), 200)
    body = "\n".join(part for part in (text, f"Title: {title}" if title else "",
                                        f"Link: {plain(ticket['link'], 300)}" if ticket.get("link") else "") if part)
    return f"[{label}] {plain(kind, 60)}", body


class Receiver:
    """Verifies deliveries and turns them into Zammad calls."""

    def __init__(self, secret: str, zammad: Zammad, state: State, *, group: str, customer: str):
        self.secret, self.zammad, self.state, self.group, self.customer = secret, zammad, state, group, customer

    def handle(self, headers, body: bytes) -> int:
        """Process one delivery; return the HTTP status to answer with."""
        if not verify(self.secret, headers.get("Helpline-Webhook-Timestamp", ""), body,
                      headers.get("Helpline-Webhook-Signature", "")):
            log.warning("refused a delivery with a bad or stale signature")
            return 401
        try:
            event = json.loads(body)
            event_id, kind, data = str(event["id"]), str(event["kind"]), event.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return 400
        if event_id in self.state.seen:
            return 204
        try:
            self._apply(kind, data)
        except ZammadError as exc:
            log.error("%s", exc)
            return 502
        self.state.seen.append(event_id)
        self.state.save()
        return 204

    def _apply(self, kind: str, data: dict) -> None:
        subject, text = describe(kind, data)
        ticket = data.get("ticket") or {}
        label = plain(ticket.get("number", ""), 20)
        if not label:
            return  # an event about no ticket (a test, a restore without one): nothing to attach it to
        zammad_id = self.state.tickets.get(label)
        if zammad_id is None:
            title = f"[{label}] {plain(ticket.get('title', ''), 200)}".strip()
            self.state.tickets[label] = self.zammad.create_ticket(title, self.group, self.customer, subject, text)
            self.state.save()
            if kind == "ticket.opened":
                return
            zammad_id = self.state.tickets[label]
        self.zammad.add_article(zammad_id, subject, text)


def serve(receiver: Receiver, host: str, port: int) -> HTTPServer:
    """An HTTP server (not yet serving) that hands every POST to ``receiver``; one request at a time."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            length = self.headers.get("Content-Length", "")
            if not length.isdigit() or int(length) > MAX_BODY:
                return self._answer(413 if length.isdigit() else 411)
            self._answer(receiver.handle(self.headers, self.rfile.read(int(length))))

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            log.info("%s %s", self.address_string(), format % args)

    return HTTPServer((host, port), Handler)


def _secret(value: str | None, file: str | None, name: str) -> str:
    if file:
        return Path(file).read_text().strip()
    if value:
        return value
    sys.exit(f"helpline_zammad: set {name} (or give its --*-file)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Turn Helpline webhooks into Zammad tickets and articles.")
    parser.add_argument("--listen", default="127.0.0.1:8765", help="host:port to listen on")
    parser.add_argument("--zammad-url", required=True, help="Zammad's base URL, e.g. https://zammad.example.org")
    parser.add_argument("--group", default="Users", help="the Zammad group new tickets go to")
    parser.add_argument("--customer", required=True, help="the Zammad customer (e-mail) new tickets are for")
    parser.add_argument("--state-file", help="where the ticket map and handled event ids are kept")
    parser.add_argument("--secret-file", help="a file holding the webhook secret (else HELPLINE_WEBHOOK_SECRET)")
    parser.add_argument("--token-file", help="a file holding the Zammad token (else ZAMMAD_TOKEN)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = _secret(os.environ.get("HELPLINE_WEBHOOK_SECRET"), args.secret_file, "HELPLINE_WEBHOOK_SECRET")
    token = _secret(os.environ.get("ZAMMAD_TOKEN"), args.token_file, "ZAMMAD_TOKEN")
    host, _, port = args.listen.rpartition(":")
    receiver = Receiver(secret, Zammad(args.zammad_url, token), State(Path(args.state_file) if args.state_file else None),
                        group=args.group, customer=args.customer)
    server = serve(receiver, host.strip("[]") or "127.0.0.1", int(port))
    log.info("listening on %s", args.listen)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
