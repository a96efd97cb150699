"""The ASGI application: routers, error bodies, request limits, worker threads and background jobs."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from protocol.schemas import ErrorBody, ErrorDetail, describe_invalid
from protocol.errors import HelplineError, http_status_of
from protocol.untrusted import is_control
from server import __version__
from server.api import (
    accounts, agents, audit, auth, health, keys, metrics, pc_requests, policies, restic_rest, sessions, snapshots,
    tickets, uploads, webhooks,
)
from server.api.deps import audience_of
from server.ratelimit import RetryAfter
from server.jobs import run_jobs
from server.metrics import HttpMetrics, MetricsMiddleware
from server.runtime import ServerRuntime
from server.relay import route as relay_route
from server.relay.hub import relay_hub
from server.protocol_version import ProtocolVersion
from server.signed_answers import SignedAnswers

log = logging.getLogger("helpline.server")

_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited"}


def error_response(status: int, code: str, message: str, hint: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, hint=hint))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _helpline_error(request: Request, exc: HelplineError) -> JSONResponse:
    status, code = http_status_of(exc)
    if status == 500:
        log.error("unmapped error on %s %s: %s", request.method, request.url.path, exc.message)
    headers = {}
    if isinstance(exc, RetryAfter):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(status, code, exc.message, exc.hint_for(audience_of(request)), headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid", describe_invalid(exc.errors()), None)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (a NUL byte in a path or query, an out-of-range number).
    return error_response(422, "invalid", "The request holds a value the server cannot store.", "Remove control characters and check numbers.")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc.detail), None, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "The server hit an unexpected error.", "Try again; if it persists, give your administrator the time it happened.")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413) before they reach a handler.

    Paths under ``exempt`` (chunked uploads) and ending in ``exempt_ends`` (session
    recordings) enforce their own limits.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = (), exempt_ends: tuple[str, ...] = ()):
        self.app, self.limit, self.exempt, self.exempt_ends = app, limit, exempt, exempt_ends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"].startswith(self.exempt)
                or (self.exempt_ends and scope["path"].endswith(self.exempt_ends))):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = error_response(413, "too_large", f"The request body is over {self.limit} bytes.", None)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            response = error_response(413, "too_large", f"The request body is over {self.limit} bytes.", None)
            await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class PrintablePath:
    """Refuse (400) a request whose decoded path holds a control or other invisible character, on every route.

    No ticket number, username or id has one, and a NUL or an escape must reach
    neither a database nor a log; the answer does not echo the path.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _printable_path(scope["path"]):
            response = error_response(400, "bad_request", "The request's path holds control characters.",
                                      "Ticket numbers, usernames and ids are plain printable text.")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _printable_path(path: str) -> bool:
    return path.isprintable() if path.isascii() else not any(is_control(ch) or ch == "\ufffd" for ch in path)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Size the worker threads, keep the doorbell's bus to the other server processes and the background
    jobs' schedule for as long as the app serves."""
    state: ServerRuntime = app.state.helpline
    anyio.to_thread.current_default_thread_limiter().total_tokens = state.settings.worker_threads
    if state.bus is not None:
        state.bus.start()
    task = asyncio.create_task(run_jobs(state))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        if state.bus is not None:
            await anyio.to_thread.run_sync(state.bus.stop)


def create_app(state: ServerRuntime) -> FastAPI:
    """Return the ASGI app serving ``state``; the caller owns the state's lifetime."""
    app = FastAPI(
        lifespan=_lifespan,
        title="Helpline",
        version=__version__,
        description="Pairs PCs with tickets, stores what they send and relays consent-gated sessions.",
        responses={
            401: {"model": ErrorBody, "description": "Missing, invalid or expired token"},
            422: {"model": ErrorBody, "description": "Invalid input"},
        },
    )
    app.state.helpline = state
    app.add_exception_handler(HelplineError, _helpline_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(UnicodeEncodeError, _data_error)
    app.add_exception_handler(Exception, _unexpected)
    for module in (health, auth, accounts, tickets, agents, audit, uploads, snapshots, restic_rest, pc_requests,
                   sessions, policies, webhooks, metrics, relay_route, keys):
        app.include_router(module.router)
    app.include_router(restic_rest.rest)
    relay_hub(app)
    app.add_middleware(BodyLimit, limit=state.settings.max_request_bytes, exempt=("/v1/uploads/", "/v1/restic/"),
                       exempt_ends=("/recording",))
    app.add_middleware(PrintablePath)
    app.add_middleware(ProtocolVersion)  # inside SignedAnswers: a too-old agent's refusal is signed too
    app.state.metrics = HttpMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # sees the route chosen; refusals before routing count as unmatched
    app.add_middleware(SignedAnswers, runtime=state)  # outermost: refusals by the body limit and bad paths are signed too
    return app
