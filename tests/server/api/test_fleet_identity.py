"""Fleet identity in-process: enrollment-token networks and revocation with quarantine, a re-imaged PC
replacing its old agent, a cloned identity quarantined (and a restart not), retiring, and the fleet list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from protocol import agent_requests
from server.models import Agent, EscrowedPassword, ResticObject
from tests.server.conftest import CLIENT_IP, EnrolledPC, PCKey

MACHINE = "5f2c9e1a" * 4
SNAPSHOT = "3f0c1d2e" + "a" * 56
INSTANCE_A, INSTANCE_B, INSTANCE_C = "a" * 32, "b" * 32, "c" * 32


def new_token(helpline, admin: str, **fields) -> dict:
    return helpline.ok("POST", "enrollment-tokens", admin, json={"group": "lab", **fields})


def enroll(helpline, token: str, pc: PCKey, **kwargs):
    return helpline.call("POST", "agents/enroll", json={"token": token, **pc.signed("enroll", "token", token)}, **kwargs)


def enrolled(helpline, token: str, pc: PCKey) -> EnrolledPC:
    answer = enroll(helpline, token, pc)
    assert answer.status_code == 200, answer.text
    return EnrolledPC(pc, answer.json()["agent_id"], answer.json()["credential"])


def from_instance(helpline, pc: EnrolledPC, instance: str | None, method: str = "GET", path: str = "agent/tickets",
                  **kwargs):
    """Send ``pc``'s signed request as the running copy ``instance`` of its agent would."""
    request = helpline.http.build_request(method, f"/v1/{path}", **kwargs)
    request.headers.update(agent_requests.sign_request(
        pc.key.key, agent_id=pc.agent_id, method=method, target=request.url.raw_path.decode(),
        content_sha256=agent_requests.body_digest(request.read()), now=helpline.clock(), instance=instance))
    return helpline.http.send(request)


def error(response) -> str:
    return response.json()["error"]["message"]


# --- enrollment tokens -----------------------------------------------------------------------


