"""The snapshot benchmark: its generated tree is the same every time, and a small run measures every row."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from bench.snapshots_vs_restic import generate, main, sizes, tree_digest


def test_the_tree_is_the_same_for_a_seed_and_mixes_sizes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert generate(one, 200, 4 << 20, 7) == generate(two, 200, 4 << 20, 7)
    assert tree_digest(one) == tree_digest(two)
    drawn = sizes(20_000, 1 << 30, random.Random(1))
    assert abs(sum(drawn) - (1 << 30)) < (1 << 30) * 0.01
    assert sum(1 for s in drawn if s <= 16 << 10) > 14_000 and max(drawn) > 8 << 20


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")
def test_a_small_run_measures_raw_restic_helpline_and_the_server(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert main(["--small", "--runs", "2", "--work-dir", str(tmp_path), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [r["name"] for r in figures["rows"]] == [
        "restic backup (local)", "restic restore (local)", "helpline snapshot now (local)",
        "helpline restore (local)", "helpline snapshot now (server)", "helpline restore (server)"]
    assert all(r["ok"] and r["wall_s"] > 0 for r in figures["rows"]) and figures["server_peak_rss_bytes"] > 0
    assert {name: len(walls) for name, walls in figures["runs_s"].items()} == {
        "restic backup (local)": 2, "helpline snapshot now (local)": 2,
        "restic restore (local)": 2, "helpline restore (local)": 2}
    printed = capsys.readouterr().out
    assert "taken in turn" in printed
    assert "backup time helpline/restic (local) = " in printed and "restore throughput server/local = " in printed
