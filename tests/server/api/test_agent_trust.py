"""Hardware facts are evidence, never identity: a PC claiming another's machine id and hostname
gets a pending agent of its own; admins approve, refuse and revoke agents."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from protocol.schemas import Role
from server.models import Agent
from tests.server.conftest import EnrolledPC, PCKey

MACHINE = hashlib.sha256(b"helpline-machine-id:0f3a1b2c4d5e6f708192a3b4c5d6e7f8").hexdigest()
OTHER_MACHINE = hashlib.sha256(b"helpline-machine-id:99999999999999999999999999999999").hexdigest()
PENDING_HINT = "An administrator must approve this PC"


def enroll(helpline, pc: PCKey, group: str = "office") -> dict:
    token = helpline.ok("POST", "enrollment-tokens", helpline.admin(), json={"group": group})["token"]
    return helpline.ok("POST", "agents/enroll", json={"token": token, **pc.signed("enroll", "token", token)})


@dataclass
class Victim:
    pc: EnrolledPC
    number: str
    engineer: str


@pytest.fixture
def victim(helpline) -> Victim:
    """An enrolled PC linked to a ticket that carries an engineer's note."""
    key = PCKey("pc-accounting", machine_id=MACHINE)
    answer = enroll(helpline, key)
    pc = EnrolledPC(key, answer["agent_id"], answer["credential"])
    engineer = helpline.token()
    number = helpline.ticket(engineer, "Payroll export fails")
    code = helpline.pairing_code(engineer, number)["code"]
    helpline.ok("POST", "pair", pc, json={"code": code, **pc.key.signed("pair", "code", code)})
    helpline.ok("POST", f"tickets/{number}/notes", engineer, json={"message": "Call me on the secret line"})
    return Victim(pc, number, engineer)