def test_a_token_for_other_networks_is_refused_counted_and_audited(helpline):
    admin = helpline.admin()
    elsewhere = new_token(helpline, admin, networks=["10.0.0.0/8", "2001:db8::/32"])
    assert elsewhere["networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    refused = enroll(helpline, elsewhere["token"], PCKey("outside"))
    assert refused.status_code == 401
    assert error(refused) == f"That enrollment token may not be used from this PC's address ({CLIENT_IP})."
    assert helpline.failures(f"enroll-ip:{CLIENT_IP}") == 1
    [event] = helpline.audit("agent.enroll_refused")
    assert event.details["hostname"] == "outside" and "may not be used from" in event.details["reason"]
    here = new_token(helpline, admin, networks=["192.0.2.0/24"])
    assert enroll(helpline, here["token"], PCKey("inside")).status_code == 200
    assert [t["uses"] for t in helpline.ok("GET", "enrollment-tokens", admin)] == [1, 0]


def test_a_network_that_is_not_one_is_refused_at_creation(helpline):
    answer = helpline.call("POST", "enrollment-tokens", helpline.admin(), json={"group": "lab", "networks": ["10.0.0.0/33"]})
    assert answer.status_code == 422 and "is not a network" in answer.text


@pytest.mark.parametrize("proxied", ["10.1.2.3", "192.0.2.99"], ids=["inside", "outside"])
def test_behind_a_trusted_proxy_the_forwarded_address_decides(helpline, proxied):
    helpline.runtime.settings.trusted_proxies = [CLIENT_IP]
    token = new_token(helpline, helpline.admin(), networks=["10.0.0.0/8"])["token"]
    answer = enroll(helpline, token, PCKey("proxied"), headers={"X-Forwarded-For": proxied})
    assert answer.status_code == (200 if proxied.startswith("10.") else 401), answer.text


def test_the_list_shows_uses_agents_and_last_used_by(helpline, clock):
    admin = helpline.admin()
    token = new_token(helpline, admin, max_uses=3)
    first = enrolled(helpline, token["token"], PCKey("lab-1"))
    clock.advance(minutes=5)
    second = enrolled(helpline, token["token"], PCKey("lab-\x1b[2J2"))
    [listed] = helpline.ok("GET", "enrollment-tokens", admin)
    assert (listed["uses"], listed["agents"], listed["last_used_by"]) == (2, 2, second.agent_id)
    assert listed["last_used_by_hostname"] == "lab-\x1b[2J2"  # the PC's own claim; the CLI shows it escaped
    assert helpline.ok("GET", f"agents/{first.agent_id}", admin)["enrolled_by_token"] == token["id"]


def test_revoking_a_token_can_quarantine_the_agents_it_enrolled(helpline):
    admin = helpline.admin()
    leaked, other = new_token(helpline, admin, max_uses=5), new_token(helpline, admin)
    pcs = [enrolled(helpline, leaked["token"], PCKey(f"lab-{n}")) for n in range(2)]
    bystander = enrolled(helpline, other["token"], PCKey("other"))
    answer = helpline.ok("DELETE", f"enrollment-tokens/{leaked['id']}?quarantine_agents=true", admin)
    assert answer["revoked"] is True and sorted(answer["quarantined"]) == sorted(p.agent_id for p in pcs)
    for pc in pcs:
        refused = helpline.call("GET", "agent/tickets", pc)
        assert refused.status_code == 403
        assert error(refused) == f"This PC's agent is quarantined (enrollment token {leaked['id']} was revoked)."
        assert f"helpline agent release {pc.agent_id}" in refused.json()["error"]["hint"]
    assert helpline.call("GET", "agent/tickets", bystander).status_code == 200
    assert len(helpline.audit("agent.quarantine")) == 2
    assert enroll(helpline, leaked["token"], PCKey("late")).status_code == 401

    released = helpline.ok("POST", f"agents/{pcs[0].agent_id}/release", admin, json={"reason": "checked: ours"})
    assert released["status"] == "active" and released["quarantine_reason"] == ""
    assert helpline.call("GET", "agent/tickets", pcs[0]).status_code == 200
    [event] = helpline.audit("agent.release")
    assert event.details["reason"] == "checked: ours"


def test_revoking_alone_quarantines_nothing(helpline):
    admin = helpline.admin()
    token = new_token(helpline, admin)
    pc = enrolled(helpline, token["token"], PCKey("lab"))
    assert helpline.ok("DELETE", f"enrollment-tokens/{token['id']}", admin)["quarantined"] == []
    assert helpline.call("GET", "agent/tickets", pc).status_code == 200


def test_engineers_may_not_revoke_tokens_or_decide_on_agents(helpline):
    admin, engineer = helpline.admin(), helpline.token()
    token = new_token(helpline, admin)
    pc = enrolled(helpline, token["token"], PCKey("lab"))
    assert helpline.call("DELETE", f"enrollment-tokens/{token['id']}?quarantine_agents=true", engineer).status_code == 403
    for action, body in (("quarantine", {}), ("release", {}), ("retire", {}), ("replace", {"replaces": pc.agent_id})):
        assert helpline.call("POST", f"agents/{pc.agent_id}/{action}", engineer, json=body).status_code == 403, action
    assert helpline.call("GET", "agent/tickets", pc).status_code == 200


# --- a re-imaged PC ---------------------------------------------------------------------------


def reimaged(helpline, admin: str) -> tuple[EnrolledPC, EnrolledPC, str]:
    """An enrolled PC linked to a ticket, and the same PC re-imaged (a new key, same machine id and host name),
    pending; and the ticket's number."""
    old = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("laptop-042", machine_id=MACHINE))
    number = helpline.ticket(admin)
    code = helpline.pairing_code(admin, number)["code"]
    assert helpline.call("POST", "pair", old, json={"code": code, **old.key.signed("pair", "code", code)}).status_code == 200
    new = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("LAPTOP-042", machine_id=MACHINE))
    return old, new, number


def test_a_reimaged_pc_waits_looking_like_its_old_agent_and_takes_nothing_by_itself(helpline):
    admin = helpline.admin()
    old, new, number = reimaged(helpline, admin)
    [pending] = helpline.ok("GET", "agents?status=pending", admin)
    assert (pending["id"], pending["resembles"], pending["problems"]) == (new.agent_id, old.agent_id, ["pending"])
    assert helpline.call("GET", "agent/tickets", new).status_code == 403
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", old)] == [number]


