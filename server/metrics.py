"""Prometheus metrics: the HTTP middleware's counts and the figures read from the database, as text format 0.0.4.

``GET /metrics`` (server/api/metrics.py) is not public: it needs the scrape token of ``[metrics] token_file``
(compared in constant time) or an admin's API token. Every series is bounded: HTTP requests are labelled by
the route's template (``/v1/tickets/{reference}``), never the raw path, with ``unmatched`` for paths no route
has; snapshot ages are counts per protection state and one histogram with fixed buckets.

Counts of HTTP requests are this process's own (each server process is its own scrape target; Prometheus
adds them up); the figures from the database are the deployment's.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.schemas import AgentStatus, ProtectionState
from protocol.sessions import SessionState
from protocol.webhooks import DeliveryState
from server.models import Agent, Bundle, Protection, RemoteSession, Ticket, Upload, WebhookDelivery

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The agents' request channel: a GET held open while the PC waits for engineers' requests.
AGENT_CHANNEL = ("GET", "/v1/agent/requests")
#: Upper bounds (seconds) of the snapshot age histogram's buckets: an hour, six, the default stale limit, 3, 7, 30 days.
AGE_BUCKETS = (3600.0, 6 * 3600.0, 26 * 3600.0, 3 * 86400.0, 7 * 86400.0, 30 * 86400.0)
UNMATCHED = "unmatched"


class HttpMetrics:
    """This process's HTTP counts: requests by route template, method and status class; agents' channels held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.agent_channels = 0

    def count(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self.requests[(route, method, f"{status // 100}xx")] += 1

    def channel(self, change: int) -> None:
        with self._lock:
            self.agent_channels += change

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], int]:
        with self._lock:
            return dict(self.requests), self.agent_channels


class MetricsMiddleware:
    """Count every HTTP request by its route's template (known once routing is done) and the answer's status class."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        method = scope["method"] if scope["method"] in _METHODS else "other"
        channel = (scope["method"], scope["path"]) == AGENT_CHANNEL

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if channel:
            self.metrics.channel(+1)
        try:
            await self.app(scope, receive, counted_send)
        finally:
            if channel:
                self.metrics.channel(-1)
            route = scope.get("route")
            self.metrics.count(getattr(route, "path", None) or UNMATCHED, method, status)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- the text format ------------------------------------------------------------------------------


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


class Exposition:
    """Text format 0.0.4 written family by family: ``# HELP``, ``# TYPE``, then the samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]], *, suffix: str = "") -> None:
        self.lines.append(f"# HELP {name} {_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name + suffix, labels, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        inner = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(session: Session, http: HttpMetrics, *, now: datetime) -> str:
    """Every metric, as the body of an answer to a scrape."""
    out = Exposition()
    requests, channels = http.snapshot()
    out.family("helpline_http_requests_total", "counter",
               "HTTP requests served by this process, by route template, method and status class.",
               (({"route": r, "method": m, "status": s}, n) for (r, m, s), n in sorted(requests.items())))
    out.family("helpline_agents_connected", "gauge",
               "Agents' request channels (long polls) this process holds open now.", [({}, channels)])

    by_status = dict(session.execute(select(Agent.status, func.count()).group_by(Agent.status)).all())
    out.family("helpline_agents", "gauge", "Agents by status.",
               (({"status": s}, by_status.get(s, 0)) for s in sorted(set(by_status) | {a.value for a in AgentStatus})))

    bundles, bundle_bytes = session.execute(select(func.count(), func.coalesce(func.sum(Bundle.size), 0))).one()
    out.family("helpline_bundles_stored", "gauge", "Diagnostic bundles stored.", [({}, bundles)])
    out.family("helpline_bundle_bytes_stored", "gauge", "Bytes of the diagnostic bundles stored.", [({}, bundle_bytes)])
    unfinished = session.scalar(select(func.count()).select_from(Upload).where(Upload.completed_at.is_(None),
                                                                               Upload.expires_at > now))
    out.family("helpline_uploads_unfinished", "gauge", "Uploads started and not yet finished or expired.",
               [({}, unfinished or 0)])

    sessions = dict(session.execute(select(RemoteSession.state, func.count()).group_by(RemoteSession.state)).all())
    active = sum(sessions.get(s.value, 0) for s in (SessionState.APPROVED, SessionState.ACTIVE))
    out.family("helpline_sessions_active", "gauge", "Remote sessions approved or running.", [({}, active)])
    out.family("helpline_sessions", "gauge", "Remote sessions recorded, by state.",
               (({"state": s.value}, sessions.get(s.value, 0)) for s in SessionState))

    states = dict(session.execute(select(Protection.state, func.count()).group_by(Protection.state)).all())
    out.family("helpline_pcs_by_protection", "gauge", "PCs by snapshot protection state.",
               (({"state": s.value}, states.get(s.value, 0)) for s in ProtectionState))
    ages = [(now - at).total_seconds() for at in session.scalars(
        select(Protection.last_snapshot_at).where(Protection.last_snapshot_at.is_not(None)))]
    out.family("helpline_snapshot_age_seconds", "histogram", "Age of each PC's last good snapshot.", [])
    for bound in (*AGE_BUCKETS, math.inf):
        out.sample("helpline_snapshot_age_seconds_bucket", {"le": _number(bound)}, sum(1 for a in ages if a <= bound))
    out.sample("helpline_snapshot_age_seconds_sum", {}, sum(ages))
    out.sample("helpline_snapshot_age_seconds_count", {}, len(ages))

    from server.tickets import awaiting_answer

    overdue = session.scalar(select(func.count()).select_from(Ticket).where(awaiting_answer(),
                                                                          Ticket.first_response_due <= now))
    out.family("helpline_tickets_overdue", "gauge", "Open tickets whose first response is overdue.", [({}, overdue or 0)])

    hooks = dict(session.execute(select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
    out.family("helpline_webhook_deliveries", "gauge", "Webhook deliveries kept, by state.",
               (({"state": s.value}, hooks.get(s.value, 0)) for s in DeliveryState))
    return out.text()
