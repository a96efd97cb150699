"""An admin sets a group's policy with `helpline policy set`; a real `helpline agent run` takes it signed, reports
the version it runs, and runs an engineer's restore without asking its user only while the policy allows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ExitStatus
from tests.e2e.test_pc_requests import WAIT_SECONDS, Agent, ana, digest, until  # noqa: F401 - ana is a fixture

pytestmark = pytest.mark.e2e

UNATTENDED = """
unattended = ["restore"]

[snapshots]
keep_daily = 10

[consent]
wait_minutes = 45
"""


def test_a_group_policy_reaches_the_running_agent_and_lets_a_restore_run_unattended_until_it_is_withdrawn(
        live_server, admin_pc, ana, tmp_path):
    group = admin_pc.ok("agent", "show", ana.agent_id, "--json").json()["group"]
    bad = tmp_path / "bad.toml"
    bad.write_text('unattended = ["session"]\n')
    refused = admin_pc.run("policy", "set", group, "--file", str(bad))
    assert refused.code == ExitStatus.INVALID and "can never run unattended" in refused.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text(UNATTENDED)
    assert "policy version 1" in admin_pc.ok("policy", "set", group, "--file", str(policy)).stdout

    report = ana.home / "Documents" / "report.odt"
    original = digest(report)
    report.unlink()
    agent = Agent(ana, tmp_path / "agent.log")
    try:
        # The agent checks in as it starts: it takes version 1 and reports running it.
        until("the agent runs policy version 1",
              lambda: admin_pc.ok("agent", "show", ana.agent_id, "--json").json().get("policy_version") == 1)
        assert "now running policy version 1" in agent.output()
        assert "Policy: version 1 (current)" in admin_pc.ok("agent", "show", ana.agent_id).stdout
        listed = admin_pc.ok("policy", "list", "--json").json()
        assert [(p["group"], p["version"], p["agents_current"]) for p in listed] == [(group, 1, 1)]

        made = admin_pc.ok("pc", "restore", ana.agent_id, str(report), "--no-wait", "--json").json()
        assert made["unattended"] is True
        done = admin_pc.run("pc", "requests", ana.agent_id, made["id"][:8], "--follow", "--json", timeout=WAIT_SECONDS)
        assert done.code == 0, done.stderr
        result = done.json()
        assert result["state"] == "done" and result["result"]["unattended_policy_version"] == 1, result
        assert "unattended under policy version 1" in result["detail"]
        [restored] = result["result"]["restored"]
        assert digest(Path(restored["placed_at"])) == original
        assert ana.ok("requests", "--json").json() == []  # nobody was asked

        # The admin withdraws the allowance: the next restore waits for Ana again, under version 2.
        policy.write_text('unattended = []\n')
        admin_pc.ok("policy", "set", group, "--file", str(policy))
        shown = admin_pc.ok("policy", "show", group, "--version", "1", "--json").json()
        assert shown["body"]["unattended"] == ["restore"]
        again = admin_pc.ok("pc", "restore", ana.agent_id, str(report), "--no-wait", "--json").json()
        assert again["unattended"] is False
        waiting = until("the restore waits for Ana", lambda: ana.ok("requests", "--json").json())
        assert [w["id"] for w in waiting] == [again["id"]]
        until("the agent runs policy version 2",
              lambda: admin_pc.ok("agent", "show", ana.agent_id, "--json").json().get("policy_version") == 2)
        ana.ok("requests", "refuse", again["id"][:8])
    finally:
        code = agent.stop()
    assert code == 0, agent.output()
    # A version set while the PC's agent is not running: the PC shows as behind until it checks in.
    policy.write_text('unattended = ["diagnostics"]\n')
    admin_pc.ok("policy", "set", group, "--file", str(policy))
    assert "version 2; its group's is version 3 (policy behind)" in admin_pc.ok("agent", "show", ana.agent_id).stdout
