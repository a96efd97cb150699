"""The README's first command: deploy/quickstart.sh sets up, serves, enrolls and shows a ticket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_the_main_job_and_stops(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env.update(HELPLINE_VENV=str(Path(sys.executable).parents[1]), HELPLINE_DEMO_DIR=str(tmp_path / "demo"),
               HELPLINE_DEMO_PORT=str(free_port()), NO_COLOR="1")
    try:
        done = subprocess.run(["bash", str(ROOT / "deploy" / "quickstart.sh")], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "This PC is enrolled as agent" in out
        assert "Ticket T-1001 is open. An engineer will answer by" in out
        assert "Quick start: my first ticket" in out and "Channel: self-service" in out
        assert "Ticket T-1001 — your diagnostics were delivered." in out
        assert "Diagnostics (helpline diag get ID)" in out  # the engineer's view lists the bundle
        assert (tmp_path / "demo" / "server.pid").exists()
        # Running it again reuses the server and the enrollment, and opens the next ticket.
        again = subprocess.run(["bash", str(ROOT / "deploy" / "quickstart.sh")], env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Ticket T-1002 is open" in again.stdout and "Enrolling" not in again.stderr
    finally:
        stop = subprocess.run(["bash", str(ROOT / "deploy" / "quickstart.sh"), "--stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0
    assert not (tmp_path / "demo" / "server.pid").exists()


def test_quickstart_says_when_its_port_is_taken(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env.update(HELPLINE_VENV=str(Path(sys.executable).parents[1]), HELPLINE_DEMO_DIR=str(tmp_path / "demo"), NO_COLOR="1")
    with socket.socket() as squatter:  # another program already listens on the port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        done = subprocess.run(["bash", str(ROOT / "deploy" / "quickstart.sh"), "--port", str(port)],
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"port {port} is already in use" in done.stderr and "--port" in done.stderr
    assert "Logging in" not in done.stderr and not (tmp_path / "demo" / "server.pid").exists()
    bad = subprocess.run(["bash", str(ROOT / "deploy" / "quickstart.sh"), "--port", "http"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "the port must be a number" in bad.stderr
