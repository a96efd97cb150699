"""Loopback addresses and ports for test servers."""

from __future__ import annotations

import itertools
import os
import socket

HOST = "127.0.0.1"

# Server ports come from below the kernel's ephemeral range (32768 and up on Linux), so
# the client side of some other connection cannot be holding the port a server is
# about to bind; each test process walks its own stretch of the range.
_LOW, _HIGH = 20000, 32000
_next = itertools.count((os.getpid() * 7919) % (_HIGH - _LOW))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    for _ in range(200):
        port = _LOW + next(_next) % (_HIGH - _LOW)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]