def test_replacing_moves_ticket_links_links_snapshots_and_retires_the_old_agent(helpline):
    admin = helpline.admin()
    old, new, number = reimaged(helpline, admin)
    finished = helpline.clock()
    assert helpline.call("POST", "agent/snapshots/reports", old, json={
        "repository": "server", "status": "ok", "snapshot_id": SNAPSHOT,
        "started_at": (finished - timedelta(minutes=3)).isoformat(), "finished_at": finished.isoformat()}).is_success
    assert helpline.call("POST", "agent/snapshots/credential", old, json={"purpose": "backup"}).status_code == 200

    answer = helpline.ok("POST", f"agents/{new.agent_id}/replace", admin,
                         json={"replaces": old.agent_id, "reason": "re-imaged by IT"})
    assert (answer["status"], answer["replaces"], answer["tickets"]) == ("active", old.agent_id, [number])
    assert [t["number"] for t in helpline.ok("GET", "agent/tickets", new)] == [number]

    gone = helpline.call("GET", "agent/tickets", old)
    assert gone.status_code == 401
    assert error(gone) == f"This PC's agent was replaced by agent {new.agent_id} (a re-imaged PC)."
    shown = helpline.ok("GET", f"agents/{old.agent_id}", admin)
    assert (shown["status"], shown["replaced_by"], shown["tickets"]) == ("retired", new.agent_id, [])
    # The old agent's snapshot records stay under its id; the new agent may restore (read) its repository.
    assert [r["snapshot_id"] for r in helpline.ok("GET", f"agents/{old.agent_id}/snapshots", admin)] == [SNAPSHOT]
    restore = helpline.ok("POST", "agent/snapshots/credential", new, json={"purpose": "restore", "agent_id": old.agent_id})
    assert restore["agent_id"] == old.agent_id and restore["mode"] == "read"
    backup = helpline.call("POST", "agent/snapshots/credential", new, json={"purpose": "backup", "agent_id": old.agent_id})
    assert backup.status_code == 403

    [replaced] = helpline.audit("agent.replace")
    assert replaced.details["replaces"] == old.agent_id and replaced.details["tickets_moved"] == 1
    assert replaced.details["evidence"] == "same machine id and hostname"
    [retired] = helpline.audit("agent.retire")
    assert retired.target_id == old.agent_id and retired.details["replaced_by"] == new.agent_id
    # Done once: the old agent cannot be replaced again, nor the new one replace another.
    again = helpline.call("POST", f"agents/{new.agent_id}/replace", admin, json={"replaces": old.agent_id})
    assert again.status_code == 409


def test_an_unrelated_agent_may_not_read_a_replaced_agents_snapshots(helpline):
    admin = helpline.admin()
    old, new, _ = reimaged(helpline, admin)
    helpline.ok("POST", f"agents/{new.agent_id}/replace", admin, json={"replaces": old.agent_id})
    stranger = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("stranger"))
    answer = helpline.call("POST", "agent/snapshots/credential", stranger, json={"purpose": "restore", "agent_id": old.agent_id})
    assert answer.status_code == 403


def test_approve_with_replaces_is_the_same_decision_and_a_plain_approve_inherits_nothing(helpline):
    admin = helpline.admin()
    old, new, number = reimaged(helpline, admin)
    approved = helpline.ok("POST", f"agents/{new.agent_id}/approve", admin, json={})
    assert approved["tickets"] == [] and approved["replaces"] is None
    assert helpline.ok("GET", f"agents/{old.agent_id}", admin)["tickets"] == [number]


def test_replacing_refuses_nonsense_and_keeps_the_refusal(helpline):
    admin = helpline.admin()
    old, new, _ = reimaged(helpline, admin)
    itself = helpline.call("POST", f"agents/{new.agent_id}/replace", admin, json={"replaces": new.agent_id})
    assert itself.status_code == 422
    helpline.ok("POST", f"agents/{old.agent_id}/revoke", admin, json={})
    revoked_new = helpline.call("POST", f"agents/{old.agent_id}/replace", admin, json={"replaces": new.agent_id})
    assert revoked_new.status_code == 409
    assert len(helpline.audit("agent.replace_refused")) == 2


