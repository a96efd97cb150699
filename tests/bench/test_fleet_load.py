"""The fleet load simulator: its verdicts, and one tiny run against a real server (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from bench.fleet_load import Figures, main, parse_args, verdicts


def test_verdicts_hold_the_target_and_count_undelivered_requests():
    held = Figures("helpline", 5000, up_min=5000, held_min=4990, held_max=5000, rss_peak=700 << 20, requests_sent=3,
                   delivered=3, latencies_s=[0.01, 0.2, 1.5])
    assert [line.rsplit(" ", 1)[-1] for line in verdicts(held)[:3]] == ["PASS", "PASS", "PASS"]
    short = Figures("helpline", 5000, up_min=4999, rss_peak=1 << 30, requests_sent=3, delivered=2,
                    latencies_s=[0.01, 0.2])
    assert [line.rsplit(" ", 1)[-1] for line in verdicts(short)[:3]] == ["FAIL", "FAIL", "FAIL"]
    slow = Figures("helpline", 5000, up_min=5000, rss_peak=1, requests_sent=1, delivered=1, latencies_s=[2.5])
    assert verdicts(slow)[2].endswith("FAIL")


def test_every_run_is_bounded_by_a_deadline():
    args = parse_args(["--agents", "20", "--duration", "5"])
    assert 5 < args.deadline < 600
    with pytest.raises(SystemExit):
        parse_args(["--agents", "0"])


@pytest.mark.e2e
def test_a_tiny_fleet_gets_every_request(tmp_path, capsys):
    out = tmp_path / "fleet.json"
    code = main(["--agents", "20", "--duration", "5", "--requests", "5", "--wait", "5", "--baseline",
                 "--request-poll-seconds", "60", "--json", str(out), "--work-dir", str(tmp_path / "work")])
    assert code == 0
    report = json.loads(out.read_text())
    helpline, floor = report["runs"]
    assert helpline["enrolled"] == 20 and helpline["enroll_errors"] == 0 and helpline["connected"] == 20
    assert helpline["requests_sent"] == 5 and helpline["delivered"] == 5 and helpline["requests_failed"] == 0
    assert helpline["poll_errors"] == 0 and helpline["polls"] > 0 and helpline["rss_peak"] > 0
    assert helpline["delivery_s"]["max"] >= helpline["delivery_s"]["p50"] >= 0
    assert helpline["server_delivery_s"]["max"] >= helpline["server_delivery_s"]["p50"] >= 0
    assert floor["label"].startswith("floor") and floor["connected"] == 20 and floor["rss_peak"] > 0
    printed = capsys.readouterr().out
    assert "| helpline (request_poll_seconds 60) | " in printed and "0 of 5 not delivered: PASS" in printed
    assert "the server's own record, creation to delivery" in printed
    assert "No peer agent exists" in printed and "server RSS peak / floor's = " in printed
