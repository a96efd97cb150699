"""One connection pool per process: a command's connections to its server in turn share TCP (and TLS)
connections, and closing one connection does not close the pool (agent.http.pooled_transport)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import http as agent_http
from agent.http import ServerConnection


class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections = 0
    lock = threading.Lock()

    def setup(self) -> None:
        super().setup()
        with Counting.lock:
            Counting.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(agent_http, "_POOLS", {})  # a pool of this test's own
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    Counting.connections = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_connections_in_turn_share_one_tcp_connection(server):
    for _ in range(3):
        with ServerConnection(server) as conn:
            assert conn.get("info") == {"ok": True}
    assert Counting.connections == 1


def test_a_transport_given_by_the_caller_is_used_as_it_is(server):
    import httpx

    given = httpx.HTTPTransport()
    with ServerConnection(server, transport=given) as conn:
        assert conn.get("info") == {"ok": True}
    with ServerConnection(server) as conn:
        assert conn.get("info") == {"ok": True}
    assert Counting.connections == 2, "the caller's transport is not the pool"
    assert agent_http._POOLS and given not in agent_http._POOLS.values()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_in_the_environment_is_still_followed(server, monkeypatch, variable):
    # httpx picks the environment's proxy only for a client without a transport of its own: no pool then.
    from protocol.errors import UnavailableError

    monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: going through it fails
    with ServerConnection(server) as conn, pytest.raises(UnavailableError):
        conn.get("info")
    assert Counting.connections == 0 and not agent_http._POOLS
