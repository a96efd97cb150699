"""The server load benchmark: its figures, its verdicts, and one tiny run against a real server."""

from __future__ import annotations

import json

import pytest

from bench.server_load import Level, main, percentile, verdicts


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_verdicts_compare_fifty_clients_with_one_and_count_errors():
    one = Level("read", 1, requests=100, elapsed_s=1.0)
    fifty = Level("read", 50, requests=100, errors=0, elapsed_s=2.0)
    assert [v.rsplit(" ", 1)[-1] for v in verdicts("sqlite", [one, fifty])] == ["FAIL", "PASS"]
    fifty = Level("read", 50, requests=300, errors=3, elapsed_s=1.0, error_kinds={"ReadTimeout": 3})
    lines = verdicts("sqlite", [one, fifty])
    assert lines[0].endswith("PASS") and lines[1] == "sqlite: errors = 3 of 400 requests (target 0): FAIL"


@pytest.mark.e2e
def test_a_tiny_run_against_a_real_server(tmp_path, capsys):
    out = tmp_path / "load.json"
    code = main(["--levels", "1,4", "--requests", "8", "--warmup", "2", "--databases", "sqlite", "--mixed",
                 "--json", str(out), "--work-dir", str(tmp_path / "work")])
    assert code == 0
    figures = json.loads(out.read_text())["results"]["sqlite"]
    assert [(f["workload"], f["clients"]) for f in figures] == [("read", 1), ("read", 4), ("mixed", 1), ("mixed", 4)]
    assert all(f["requests"] == 8 and f["errors"] == 0 and f["p99_ms"] >= f["p50_ms"] > 0 for f in figures)
    printed = capsys.readouterr().out
    assert "| sqlite | read | 4 | 8 |" in printed and "sqlite: errors = 0 of 32 requests (target 0): PASS" in printed
