"""Reachability probes against listeners on 127.0.0.1 that the tests open; nothing leaves loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.diagnostics.collect import run_collector
from agent.diagnostics.collectors.network import (
    NetworkCollector, Target, parse_resolv_conf, parse_target, parse_winhttp_proxy, probe, probe_all, server_target,
)
from agent.diagnostics.model import CollectorStatus


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that accepts and closes connections; yields its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    accepted = []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            accepted.append(conn.getpeername())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_probe_reaches_a_local_listener_with_latency(listener):
    port, accepted = listener
    result = probe(Target(f"127.0.0.1:{port}", "127.0.0.1", port, "host"))
    assert result["dns"]["status"] == "ok" and result["dns"]["addresses"] == ["127.0.0.1"]
    assert result["tcp"]["status"] == "ok"
    assert 0 <= result["tcp"]["ms"] < 1000
    assert result["reachable"] is True
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert accepted, "the listener never saw the connection"


def test_probe_reports_a_refused_port(closed_port):
    result = probe(Target("closed", "127.0.0.1", closed_port, "host"))
    assert result["tcp"]["status"] == "refused"
    assert result["reachable"] is False


def test_probe_all_runs_in_parallel_within_its_budget(listener, closed_port):
    port, _ = listener
    targets = [Target(str(n), "127.0.0.1", port if n % 2 else closed_port, "host") for n in range(8)]
    started = time.monotonic()
    results = probe_all(targets, budget=3)
    assert time.monotonic() - started < 3
    assert [r["reachable"] for r in results] == [bool(n % 2) for n in range(8)]


def test_network_collector_checks_server_and_hosts(make_ctx, listener, closed_port):
    port, _ = listener
    collector = NetworkCollector()
    ctx = make_ctx("linux", category="network", forbidden=collector.forbidden_paths,
                   server_url=f"http://127.0.0.1:{port}/api",
                   reachability_hosts=[f"localhost:{closed_port}", "bad host!"])
    result = run_collector(collector, ctx)
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["server_reachable"] is True
    by_target = {entry["target"]: entry for entry in facts["reachability"]}
    assert by_target[f"http://127.0.0.1:{port}/api"]["tcp"]["status"] == "ok"
    assert by_target[f"localhost:{closed_port}"]["tcp"]["status"] == "refused"
    assert "not a host name" in by_target["bad host!"]["error"]
    assert any(item.path == "network/reachability.json" for item in result.items)
    assert any(i["name"] == "lo" or i["name"].startswith("lo") for i in facts["interfaces"])


@pytest.mark.parametrize("text, host, port", [
    ("helpline.example.com", "helpline.example.com", 443),
    ("proxy.corp:3128", "proxy.corp", 3128),
    ("[::1]:8443", "::1", 8443),
    ("fe80::1", "fe80::1", 443),
])
def test_parse_target(text, host, port):
    target = parse_target(text)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "a b", "x;rm -rf"])
def test_parse_target_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_server_target_defaults_ports_by_scheme():
    assert (server_target("https://help.example.com/").port, server_target("http://help.example.com").port) == (443, 80)
    assert server_target("https://help.example.com:8443/x").port == 8443


def test_resolv_conf_and_winhttp_parsing():
    parsed = parse_resolv_conf("# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n")
    assert parsed == {"nameservers": ["127.0.0.53"], "search": ["corp.example"], "options": ["edns0", "trust-ad"],
                      "stub_resolver": True}
    proxied = parse_winhttp_proxy("Current WinHTTP proxy settings:\n\n    Proxy Server(s) :  proxy:8080\n"
                                  "    Bypass List     :  (none)\n")
    assert proxied == {"direct": False, "server": "proxy:8080", "bypass": "(none)"}
