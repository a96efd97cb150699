"""The user-session part of the deployed agent: `helpline requests --follow` tells the user of each request
that waits for their answer, once, as it arrives, and stops cleanly on SIGTERM (as its unit stops it)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
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


class Lines:
    """The lines a child prints, read by a thread (a pipe read after select() can hold more than one line)."""

    def __init__(self, process: subprocess.Popen):
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(line) for line in process.stdout], daemon=True).start()

    def next(self, seconds: float = 30.0) -> str:
        try:
            return self.queue.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError("no line from `helpline requests --follow` in time") from None


def test_follow_shows_each_waiting_request_once_and_stops_on_sigterm(make_pc, tmp_path):
    pc = make_pc("ann")
    put_waiting_request(pc, "3f2c9a1e-0000-4000-8000-000000000001", "/home/ann/report.odt")
    # The desktop's notifier, standing in: it keeps the arguments it is given, one call per line.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "notify-send.calls"
    notifier = bin_dir / "notify-send"
    notifier.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{calls}"\necho >> "{calls}"\n')
    notifier.chmod(0o755)
    env = {**pc.env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DISPLAY": ":99"}
    follow = subprocess.Popen([helpline_bin(), "requests", "--follow"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    lines = Lines(follow)
    try:
        assert "Watching for engineers' requests" in lines.next()
        first = lines.next()
        assert "Alice Engineer asks to restore /home/ann/report.odt" in first
        assert "helpline requests approve 3f2c9a1e" in first
        put_waiting_request(pc, "7b1d0c2e-0000-4000-8000-000000000002", "/home/ann/notes.txt")
        second = lines.next()
        assert "/home/ann/notes.txt" in second and "report.odt" not in second  # the first is not repeated
    finally:
        follow.send_signal(signal.SIGTERM)
        try:
            follow.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follow.kill()
            follow.wait()
            pytest.fail("`helpline requests --follow` did not stop on SIGTERM")
    assert follow.returncode == 0, follow.stderr.read()
    rest = []
    while not lines.queue.empty():
        rest.append(lines.queue.get())
    assert not [line for line in rest if "report.odt" in line]
    notices = calls.read_text().splitlines()
    assert len(notices) == 2 and all(n.startswith("--app-name=Helpline|Helpline: an engineer's request") for n in notices)
    assert "report.odt" in notices[0] and "notes.txt" in notices[1]


def test_follow_cannot_answer_or_print_json(make_pc):
    pc = make_pc("ann")
    refused = pc.run("requests", "approve", "3f2c9a1e", "--follow")
    assert refused.code == ExitStatus.INVALID and "cannot answer" in refused.stderr
    assert pc.run("requests", "--follow", "--json").code == ExitStatus.INVALID
