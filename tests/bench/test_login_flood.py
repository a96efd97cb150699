"""The login flood benchmark: one tiny run against a real server."""

from __future__ import annotations

import pytest

from bench.login_flood import main


@pytest.mark.e2e
def test_a_tiny_run_against_a_real_server(tmp_path, capsys):
    assert main(["--seconds", "1.5", "--rate", "4", "--work-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "GET /v1/me alone" in printed and "GET /v1/me, 4 failed/s" in printed
    assert "401:" in printed and "ratio flooded/alone: p50" in printed
    assert not list(tmp_path.iterdir())  # the scratch directory is removed
