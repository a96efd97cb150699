"""The server's signature on every answer to an agent's signed request.

An agent checks each answer against the server key it pinned
(:mod:`protocol.agent_requests`), so a ticket title, an engineer's note or an
error message cannot be rewritten on the way, nor an answer to one request
passed off as the answer to another. The signature covers the request as the
server received it (nonce, signature, method, target, signed body digest) and
the answer (status, body digest). Answers to agents are small JSON documents:
they are held until complete, then sent with the signature header. Errors that
escape every handler are answered here too, signed, so an agent can tell a
server failure from an interception.
"""

from __future__ import annotations

import hashlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol import agent_requests
from protocol.schemas import ErrorBody, ErrorDetail
from server.agent_requests import header_map, request_target
from server.runtime import ServerRuntime

log = logging.getLogger("helpline.server")

#: Answers to agents are held until complete to be signed; a longer one is passed on unsigned (agents refuse it).
MAX_SIGNED_BYTES = 16 * 1024 * 1024

_UNEXPECTED = ErrorBody(error=ErrorDetail(
    code="internal", message="The server hit an unexpected error.",
    hint="Try again; if it persists, give your administrator the time it happened.",
)).model_dump_json().encode()


class SignedAnswers:
    """ASGI middleware: sign the answer to every request that carries an agent's nonce and signature."""

    def __init__(self, app: ASGIApp, runtime: ServerRuntime):
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = header_map(scope)
        nonce = headers.get(agent_requests.NONCE_HEADER.lower())
        signature = headers.get(agent_requests.SIGNATURE_HEADER.lower())
        if not nonce or not signature:
            return await self.app(scope, receive, send)
        request = {"nonce": nonce, "request_signature": signature, "method": scope["method"],
                   "target": request_target(scope), "content_sha256": headers.get(agent_requests.CONTENT_HEADER.lower(), "")}
        start: Message | None = None
        body = bytearray()
        sent = passing = False

        async def hold(message: Message) -> None:
            nonlocal start, sent, passing
            if passing:
                return await send(message)
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if len(body) > MAX_SIGNED_BYTES and start is not None:
                    # Not an answer any agent asks for (a bundle download with copied headers): sent as is, unsigned.
                    sent = passing = True
                    await send(start)
                    await send({**message, "body": bytes(body)})
                elif not message.get("more_body") and start is not None:
                    sent = True
                    await self._send(send, start, bytes(body), request)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold)
        except Exception:
            if sent:
                raise
            log.exception("unexpected error on %s %s", scope["method"], scope.get("path"))
            start = {"type": "http.response.start", "status": 500,
                     "headers": [(b"content-type", b"application/json")]}
            await self._send(send, start, _UNEXPECTED, request)

    async def _send(self, send: Send, start: Message, body: bytes, request: dict) -> None:
        payload = agent_requests.response_payload(status=start["status"], body_sha256=hashlib.sha256(body).hexdigest(),
                                                  **request)
        signature = agent_requests.sign_response(self.runtime.signing_key, payload)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers += [(b"content-length", str(len(body)).encode()),
                    (agent_requests.RESPONSE_SIGNATURE_HEADER.lower().encode(), signature.encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