def refused_as_pending(response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden" and "waiting for an administrator's approval" in error["message"]
    assert PENDING_HINT in error["hint"]


def stored_agent(helpline, agent_id: str) -> Agent:
    with helpline.db() as session:
        return session.scalar(select(Agent).where(Agent.id == agent_id))


@pytest.mark.parametrize("hostname", ["pc-accounting", "PC-Accounting"])
def test_claiming_an_agents_machine_id_and_hostname_gives_a_pending_agent_with_no_access(helpline, victim, hostname):
    before = stored_agent(helpline, victim.pc.agent_id)
    attacker = PCKey(hostname, machine_id=MACHINE)
    answer = enroll(helpline, attacker)

    # A new agent of its own, pending; the victim's agent keeps its key, credential and tickets.
    assert answer["agent_id"] != victim.pc.agent_id and answer["status"] == "pending"
    after = stored_agent(helpline, victim.pc.agent_id)
    assert (after.public_key, after.credential_hash, after.status) == (before.public_key, before.credential_hash, "active")
    mine = helpline.ok("GET", "agent/tickets", victim.pc)
    assert [t["number"] for t in mine] == [victim.number]
    assert any("secret line" in e["message"] for e in mine[0]["timeline"])

    # The attacker's credential reaches no ticket data: not its list, not the victim's ticket, no upload.
    credential = answer["credential"]
    pending_pc = EnrolledPC(attacker, answer["agent_id"], credential)
    refused_as_pending(helpline.call("GET", "agent/tickets", pending_pc))
    refused_as_pending(helpline.call("GET", "agent/requests", pending_pc))  # the long poll admits it the same way
    refused_as_pending(helpline.call("GET", f"agent/tickets/{victim.number}", pending_pc))
    upload = {"filename": "b.tar.gz", "size": 10, "sha256": "0" * 64}
    refused_as_pending(helpline.call("POST", f"agent/tickets/{victim.number}/uploads", pending_pc, json=upload))
    # Pairing with the pending credential, or with the pending key and no credential, is refused too;
    # the code is not spent.
    code = helpline.pairing_code(victim.engineer, victim.number)["code"]
    refused_as_pending(helpline.call("POST", "pair", pending_pc, json={"code": code, **attacker.signed("pair", "code", code)}))
    refused_as_pending(helpline.call("POST", "pair", json={"code": code, **attacker.signed("pair", "code", code)}))
    helpline.ok("POST", "pair", victim.pc, json={"code": code, **victim.pc.key.signed("pair", "code", code)})

    # The admin sees it pending, linked to the agent it resembles, and why.
    admin = helpline.admin()
    [pending] = helpline.ok("GET", "agents", admin, params={"status": "pending"})
    assert (pending["id"], pending["resembles"], pending["evidence"]) == (
        answer["agent_id"], victim.pc.agent_id, "same machine id and hostname")
    assert pending["tickets"] == []
    [event] = helpline.audit("agent.enroll_pending")
    assert event.target_id == answer["agent_id"]
    assert event.details["summary"] == f"enroll: pending, resembles agent {victim.pc.agent_id} (same machine id and hostname)"
    assert credential not in json.dumps(event.details) and "hla_" not in json.dumps(event.details)
    assert [e.details["status"] for e in helpline.audit("agent.request_refused")].count("pending") >= 4


def test_a_new_pc_is_active_at_once_and_clones_or_strangers_do_not_resemble(helpline, victim):
    for pc in (PCKey("pc-reception", machine_id=OTHER_MACHINE),  # a brand-new PC
               PCKey("pc-clone-7", machine_id=MACHINE),  # a clone of one disk image: another hostname
               PCKey("pc-accounting")):  # no machine id: nothing to compare
        answer = enroll(helpline, pc)
        assert answer["status"] == "active"
        assert helpline.ok("GET", "agent/tickets", EnrolledPC(pc, answer["agent_id"], answer["credential"])) == []
    # The same key enrolling again is the same agent (its signature proves it), still active.
    again = enroll(helpline, victim.pc.key)
    assert again["agent_id"] == victim.pc.agent_id and again["status"] == "active"
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", EnrolledPC(victim.pc.key, again["agent_id"], again["credential"]))] == [victim.number]
    assert helpline.audit("agent.enroll_pending") == []


def test_approving_makes_a_normal_agent_that_inherits_nothing(helpline, victim):
    attacker_key = PCKey("pc-accounting", machine_id=MACHINE)
    attacker = enroll(helpline, attacker_key)
    attacker_pc = EnrolledPC(attacker_key, attacker["agent_id"], attacker["credential"])
    admin_name = helpline.account(Role.ADMIN)
    admin = helpline.ok("POST", "auth/login", json={"username": admin_name, "password": "a-password-for-tests"})["token"]
    approved = helpline.ok("POST", f"agents/{attacker['agent_id']}/approve", admin, json={"reason": "re-imaged"})
    assert approved["status"] == "active" and approved["tickets"] == []

    assert helpline.ok("GET", "agent/tickets", attacker_pc) == []
    missing = helpline.call("GET", f"agent/tickets/{victim.number}", attacker_pc)
    assert missing.status_code == 404
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", victim.pc)] == [victim.number]
    assert helpline.ok("GET", f"agents/{victim.pc.agent_id}", admin)["tickets"] == [victim.number]

    [event] = helpline.audit("agent.approve")
    assert (event.actor_type, event.actor_id, event.target_id) == ("account", admin_name, attacker["agent_id"])
    assert event.details["reason"] == "re-imaged" and event.details["resembles"] == victim.pc.agent_id
    assert event.details["evidence"] == "same machine id and hostname"
    assert event.details["summary"].startswith("agent approved")

    again = helpline.call("POST", f"agents/{attacker['agent_id']}/approve", admin, json={})
    assert again.status_code == 409 and "not waiting for approval" in again.json()["error"]["message"]
    assert helpline.audit("agent.approve_refused")


def test_refusing_revokes_the_pending_agent(helpline, victim):
    attacker_key = PCKey("pc-accounting", machine_id=MACHINE)
    attacker = enroll(helpline, attacker_key)
    attacker_pc = EnrolledPC(attacker_key, attacker["agent_id"], attacker["credential"])
    admin = helpline.admin()
    refused = helpline.ok("POST", f"agents/{attacker['agent_id']}/refuse", admin, json={"reason": "not ours"})
    assert refused["status"] == "refused" and refused["revoked_at"]

    response = helpline.call("GET", "agent/tickets", attacker_pc)
    assert response.status_code == 401 and "refused" in response.json()["error"]["message"]
    # Enrolling again with the refused key is refused; approving it later is a conflict.
    token = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "office"})["token"]
    again = helpline.call("POST", "agents/enroll", json={"token": token, **attacker_key.signed("enroll", "token", token)})
    assert again.status_code == 401
    assert helpline.call("POST", f"agents/{attacker['agent_id']}/approve", admin, json={}).status_code == 409
    # Refusing an active agent is a conflict: revoking is the word for that.
    assert helpline.call("POST", f"agents/{victim.pc.agent_id}/refuse", admin, json={}).status_code == 409
    assert helpline.ok("GET", "agent/tickets", victim.pc)[0]["number"] == victim.number
    [event] = helpline.audit("agent.refuse")
    assert event.details["summary"] == "agent refused" and event.details["reason"] == "not ours"


