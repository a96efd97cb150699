"""A PC claiming another PC's hardware facts cannot take over its agent; admins approve, refuse and revoke.

Both PCs run on this machine with the test-only overrides of the hostname and
the machine id (agent/identity.py), so the attacker claims exactly what the
victim reports, as a hostile PC can.
"""

from __future__ import annotations

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, create_engineer

pytestmark = pytest.mark.e2e

CLAIMED = {"HELPLINE_TEST_HOSTNAME": "pc-payroll-04", "HELPLINE_TEST_MACHINE_ID": "4c4c4544003957108052b4c04f384833"}


def enroll(pc, server, admin_pc) -> dict:
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    return pc.ok("agent", "enroll", server.url, token, "--json", env=CLAIMED).json()


def test_a_lookalike_pc_waits_for_the_admin_and_never_gets_the_victims_agent(live_server, admin_pc, make_pc):
    victim = make_pc("victim")
    mine = enroll(victim, live_server, admin_pc)
    assert mine["status"] == "active"
    number = admin_pc.ok("ticket", "create", "Payroll export fails", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    victim.ok("pair", code, env=CLAIMED)
    admin_pc.ok("ticket", "note", number, "Call 555-0100 from your desk phone")

    attacker = make_pc("attacker")
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    said = attacker.ok("agent", "enroll", live_server.url, token, env=CLAIMED).stdout
    assert "waits for an administrator's approval" in said
    # Enrolling again with its own key is the same pending agent.
    theirs = enroll(attacker, live_server, admin_pc)
    assert theirs["agent_id"] != mine["agent_id"] and theirs["status"] == "pending"
    assert len(admin_pc.ok("agent", "list", "--json").json()) == 2

    # The victim's PC keeps working, with its ticket and the engineer's note.
    shown = victim.ok("status", number, "--json", env=CLAIMED).json()
    assert shown[0]["number"] == number and any("555-0100" in e["message"] for e in shown[0]["timeline"])
    # The attacker gets a one-line refusal, exit FORBIDDEN, and sees nothing of the victim's.
    for args in (("status",), ("status", number)):
        refused = attacker.run(*args, env=CLAIMED)
        assert refused.code == ExitStatus.FORBIDDEN, refused.stderr
        assert "an administrator must approve this pc" in refused.stderr.lower()
        assert "555-0100" not in refused.stdout + refused.stderr and "Payroll" not in refused.stdout + refused.stderr

    # The admin sees it pending, next to the agent it resembles.
    [pending] = admin_pc.ok("agent", "list", "--pending", "--json").json()
    assert (pending["id"], pending["resembles"]) == (theirs["agent_id"], mine["agent_id"])
    table = admin_pc.ok("agent", "list").stdout
    assert f"pending, looks like {mine['agent_id'][:8]}" in table
    assert f"looks like {mine['agent_id']} (same machine id and host name)" in table
    [event] = admin_pc.ok("audit", "--action", "agent.enroll_pending", "--json").json()
    assert event["details"]["summary"] == f"enroll: pending, resembles agent {mine['agent_id']} (same machine id and hostname)"
    assert "resembles" in admin_pc.ok("audit", "--action", "agent.enroll_pending").stdout  # the table says what happened

    # Only an admin decides.
    create_engineer(admin_pc, "bob")
    engineer = make_pc("engineer")
    engineer.ok("login", live_server.url, "-u", "bob", "--password-stdin", input=ENGINEER_PASSWORD + "\n")
    denied = engineer.run("agent", "approve", theirs["agent_id"])
    assert denied.code == ExitStatus.FORBIDDEN and "admin role" in denied.stderr

    # Approved, it is a normal agent of its own: none of the victim's tickets.
    approved = admin_pc.ok("agent", "approve", theirs["agent_id"], "--reason", "re-imaged by IT").stdout
    assert "now active" in approved
    assert attacker.ok("status", "--json", env=CLAIMED).json() == []
    assert attacker.run("status", number, env=CLAIMED).code == ExitStatus.NOT_FOUND
    assert victim.ok("status", "--json", env=CLAIMED).json()[0]["number"] == number
    audit = admin_pc.ok("audit", "--action", "agent.approve", "--json").json()
    assert audit[0]["details"]["reason"] == "re-imaged by IT" and audit[0]["actor"]

    # Revoked, the victim's own credential stops working at its next request; the ticket keeps the PC.
    admin_pc.ok("agent", "revoke", mine["agent_id"], "--reason", "laptop stolen")
    gone = victim.run("status", env=CLAIMED)
    assert gone.code == ExitStatus.AUTH and "revoked by an administrator" in gone.stderr
    assert admin_pc.ok("ticket", "show", number, "--json").json()["agents"]
    assert admin_pc.ok("agent", "show", mine["agent_id"], "--json").json()["status"] == "revoked"
    [revoked] = admin_pc.ok("audit", "--action", "agent.revoke", "--json").json()
    assert (revoked["target"], revoked["details"]["reason"]) == (f"agent:{mine['agent_id']}", "laptop stolen")


def test_refusing_a_lookalike_revokes_it(live_server, admin_pc, make_pc):
    enroll(make_pc("victim"), live_server, admin_pc)
    attacker = make_pc("attacker")
    theirs = enroll(attacker, live_server, admin_pc)
    assert theirs["status"] == "pending"
    refused = admin_pc.ok("agent", "refuse", theirs["agent_id"], "--reason", "not one of ours", "--json").json()
    assert refused["status"] == "refused"
    after = attacker.run("status", env=CLAIMED)
    assert after.code == ExitStatus.AUTH and "refused" in after.stderr
    again = admin_pc.run("agent", "approve", theirs["agent_id"])
    assert again.code == ExitStatus.CONFLICT and "not waiting for approval" in again.stderr
    assert admin_pc.ok("agent", "list", "--pending", "--json").json() == []
    statuses = {a["status"] for a in admin_pc.ok("agent", "list", "--status", "refused", "--json").json()}
    assert statuses == {"refused"}
