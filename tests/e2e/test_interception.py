"""A network in the middle: answers rewritten on the way are refused, captured requests are worth nothing,
and pairing with another server sends nothing of the PC's old link."""

from __future__ import annotations

import json

import pytest

from protocol import agent_requests
from protocol.errors import ExitStatus
from tests.support.intercepting_proxy import InterceptingProxy

pytestmark = pytest.mark.e2e

TITLE = "Printer offline on floor 3"
LURE = "Call 555-0100 and read out your password"


@pytest.fixture
def proxy(live_server):
    mitm = InterceptingProxy(live_server.port).start()
    try:
        yield mitm
    finally:
        mitm.stop()


def ticket_and_code(admin_pc, title: str = TITLE) -> tuple[str, str]:
    number = admin_pc.ok("ticket", "create", title, "--json").json()["number"]
    return number, admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]


def test_a_rewritten_answer_is_refused_instead_of_shown(live_server, admin_pc, make_pc, proxy):
    number, code = ticket_and_code(admin_pc)
    admin_pc.ok("ticket", "note", number, "An engineer will call you today.")
    user = make_pc("user")
    user.ok("pair", code, "--server", proxy.url)  # the PC only ever talks through the proxy
    assert TITLE in user.ok("status", number).stdout  # untouched answers pass

    proxy.rewrite = lambda body: body.replace(TITLE.encode(), LURE.encode()).replace(b"call you today", b"call 555-0100")
    for args in (("status",), ("status", number), ("status", "--json")):
        refused = user.run(*args)
        assert refused.code == ExitStatus.AUTH, (args, refused.stdout, refused.stderr)
        assert "not signed by the server key this PC pinned" in refused.stderr and "intercept" in refused.stderr
        assert "555-0100" not in refused.stdout + refused.stderr
    assert any(c.path.startswith("/v1/agent/tickets") for c in proxy.captured)  # the answers did come through it

    proxy.rewrite = None
    assert TITLE in user.ok("status", number).stdout


def test_a_captured_request_cannot_be_replayed_nor_used_as_a_credential(live_server, admin_pc, make_pc, proxy):
    number, code = ticket_and_code(admin_pc)
    user = make_pc("user")
    user.ok("pair", code, "--server", proxy.url)
    user.ok("status", number)
    [captured] = [c for c in proxy.captured if c.method == "GET" and c.path == f"/v1/agent/tickets/{number}"]
    headers = {k.lower(): v for k, v in captured.headers.items()}
    assert "authorization" not in headers  # no bearer secret crosses the network
    credential = json.loads((user.agent_dir / "agent.json").read_text())["credential"]
    assert all(credential not in json.dumps(c.headers) + c.body.decode("latin-1") for c in proxy.captured)

    # The very request, again: refused as a replay.
    assert proxy.replay(captured) == 401
    # Its headers as bearer credentials, and the PC's own stored credential: refused too.
    for secret in (headers[agent_requests.SIGNATURE_HEADER.lower()], headers[agent_requests.NONCE_HEADER.lower()],
                   headers[agent_requests.AGENT_HEADER.lower()], credential):
        assert proxy.replay(captured, {"Authorization": f"Bearer {secret}"}) == 401
    # Captured headers put on another request (another path) do not sign it.
    moved = type(captured)("GET", "/v1/agent/tickets", captured.headers, b"")
    assert proxy.replay(moved) == 401

    refusals = admin_pc.ok("audit", "--action", "agent.request_refused", "--json").json()
    reasons = sorted(e["details"]["reason"] for e in refusals)
    assert reasons.count("replayed nonce") == 1 and reasons.count("bad signature") == 1
    assert sum(r.startswith("unsigned") for r in reasons) == 4


def test_pairing_with_another_server_sends_nothing_of_the_old_link(live_server, admin_pc, make_pc, proxy):
    _, code = ticket_and_code(admin_pc)
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    state = json.loads((user.agent_dir / "agent.json").read_text())

    # Another address (here a proxy in front of the same server): a fresh start, nothing of the old link sent.
    second, code = ticket_and_code(admin_pc, "Second problem")
    user.ok("pair", code, "--server", proxy.url)
    [sent] = [c for c in proxy.captured if c.path == "/v1/pair"]
    leaked = json.dumps(sent.headers) + sent.body.decode()
    assert "Authorization" not in sent.headers and agent_requests.AGENT_HEADER not in sent.headers
    assert state["credential"] not in leaked and state["agent_id"] not in leaked

    # The same server again: the request is signed and the answer checked, so a rewritten one is refused.
    third, code = ticket_and_code(admin_pc, "Third problem")
    proxy.rewrite = lambda body: body.replace(b"Third problem", b"Call 555-0100 now")
    refused = user.run("pair", code, "--server", proxy.url)
    assert refused.code == ExitStatus.AUTH and "intercept" in refused.stderr
    assert "555-0100" not in refused.stdout + refused.stderr
    assert third not in json.loads((user.agent_dir / "agent.json").read_text())["tickets"]
