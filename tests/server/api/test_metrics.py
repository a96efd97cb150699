"""GET /metrics: parsed with Prometheus's own text parser; the scrape token or an admin's token, nothing else."""

from __future__ import annotations

import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import Exposition

SCRAPE_TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def server_settings(server_settings, tmp_path):
    token_file = tmp_path / "metrics-token"
    token_file.write_text(SCRAPE_TOKEN + "\n")
    metrics = server_settings.metrics.model_copy(update={"token_file": token_file})
    return server_settings.model_copy(update={"metrics": metrics})


def scrape(helpline, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return helpline.http.get("/metrics", headers=headers)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_only_the_scrape_token_or_an_admin_reads_metrics(helpline):
    assert scrape(helpline, None).status_code == 401
    assert scrape(helpline, SCRAPE_TOKEN[:-1] + ("A" if SCRAPE_TOKEN[-1] != "A" else "B")).status_code == 401
    assert scrape(helpline, helpline.token()).status_code == 403  # an engineer
    assert scrape(helpline, helpline.admin()).status_code == 200
    answer = scrape(helpline, SCRAPE_TOKEN)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_metrics_parse_and_count_by_route_template_never_the_raw_path(helpline, clock):
    engineer = helpline.token()
    number = helpline.ticket(engineer, priority="urgent")
    helpline.ok("GET", f"tickets/{number}", engineer)
    helpline.call("GET", "tickets/T-99999", engineer)  # 404 on a known route
    helpline.http.get("/no/such/path/" + secrets.token_hex(4))  # no route at all
    helpline.enrolled_pc()
    clock.advance(hours=2)  # the urgent ticket is overdue
    text = scrape(helpline, SCRAPE_TOKEN).text
    found = samples(text)
    route = "/v1/tickets/{number}"
    assert found[("helpline_http_requests_total", (("method", "GET"), ("route", route), ("status", "2xx")))] == 1
    assert found[("helpline_http_requests_total", (("method", "GET"), ("route", route), ("status", "4xx")))] == 1
    assert found[("helpline_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "4xx")))] == 1
    assert "T-99999" not in text and "/no/such/path" not in text and number not in text
    assert found[("helpline_tickets_overdue", ())] == 1
    assert found[("helpline_agents", (("status", "active"),))] == 1
    assert found[("helpline_agents_connected", ())] == 0
    assert found[("helpline_bundles_stored", ())] == 0
    assert found[("helpline_snapshot_age_seconds_count", ())] == 0
    assert found[("helpline_snapshot_age_seconds_bucket", (("le", "+Inf"),))] == 0
    assert found[("helpline_sessions_active", ())] == 0
    assert found[("helpline_pcs_by_protection", (("state", "protected"),))] == 0


def test_label_values_and_help_are_escaped_for_the_parser():
    out = Exposition()
    nasty = 'a "quoted" back\\slash\nnewline'
    out.family("helpline_test", "gauge", "help with \\ and\nnewline", [({"route": nasty}, 1.5)])
    (family,) = text_string_to_metric_families(out.text())
    assert family.documentation == "help with \\ and\nnewline"
    assert family.samples[0].labels == {"route": nasty} and family.samples[0].value == 1.5
