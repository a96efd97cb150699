"""``GET /metrics``: Prometheus text format, for the scrape token of ``[metrics] token_file`` or an admin's token.

Decision: a scraper gets its own long-lived bearer token from a file the admin writes (so no account's
token sits in the Prometheus configuration), compared in constant time; an admin's API token also reads the
metrics, for a quick look. Anything else is refused (401, or 403 for an engineer's token).
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from protocol.errors import AuthError, UnavailableError
from server import metrics
from server.api.deps import Bearer, Now, ReadSession, State, current_account, current_admin

log = logging.getLogger("helpline.server.metrics")

router = APIRouter(tags=["health"])
MIN_TOKEN_CHARS = 32


def scrape_token(state) -> str | None:
    """The scrape token in ``[metrics] token_file`` (None if none is configured); UnavailableError if unreadable."""
    path = state.settings.metrics.token_file
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read the metrics token file %s: %s", path, exc)
        raise UnavailableError("The server cannot read its metrics token file.",
                               hint="An administrator should check [metrics] token_file.") from None
    if len(token) < MIN_TOKEN_CHARS:
        log.error("the metrics token in %s is shorter than %d characters: refused", path, MIN_TOKEN_CHARS)
        return None
    return token


@router.get("/metrics", summary="Prometheus metrics (text format 0.0.4); the scrape token or an admin's token",
            response_class=Response, responses={200: {"content": {metrics.CONTENT_TYPE: {}}}})
def get_metrics(request: Request, session: ReadSession, state: State, credentials: Bearer, now: Now) -> Response:
    given = credentials.credentials if credentials is not None else ""
    expected = scrape_token(state)
    if not (expected and given and hmac.compare_digest(given.encode(), expected.encode())):
        if not given:
            raise AuthError("Metrics need the scrape token or an admin's token.",
                            hint="Give Prometheus the token in [metrics] token_file as its bearer token.")
        current_admin(current_account(request, session, credentials, now))
    body = metrics.render(session, request.app.state.metrics, now=now)
    return Response(body, media_type=metrics.CONTENT_TYPE)
