"""The session benchmark's harness: its report and verdicts, and one tiny run of every path on loopback."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from bench.session_vs_sshd import MiB, PathFigures, at_least_line, main, report


def figures(name: str, latency: float, raw: float, sftp: float, forward: float) -> PathFigures:
    """A path that moved 100 MiB at the given MiB/s, with a steady keystroke latency (ms)."""
    f = PathFigures(name, latency_ms=[latency] * 10, raw_bytes=100 * MiB, sftp_bytes=100 * MiB)
    f.raw_seconds, f.sftp_seconds, f.forward_seconds = [100 / raw], [100 / sftp], [100 / forward]
    return f


def test_the_report_compares_with_openssh_and_paramiko_and_gives_verdicts():
    lines = report([figures("openssh", 0.1, 300, 400, 600), figures("paramiko direct", 0.2, 100, 280, 300),
                    figures("helpline", 0.9, 150, 190, 320)], argparse.Namespace())
    text = "\n".join(lines)
    assert "ratio helpline/openssh: raw 0.50, forward 0.53, sftp 0.47, keystroke p50 9.00" in text
    assert "ratio helpline/paramiko direct: raw 1.50, forward 1.07, sftp 0.68" in text
    assert "added median keystroke latency helpline-openssh = 0.80 ms (target < 5.00 ms): PASS" in text
    assert "raw throughput helpline/openssh = 0.50 (target ≥ 0.50): PASS" in text
    assert "sftp put throughput helpline/openssh = 0.47 (target ≥ 0.50): FAIL" in text


def test_a_path_that_could_not_be_measured_says_why():
    lines = report([figures("openssh", 0.1, 300, 400, 600), PathFigures("helpline", problem="the server did not start")],
                   argparse.Namespace())
    assert any("NOT MEASURED: the server did not start" in line for line in lines)
    assert "raw throughput helpline/openssh = n/a (target ≥ 0.50): NOT MEASURED" in lines


@pytest.mark.parametrize(("value", "expected"), [
    (0.62, "x = 0.62 (target ≥ 0.50): PASS"),
    (0.4999, "x = 0.4999 (target ≥ 0.50): FAIL"),  # rounded to 0.50 it would read as a pass
])
def test_at_least_verdicts(value, expected):
    assert at_least_line("x", value, 0.5) == expected


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists() or shutil.which("ssh") is None,
                    reason="tests/run.sh installs the OpenSSH client and server")
def test_a_tiny_run_of_every_path(tmp_path, capsys):
    status = main(["--size-mib", "2", "--runs", "1", "--keystrokes", "5", "--work-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    for name in ("openssh", "paramiko direct", "helpline"):
        row = next(line for line in printed.splitlines() if line.startswith(name))
        assert "n/a" not in row and "NOT MEASURED" not in row, row
    assert "added median keystroke latency helpline-openssh" in printed
    assert "ProxyCommand (helpline relay)" in printed
    assert not list(tmp_path.iterdir())  # the scratch directory is removed
