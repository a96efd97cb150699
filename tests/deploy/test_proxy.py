"""The agent reaches its server through the system's proxy variables or the proxy its configuration names."""

from __future__ import annotations

import pytest

from protocol.errors import ExitStatus
from tests.support.forward_proxy import ForwardProxy

pytestmark = pytest.mark.e2e

#: No proxy variable of the test run's own leaks in: each test sets exactly the ones it means.
NO_PROXY_VARS = {name: "" for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
                 for name in (base, base.upper())}


@pytest.fixture
def proxy():
    running = ForwardProxy().start()
    yield running
    running.stop()


def enroll_token(admin_pc) -> str:
    return admin_pc.ok("enroll-token", "create", "--json", "--max-uses", "5").json()["token"]


def test_the_systems_proxy_variables_carry_enrollment_and_signed_requests_and_no_proxy_bypasses_it(
        live_server, admin_pc, make_pc, proxy):
    pc = make_pc("laptop")
    via_proxy = {**NO_PROXY_VARS, "HTTP_PROXY": proxy.url, "http_proxy": proxy.url}
    pc.ok("agent", "enroll", live_server.url, "-", input=enroll_token(admin_pc) + "\n", env=via_proxy)
    assert f"POST {live_server.url}/v1/agents/enroll" in proxy.seen
    # A signed request goes through as well: the proxy forwards it to the same path the agent signed.
    assert pc.ok("status", "--json", env=via_proxy).json() == []
    seen = len(proxy.seen)
    assert seen >= 2

    bypass = {**via_proxy, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    assert pc.ok("status", "--json", env=bypass).json() == []
    assert len(proxy.seen) == seen


def test_the_configured_proxy_is_used_without_any_proxy_variable(live_server, admin_pc, make_pc, proxy, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'[server]\nproxy = "{proxy.url}"\n')
    pc = make_pc("desktop")
    env = {**NO_PROXY_VARS, "HELPLINE_AGENT_CONFIG": str(config)}
    pc.ok("agent", "enroll", live_server.url, "-", input=enroll_token(admin_pc) + "\n", env=env)
    assert pc.ok("status", "--json", env=env).json() == []
    assert f"POST {live_server.url}/v1/agents/enroll" in proxy.seen and len(proxy.seen) >= 2

    config.write_text('[server]\nproxy = "proxy.example.com"\n')
    broken = pc.run("status", env=env)
    assert broken.code == ExitStatus.CONFIG and "is not a proxy address" in broken.stderr
