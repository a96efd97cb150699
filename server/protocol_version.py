"""Protocol version negotiation on every request: refuse agents too old for this server, say which version it speaks.

An agent states its version in the ``Helpline-Protocol`` header
(protocol.version); a request without it is version 1 (agents from before the
header), accepted while ``MIN_AGENT_PROTOCOL`` allows it. An agent older than
that is answered 426 with one clear line, before any route runs. Every answer
carries the server's own version, so an agent can tell a route missing on an
older server from a thing that does not exist. The version a signed agent
request states is recorded on the agent (server.agent_requests).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import ExitStatus
from protocol import version as versions
from protocol.version import PROTOCOL_HEADER, PROTOCOL_VERSION, parse_version, too_old_message

_HEADER = PROTOCOL_HEADER.lower().encode("latin-1")
_ANSWER = (_HEADER, str(PROTOCOL_VERSION).encode("ascii"))


class ProtocolVersion:
    """ASGI middleware: 426 for an agent older than MIN_AGENT_PROTOCOL, 400 for a header that is no version."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from server.app import error_response  # the app module imports this one

        raw = [v for k, v in scope.get("headers") or [] if k.lower() == _HEADER]
        stated = parse_version(raw[-1].decode("latin-1") if raw else None)

        async def with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), _ANSWER]}
            await send(message)

        if stated is None:
            response = error_response(400, "invalid", f"The {PROTOCOL_HEADER} header is not a protocol version.",
                                      "Send a whole number, or leave the header out.")
            return await response(scope, receive, with_version)
        if stated < versions.MIN_AGENT_PROTOCOL:  # read per request: a deployment (or a test) may raise it
            response = error_response(426, "upgrade_required", "T" + too_old_message(stated, versions.MIN_AGENT_PROTOCOL)[1:] + ".",
                                      f"Install a newer Helpline agent on this PC (exit status "
                                      f"{int(ExitStatus.CONFIG)} until then).")
            return await response(scope, receive, with_version)
        return await self.app(scope, receive, with_version)
