"""The REST-repository benchmark on a tiny tree: it measures both repositories and prints the verdicts."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import restic_rest

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]


def test_the_tree_is_the_same_for_a_seed(tmp_path):
    first = restic_rest.generate_tree(tmp_path / "a", 30, 200_000, seed=5)
    second = restic_rest.generate_tree(tmp_path / "b", 30, 200_000, seed=5)
    assert first == second and restic_rest.tree_digest(tmp_path / "a") == restic_rest.tree_digest(tmp_path / "b")
    assert restic_rest.tree_digest(tmp_path / "a") != restic_rest.tree_digest(tmp_path / "b" / "dir00")
    assert 150_000 < first <= 200_000


def test_a_tiny_run_measures_both_repositories(tmp_path, capsys):
    assert restic_rest.main(["--files", "20", "--mib", "1", "--runs", "2", "--work-dir", str(tmp_path),
                             "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    for line in ("local       backup", "rest        restore", "server memory:", "backup throughput REST/local",
                 "restore throughput REST/local", "restores: 2 of each repository, taken in turn"):
        assert line in out
    figures = json.loads((tmp_path / "r.json").read_text())
    assert len(figures["local_restore_runs_s"]) == len(figures["rest_restore_runs_s"]) == 2
    assert len(figures["rest_backup_runs_s"]) == 1
    assert figures["rest_restore_s"] in figures["rest_restore_runs_s"]


def test_runs_must_be_positive():
    with pytest.raises(SystemExit):
        restic_rest.parse_args(["--runs", "0"])