# --- a cloned identity --------------------------------------------------------------------------


def test_two_copies_taking_turns_are_quarantined_and_both_refused(helpline, clock):
    admin = helpline.admin()
    pc = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("desk-7"))
    assert from_instance(helpline, pc, INSTANCE_A).status_code == 200
    clock.advance(minutes=1)
    assert from_instance(helpline, pc, INSTANCE_B).status_code == 200  # so far: a restart, perhaps
    clock.advance(minutes=1)
    back = from_instance(helpline, pc, INSTANCE_A)
    assert back.status_code == 403 and error(back).startswith("This PC's agent is quarantined (its identity is in use on two PCs")
    assert from_instance(helpline, pc, INSTANCE_B).status_code == 403
    assert from_instance(helpline, pc, INSTANCE_C).status_code == 403
    shown = helpline.ok("GET", f"agents/{pc.agent_id}", admin)
    assert shown["status"] == "quarantined" and shown["problems"] == ["quarantined"]
    [event] = helpline.audit("agent.quarantine")
    assert event.actor_id == "clone-detection" and event.target_id == pc.agent_id
    assert [a["id"] for a in helpline.ok("GET", "agents?problem=quarantined", admin)] == [pc.agent_id]

    helpline.ok("POST", f"agents/{pc.agent_id}/release", admin, json={"reason": "the copy was wiped"})
    clock.advance(minutes=1)
    assert from_instance(helpline, pc, INSTANCE_B).status_code == 200


def test_two_copies_taking_turns_on_the_request_poll_stay_quarantined(helpline, clock):
    """The fleet's long poll admits in the same transaction as the signature check: a clone found there is
    quarantined for good, not rolled back with the refusal."""
    admin = helpline.admin()
    pc = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("desk-9"))
    for instance in (INSTANCE_A, INSTANCE_B):
        assert from_instance(helpline, pc, instance, path="agent/requests").status_code == 200
        clock.advance(minutes=1)
    back = from_instance(helpline, pc, INSTANCE_A, path="agent/requests")
    assert back.status_code == 403 and "quarantined" in error(back)
    assert helpline.ok("GET", f"agents/{pc.agent_id}", admin)["status"] == "quarantined"
    assert from_instance(helpline, pc, INSTANCE_B, path="agent/requests").status_code == 403
    assert len(helpline.audit("agent.quarantine")) == 1


@pytest.mark.parametrize("instances", [[INSTANCE_A, INSTANCE_B, INSTANCE_B], [INSTANCE_A, INSTANCE_B, INSTANCE_C, INSTANCE_C],
                                       [INSTANCE_A, INSTANCE_A, INSTANCE_A]], ids=["restart", "two-restarts", "one-copy"])
def test_restarts_and_one_copy_are_never_quarantined(helpline, clock, instances):
    pc = enrolled(helpline, new_token(helpline, helpline.admin())["token"], PCKey("desk-8"))
    for instance in instances:
        clock.advance(minutes=2)
        assert from_instance(helpline, pc, instance).status_code == 200
    assert helpline.audit("agent.quarantine") == []


def test_an_old_copy_coming_back_after_the_window_is_a_switch_not_a_clone(helpline, clock):
    pc = enrolled(helpline, new_token(helpline, helpline.admin())["token"], PCKey("desk-9"))
    assert from_instance(helpline, pc, INSTANCE_A).status_code == 200
    clock.advance(minutes=1)
    assert from_instance(helpline, pc, INSTANCE_B).status_code == 200
    clock.advance(minutes=helpline.settings.fleet.clone_window_minutes + 1)
    assert from_instance(helpline, pc, INSTANCE_A).status_code == 200


def test_the_instance_is_signed_with_the_request(helpline):
    pc = enrolled(helpline, new_token(helpline, helpline.admin())["token"], PCKey("desk-10"))
    request = helpline.http.build_request("GET", "/v1/agent/tickets")
    request.headers.update(agent_requests.sign_request(
        pc.key.key, agent_id=pc.agent_id, method="GET", target="/v1/agent/tickets",
        content_sha256=agent_requests.body_digest(b""), now=helpline.clock(), instance=INSTANCE_A))
    request.headers[agent_requests.INSTANCE_HEADER] = INSTANCE_B  # swapped on the way
    answer = helpline.http.send(request)
    assert answer.status_code == 401 and error(answer) == "The request's signature does not match this PC's key."


