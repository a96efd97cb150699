"""Rotating the server's signing key on a live server: the running agent and the user's commands follow the
hand-over without enrolling again, and an engineer's request signed by the new key runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from protocol import signing
from tests.e2e.test_pc_requests import WAIT_SECONDS, Agent, ana, digest, until  # noqa: F401 - ana is a fixture
from tests.support.live import json_request

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]


def pinned(pc) -> str:
    return json.loads((pc.agent_dir / "agent.json").read_text())["server_public_key"]


def test_a_running_agent_follows_a_key_rotation_and_runs_a_request_signed_by_the_new_key(live_server, admin_pc, ana,
                                                                                          tmp_path):
    number = admin_pc.ok("ticket", "create", "Deleted my report", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    ana.ok("pair", code)
    old = pinned(ana)
    report = ana.home / "Documents" / "report.odt"
    original = digest(report)
    report.unlink()
    agent = Agent(ana, tmp_path / "agent.log")
    try:
        until("the agent is running", lambda: "running" in agent.output() or agent.process.poll() is not None)
        assert agent.process.poll() is None, agent.output()

        rotated = admin_pc.ok("server", "rotate-key", "--data-dir", str(live_server.data_dir), "--json").json()
        assert rotated["previous_fingerprint"] == signing.fingerprint(old)
        served = json_request(live_server, "GET", "/v1/server")[1]
        assert served["fingerprint"] == rotated["fingerprint"]  # the running server signs with it already

        made = admin_pc.ok("pc", "restore", ana.agent_id, str(report), "--ticket", number, "--no-wait", "--json").json()
        until("the request waits for Ana", lambda: ana.ok("requests", "--json").json())
        assert pinned(ana) == served["public_key"]  # the agent followed the hand-over and pinned the new key
        ana.ok("requests", "approve", made["id"][:8])
        done = admin_pc.run("pc", "requests", ana.agent_id, made["id"][:8], "--follow", "--json", timeout=WAIT_SECONDS)
        assert done.code == 0, done.stderr
        assert done.json()["state"] == "done", done.json()
        [restored] = done.json()["result"]["restored"]
        assert digest(Path(restored["placed_at"])) == original
    finally:
        code = agent.stop()
    assert code == 0, agent.output()
    # The user's own commands keep working: no new enrollment, no "the server's key changed".
    assert "Deleted my report" in ana.ok("status").stdout
    [event] = admin_pc.ok("audit", "--action", "server.key.rotated", "--json").json()
    assert "server rotate-key" in event["actor"] and event["details"]["previous"] == rotated["previous_fingerprint"]


def test_a_pc_offline_through_two_rotations_follows_the_chain_when_it_pairs_again(live_server, admin_pc, make_pc):
    first = admin_pc.ok("ticket", "create", "Printer offline", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", first, "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", live_server.url)
    old = pinned(pc)
    admin_pc.ok("server", "rotate-key", "--over-api")  # through the API, as a logged-in admin
    admin_pc.ok("server", "rotate-key", "--data-dir", str(live_server.data_dir))
    second = admin_pc.ok("ticket", "create", "Scanner offline", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", second, "--json").json()["code"]
    assert f"linked to ticket {second}" in pc.ok("pair", code).stdout
    new = json_request(live_server, "GET", "/v1/server")[1]["public_key"]
    assert pinned(pc) == new != old
    assert len(json_request(live_server, "GET", "/v1/server/key-handovers")[1]) == 2


def test_a_forged_handover_leaves_the_pc_refusing_the_server(live_server, admin_pc, make_pc):
    number = admin_pc.ok("ticket", "create", "Printer offline", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    pc = make_pc("user")
    pc.ok("pair", code, "--server", live_server.url)
    old = pinned(pc)
    # The server's key replaced by hand (a stolen server, or a careless reinstall): no hand-over signed by the
    # pinned key leads to it, so the PC refuses every answer and keeps its pin.
    live_server.stop()
    key_file = live_server.data_dir / "server-signing-key.pem"
    signing.save_private_key(signing.generate_key(), key_file)
    live_server.start()
    refused = pc.run("status")
    assert refused.code == 4 and "not signed by the server key this PC pinned" in refused.stderr
    assert pinned(pc) == old
