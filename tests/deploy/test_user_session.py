"""The user-session part of the deployed agent: `helpline requests --follow` tells the user of each request
that waits for their answer, once, as it arrives, and stops cleanly on SIGTERM (as its unit stops it)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest

from protocol.errors import ExitStatus

from tests.support.live import PC, helpline_bin

pytestmark = pytest.mark.e2e


def put_waiting_request(pc: PC, request_id: str, path: str) -> None:
    """What the agent writes when an engineer's restore needs the user's consent (agent/service/consent.py)."""
    now = datetime.now(UTC)
    folder = pc.agent_dir / "requests" / "waiting"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{request_id}.json").write_text(json.dumps({
        "id": request_id, "kind": "restore", "requested_by_name": "Alice Engineer", "requested_by": "alice",
        "ticket": "T-1001", "params": {"paths": [path]}, "created_at": now.isoformat(),
        "expires_at": (now + timedelta(minutes=30)).isoformat()}))


def read_line(process: subprocess.Popen, seconds: float = 30.0) -> str:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            return process.stdout.readline()
    raise AssertionError("no line from `helpline requests --follow` in time")


def test_follow_shows_each_waiting_request_once_and_stops_on_sigterm(make_pc):
    pc = make_pc("ann")
    put_waiting_request(pc, "3f2c9a1e-0000-4000-8000-000000000001", "/home/ann/report.odt")
    follow = subprocess.Popen([helpline_bin(), "requests", "--follow"], env=pc.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "Watching for engineers' requests" in read_line(follow)
        first = read_line(follow)
        assert "Alice Engineer asks to restore /home/ann/report.odt" in first
        assert "helpline requests approve 3f2c9a1e" in first
        put_waiting_request(pc, "7b1d0c2e-0000-4000-8000-000000000002", "/home/ann/notes.txt")
        second = read_line(follow)
        assert "/home/ann/notes.txt" in second and "report.odt" not in second  # the first is not repeated
    finally:
        follow.send_signal(signal.SIGTERM)
        try:
            out, err = follow.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            follow.kill()
            follow.communicate()
            pytest.fail("`helpline requests --follow` did not stop on SIGTERM")
    assert follow.returncode == 0, err
    assert "report.odt" not in out


def test_follow_cannot_answer_or_print_json(make_pc):
    pc = make_pc("ann")
    refused = pc.run("requests", "approve", "3f2c9a1e", "--follow")
    assert refused.code == ExitStatus.INVALID and "cannot answer" in refused.stderr
    assert pc.run("requests", "--follow", "--json").code == ExitStatus.INVALID