def test_revoking_stops_the_credential_at_once_and_keeps_the_tickets(helpline, victim):
    admin = helpline.admin()
    assert helpline.ok("GET", "agent/tickets", victim.pc)
    revoked = helpline.ok("POST", f"agents/{victim.pc.agent_id}/revoke", admin, json={"reason": "laptop stolen"})
    assert revoked["status"] == "revoked" and revoked["tickets"] == [victim.number]

    response = helpline.call("GET", "agent/tickets", victim.pc)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This PC's agent has been revoked by an administrator."
    # The ticket still names the PC; its history stays.
    ticket = helpline.ok("GET", f"tickets/{victim.number}", victim.engineer)
    assert ticket["agents"] and any("secret line" in e["message"] for e in ticket["timeline"])

    [event] = helpline.audit("agent.revoke")
    assert (event.target_id, event.details["reason"], event.details["previous_status"]) == (
        victim.pc.agent_id, "laptop stolen", "active")
    assert event.details["summary"] == "agent revoked"
    # Revoking again changes nothing and records nothing.
    assert helpline.ok("POST", f"agents/{victim.pc.agent_id}/revoke", admin, json={})["status"] == "revoked"
    assert len(helpline.audit("agent.revoke")) == 1
    # The revoked key cannot enroll its way back.
    token = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "office"})["token"]
    again = helpline.call("POST", "agents/enroll", json={"token": token, **victim.pc.key.signed("enroll", "token", token)})
    assert again.status_code == 401 and "revoked" in again.json()["error"]["message"]
    assert helpline.audit("agent.request_refused")[-1].details["status"] == "revoked"


def test_a_pending_agent_can_be_revoked(helpline, victim):
    attacker_key = PCKey("pc-accounting", machine_id=MACHINE)
    attacker = enroll(helpline, attacker_key)
    attacker_pc = EnrolledPC(attacker_key, attacker["agent_id"], attacker["credential"])
    revoked = helpline.ok("POST", f"agents/{attacker['agent_id']}/revoke", helpline.admin(), json={})
    assert revoked["status"] == "revoked"
    assert helpline.call("GET", "agent/tickets", attacker_pc).status_code == 401
    assert helpline.audit("agent.revoke")[0].details["previous_status"] == "pending"


@pytest.mark.parametrize("decision", ["approve", "refuse", "revoke"])
def test_only_admins_decide(helpline, victim, decision):
    attacker_key = PCKey("pc-accounting", machine_id=MACHINE)
    attacker = enroll(helpline, attacker_key)
    attacker_pc = EnrolledPC(attacker_key, attacker["agent_id"], attacker["credential"])
    path = f"agents/{attacker['agent_id']}/{decision}"
    engineer = helpline.call("POST", path, helpline.token(Role.ENGINEER), json={})
    assert engineer.status_code == 403 and "admin role" in engineer.json()["error"]["message"]
    assert helpline.call("POST", path, victim.pc, json={}).status_code == 401
    assert helpline.call("POST", path, attacker_pc, json={}).status_code == 401
    assert helpline.call("POST", path, json={}).status_code == 401
    assert helpline.ok("GET", f"agents/{attacker['agent_id']}", helpline.admin())["status"] == "pending"
    missing = helpline.call("POST", f"agents/00000000-0000-0000-0000-000000000000/{decision}", helpline.admin(), json={})
    assert missing.status_code == 404
    assert helpline.audit(f"agent.{decision}_refused")[0].target_id == "00000000-0000-0000-0000-000000000000"


def test_the_list_filters_by_status(helpline, victim):
    pending = enroll(helpline, PCKey("pc-accounting", machine_id=MACHINE))
    admin = helpline.admin()
    listed = {a["id"]: a["status"] for a in helpline.ok("GET", "agents", admin)}
    assert listed == {victim.pc.agent_id: "active", pending["agent_id"]: "pending"}
    assert [a["id"] for a in helpline.ok("GET", "agents", admin, params={"status": "active"})] == [victim.pc.agent_id]
    assert helpline.call("GET", "agents", admin, params={"status": "sleepy"}).status_code == 422
