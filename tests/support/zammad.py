"""A STAND-IN for Zammad's REST API on loopback (no Zammad runs here), for the receiver in deploy/examples/zammad.

It answers the two calls the receiver makes the way Zammad documents them (``POST /api/v1/tickets`` and
``POST /api/v1/ticket_articles``, token authentication ``Authorization: Token token=…``, JSON bodies), with
answers shaped like the ones Zammad returns (recorded fields: id, number, title, group_id, ticket_id, type…),
and refuses what Zammad would refuse: a wrong token (401), a missing required field or an unknown ticket
(422). It keeps every request so a test can check what was sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "zammad-stand-in-token-7f3a"


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ZammadStandIn:
    """Start with :meth:`start`, stop with :meth:`stop`; ``calls`` are the requests accepted, ``refused`` the others."""

    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    refused: list[tuple[Call, int]] = field(default_factory=list)
    tickets: dict[int, dict] = field(default_factory=dict)
    articles: list[dict] = field(default_factory=list)
    down: bool = False  # answer 503 to everything, as a Zammad being upgraded would

    def start(self) -> str:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                call = Call("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                status, answer = stand_in._answer(call)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _answer(self, call: Call) -> tuple[int, dict]:
        status, answer = self._check(call)
        if status >= 400:
            self.refused.append((call, status))
        else:
            self.calls.append(call)
        return status, answer

    def _check(self, call: Call) -> tuple[int, dict]:
        if self.down:
            return 503, {"error": "Service Unavailable"}
        if call.headers.get("authorization") != f"Token token={self.token}":
            return 401, {"error": "Invalid token!"}
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(call.body, dict):
            return 422, {"error": "Need JSON body"}
        body = call.body
        if call.path == "/api/v1/tickets":
            article = body.get("article")
            missing = [k for k in ("title", "group", "customer") if not body.get(k)]
            if missing or not isinstance(article, dict) or not article.get("body"):
                return 422, {"error": f"Missing required: {missing or ['article.body']}"}
            ticket_id = len(self.tickets) + 1
            self.tickets[ticket_id] = body
            return 201, {"id": ticket_id, "group_id": 1, "priority_id": 2, "state_id": 1, "organization_id": None,
                         "number": f"{31001 + ticket_id}", "title": body["title"], "owner_id": 1, "customer_id": 2,
                         "article_count": 1, "created_at": "2026-12-02T16:00:00.000Z"}
        if call.path == "/api/v1/ticket_articles":
            if body.get("ticket_id") not in self.tickets:
                return 422, {"error": "No such ticket"}
            if not body.get("body") or body.get("type") not in ("note", "email", "phone", "web"):
                return 422, {"error": "Missing required: body, type"}
            self.articles.append(body)
            return 201, {"id": 100 + len(self.articles), "ticket_id": body["ticket_id"], "type": body["type"],
                         "sender": "Agent", "subject": body.get("subject"), "body": body["body"],
                         "content_type": body.get("content_type", "text/plain"), "internal": body.get("internal", False),
                         "created_at": "2026-12-02T16:00:01.000Z"}
        return 404, {"error": "No route matches"}
