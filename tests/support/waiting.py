"""Waiting for something a test cannot be told about (a file appearing, a process reaching a state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, seconds: float = 60.0, every: float = 0.3) -> T:
    """Call ``check`` every ``every`` seconds until it returns something true, and return that; fail the
    test (AssertionError naming ``what``) after ``seconds``."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
