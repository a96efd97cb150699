"""Fleet identity through the real CLI and a real server: an enrollment token's limits, a re-imaged PC
replacing its old agent, a cloned agent folder quarantined, and retiring a PC after asking on a terminal.

The PCs run on this machine with the test-only overrides of the hostname and machine id
(agent/identity.py); a clone is a copy of one PC's agent folder (key and state) into another's.
"""

from __future__ import annotations

import shutil

import pexpect
import pytest

from protocol.errors import ExitStatus
from tests.support.live import helpline_bin

pytestmark = pytest.mark.e2e

LAPTOP = {"HELPLINE_TEST_HOSTNAME": "laptop-042", "HELPLINE_TEST_MACHINE_ID": "4c4c4544003957108052b4c04f384833"}


def token(admin_pc, *args: str) -> dict:
    return admin_pc.ok("enroll-token", "create", *args, "--json").json()


def test_a_token_is_used_up_limited_to_its_networks_and_revoked_with_its_agents(live_server, admin_pc, make_pc):
    created = token(admin_pc, "--group", "lab", "--max-uses", "2", "--expires", "7d", "--network", "127.0.0.0/8")
    assert created["networks"] == ["127.0.0.0/8"] and created["max_uses"] == 2
    pcs = [make_pc(f"lab-{n}") for n in range(3)]
    ids = [pc.ok("agent", "enroll", live_server.url, "-", "--json", input=created["token"] + "\n",
                 env={"HELPLINE_TEST_HOSTNAME": f"lab-{n}"}).json()["agent_id"] for n, pc in enumerate(pcs[:2])]
    third = pcs[2].run("agent", "enroll", live_server.url, "-", input=created["token"] + "\n")
    assert third.code == ExitStatus.AUTH and "That enrollment token has been used up." in third.stderr

    [listed] = admin_pc.ok("enroll-token", "list", "--json").json()
    assert (listed["uses"], listed["agents"], listed["last_used_by"], listed["last_used_by_hostname"]) == (2, 2, ids[1], "lab-1")
    table = admin_pc.ok("enroll-token", "list").stdout
    assert "2/2" in table and "127.0.0.0/8" in table and f"lab-1 ({ids[1][:8]})" in table and "used up" in table

    elsewhere = token(admin_pc, "--network", "10.0.0.0/8")
    refused = pcs[2].run("agent", "enroll", live_server.url, "-", input=elsewhere["token"] + "\n")
    assert refused.code == ExitStatus.AUTH
    assert "That enrollment token may not be used from this PC's address (127.0.0.1)." in refused.stderr

    bad = admin_pc.run("enroll-token", "create", "--network", "10.0.0.0/33")
    assert bad.code == ExitStatus.INVALID and "is not a network" in bad.stderr

    said = admin_pc.ok("enroll-token", "revoke", str(created["id"]), "--quarantine-agents").stdout
    assert "Quarantined 2 agent(s)" in said
    for pc in pcs[:2]:
        stopped = pc.run("status")
        assert stopped.code == ExitStatus.FORBIDDEN and "quarantined (enrollment token" in stopped.stderr
        assert "helpline agent release" in stopped.stderr
    quarantined = admin_pc.ok("agent", "list", "--problem", "quarantined", "--json").json()
    assert sorted(a["id"] for a in quarantined) == sorted(ids)
    admin_pc.ok("agent", "release", ids[0], "--reason", "checked")
    assert pcs[0].ok("status", "--json").json() == []


def test_a_reimaged_pc_replaces_its_old_agent_only_when_the_admin_says_so(live_server, admin_pc, make_pc):
    before = make_pc("before")
    old = before.ok("agent", "enroll", live_server.url, token(admin_pc)["token"], "--json", env=LAPTOP).json()
    number = admin_pc.ok("ticket", "create", "Laptop slow", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    before.ok("pair", code, env=LAPTOP)

    after = make_pc("after")  # the same laptop, re-imaged: a new key, the same machine id and host name
    new = after.ok("agent", "enroll", live_server.url, token(admin_pc)["token"], "--json", env=LAPTOP).json()
    assert new["status"] == "pending"
    listed = admin_pc.ok("agent", "list", "--pending").stdout
    assert f"looks like {old['agent_id']} (same machine id and host name)" in listed
    assert after.run("status", env=LAPTOP).code == ExitStatus.FORBIDDEN  # nothing taken over on its own

    said = admin_pc.ok("agent", "replace", new["agent_id"], "--of", old["agent_id"], "--reason", "re-imaged").stdout
    assert f"replaces agent {old['agent_id']}" in said and number in said
    assert [t["number"] for t in after.ok("status", "--json", env=LAPTOP).json()] == [number]
    gone = before.run("status", env=LAPTOP)
    assert gone.code == ExitStatus.AUTH and f"replaced by agent {new['agent_id']}" in gone.stderr
    shown = admin_pc.ok("agent", "show", old["agent_id"], "--json").json()
    assert (shown["status"], shown["replaced_by"]) == ("retired", new["agent_id"])
    assert f"Replaces: agent {old['agent_id']}" in admin_pc.ok("agent", "show", new["agent_id"]).stdout
    [event] = admin_pc.ok("audit", "--action", "agent.replace", "--json").json()
    assert event["details"]["replaces"] == old["agent_id"] and event["details"]["reason"] == "re-imaged"


def test_a_copied_agent_folder_is_quarantined_and_a_restart_is_not(live_server, admin_pc, make_pc):
    original = make_pc("original")
    agent_id = original.ok("agent", "enroll", live_server.url, token(admin_pc)["token"], "--json").json()["agent_id"]
    for _ in range(3):  # several commands of one installation are one instance
        assert original.ok("status", "--json").json() == []

    copy = make_pc("copy")
    shutil.copytree(original.agent_dir, copy.agent_dir, dirs_exist_ok=True)  # a disk image copied with the key
    assert copy.ok("status", "--json").json() == []  # so far it could be a restart elsewhere
    back = original.run("status")
    assert back.code == ExitStatus.FORBIDDEN, back.stderr
    assert "quarantined (its identity is in use on two PCs at once" in back.stderr
    assert copy.run("status").code == ExitStatus.FORBIDDEN
    [listed] = admin_pc.ok("agent", "list", "--problem", "quarantined", "--json").json()
    assert listed["id"] == agent_id and listed["problems"] == ["quarantined"]

    shutil.rmtree(copy.agent_dir)  # the admin wipes the copy, then releases the agent
    admin_pc.ok("agent", "release", agent_id, "--reason", "copy wiped")
    assert original.ok("status", "--json").json() == []

    # Retiring asks on a terminal; without one it needs --yes.
    no_terminal = admin_pc.run("agent", "retire", agent_id)
    assert no_terminal.code == ExitStatus.INVALID and "--yes" in no_terminal.stderr
    child = pexpect.spawn(helpline_bin(), ["agent", "retire", agent_id, "--delete-data"], env=admin_pc.env(),
                          encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect("DELETED now")
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect("Retired agent")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    retired = original.run("status")
    assert retired.code == ExitStatus.AUTH and "retired by an administrator" in retired.stderr
    [event] = admin_pc.ok("audit", "--action", "agent.retire", "--json").json()
    assert event["details"]["delete_data"] is True