def test_agents_that_send_no_instance_are_not_compared(helpline, clock):
    pc = enrolled(helpline, new_token(helpline, helpline.admin())["token"], PCKey("desk-11"))
    for instance in (INSTANCE_A, None, INSTANCE_A, None):
        clock.advance(minutes=1)
        assert from_instance(helpline, pc, instance).status_code == 200


# --- retiring -------------------------------------------------------------------------------------


def test_retiring_ends_the_credential_and_keeps_the_data(helpline):
    admin = helpline.admin()
    pc = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("old-desk"))
    assert helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": "grated-carrot-umbrella-7731"})
    retired = helpline.ok("POST", f"agents/{pc.agent_id}/retire", admin, json={"reason": "sold"})
    assert retired["status"] == "retired" and retired["retired_at"] is not None and retired["problems"] == []
    refused = helpline.call("GET", "agent/tickets", pc)
    assert refused.status_code == 401 and error(refused) == "This PC's agent has been retired by an administrator."
    with helpline.db() as session:
        assert session.get(EscrowedPassword, pc.agent_id) is not None
    [event] = helpline.audit("agent.retire")
    assert event.details["delete_data"] is False and event.details["reason"] == "sold"
    # Its key never enrolls again.
    token = new_token(helpline, admin)["token"]
    assert enroll(helpline, token, pc.key).status_code == 401


def test_retiring_with_delete_data_trashes_the_repository_and_forgets_the_password(helpline):
    admin = helpline.admin()
    pc = enrolled(helpline, new_token(helpline, admin)["token"], PCKey("old-desk"))
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": "grated-carrot-umbrella-7731"})
    with helpline.db() as session:
        session.add(ResticObject(agent_id=pc.agent_id, type="config", name="config", size=10, created_at=helpline.clock(),
                                 created_by="append"))
    helpline.ok("POST", f"agents/{pc.agent_id}/retire", admin, json={"delete_data": True})
    with helpline.db() as session:
        assert session.get(EscrowedPassword, pc.agent_id) is None
        [obj] = session.scalars(select(ResticObject).where(ResticObject.agent_id == pc.agent_id))
        assert obj.trashed_at is not None
    [event] = helpline.audit("agent.retire")
    assert (event.details["objects_trashed"], event.details["escrow_deleted"]) == (1, True)


# --- the fleet list ---------------------------------------------------------------------------------


def test_the_list_shows_problems_and_filters_on_the_server(helpline, clock):
    lab = new_token(helpline, helpline.admin(), max_uses=5, expires_in_hours=72)["token"]
    quiet = enrolled(helpline, lab, PCKey("quiet"))
    clock.advance(days=2)
    admin = helpline.admin()
    busy = enrolled(helpline, lab, PCKey("busy"))
    office = helpline.ok("POST", "enrollment-tokens", admin, json={"group": "office"})["token"]
    other = enrolled(helpline, office, PCKey("other"))
    listed = {a["hostname"]: a["problems"] for a in helpline.ok("GET", "agents", admin)}
    assert listed == {"quiet": ["offline", "not protected"], "busy": ["not protected"], "other": ["not protected"]}
    offline = helpline.ok("GET", "agents?problem=offline", admin)
    assert [a["id"] for a in offline] == [quiet.agent_id]
    lab_only = helpline.ok("GET", "agents?group=lab&problem=not-protected", admin)
    assert sorted(a["id"] for a in lab_only) == sorted([quiet.agent_id, busy.agent_id])
    assert other.agent_id not in {a["id"] for a in lab_only}
    unknown = helpline.call("GET", "agents?problem=sleepy", admin)
    assert unknown.status_code == 422 and "'sleepy' is not a problem" in error(unknown)
    with helpline.db() as session:
        assert session.get(Agent, quiet.agent_id).last_seen_at < clock() - timedelta(days=1)
