"""The real restic binary as the journeys run it: what it is refused, read from its first retry."""

from __future__ import annotations

import selectors
import signal
import subprocess
import time


def refused_then_stopped(process: subprocess.Popen, status: str, deadline: float = 120.0) -> bool:
    """Whether restic reported the server's refusal ``status``; then stop it as a user would (Ctrl-C).

    restic retries every refused request ten times with back-off (about a minute) before it gives up; each
    retry gets the same answer, so the first refusal is the outcome, and waiting for the tenth proves nothing.
    """
    refused, seen, ends = False, [], time.monotonic() + deadline
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while not refused and time.monotonic() < ends and process.poll() is None:
            if selector.select(timeout=1.0):
                line = process.stderr.readline()
                seen.append(line)
                refused = status in line and ("retrying" in line or "Fatal" in line)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, rest = process.communicate()
    refused = refused or status in rest
    assert process.returncode != 0, "".join(seen) + rest
    return refused
