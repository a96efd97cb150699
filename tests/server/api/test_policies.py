"""Per-group policies on the server: set by admins only, checked, versioned, signed for each PC of the group,
the version each PC runs recorded, and unattended requests signed only where the group's policy allows them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from protocol.errors import AuthError, ForbiddenError
from protocol.pc_requests import SignedPcRequest, verify_pc_request
from protocol.policy import PolicyStatement, SignedPolicy, verify_policy
from protocol.signing import generate_key
from protocol.policy import sign_policy
from server.fleet.policies import policy_behind
from server.models import Agent
from tests.server.api.test_pc_requests import linked_pc

POLICY = {
    "snapshots": {"interval": "2h", "paths": ["~", "/srv/projects"], "keep_daily": 14},
    "escrow": True,
    "collectors": {"disabled": ["browser"], "extra_log_globs": ["/var/log/myapp/*.log"]},
    "consent": {"wait_minutes": 30},
    "unattended": ["restore", "diagnostics"],
}


@pytest.fixture
def admin(helpline) -> str:
    return helpline.admin()


def check_in(helpline, pc, running=None):
    return helpline.ok("POST", "agent/policy", pc, json={} if running is None else {"running": running})


def test_an_admin_sets_versions_and_engineers_read_them(helpline, admin):
    first = helpline.ok("PUT", "policies/office", admin, json=POLICY)
    assert first["group"] == "office" and first["version"] == 1 and first["body"]["unattended"] == ["diagnostics", "restore"]
    second = helpline.ok("PUT", "policies/office", admin, json={"unattended": []})
    assert second["version"] == 2
    engineer = helpline.token()
    assert helpline.ok("GET", "policies/office", engineer)["version"] == 2
    assert helpline.ok("GET", "policies/office?version=1", engineer)["body"]["escrow"] is True
    assert [p["version"] for p in helpline.ok("GET", "policies", engineer)] == [2]
    assert [e.details["version"] for e in helpline.audit("policy.set")] == [1, 2]
    refused = helpline.call("PUT", "policies/office", engineer, json={"unattended": []})
    assert refused.status_code == 403
    missing = helpline.call("GET", "policies/office?version=7", engineer)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Group 'office' has no version 7 of its policy."
    assert helpline.call("GET", "policies", None).status_code == 401


@pytest.mark.parametrize("body, words", [
    ({"unattended": ["session"]}, "can never run unattended"),
    ({"unattended": ["shell"]}, "can never run unattended"),
    ({"unattended": ["snapshot"]}, "is not something that can run unattended"),
    ({"unattended_session": True}, "unattended session is not something"),
    ({"snapshots": {"interval": "often"}}, "duration"),
    ({"snapshots": {"local_repository": "/tmp/x"}}, "local repository is not something"),
    ({"snapshots": {"paths": ["relative/path"]}}, "absolute"),
    ({"snapshots": {"paths": ["/home/../etc"]}}, ".."),
    ({"snapshots": {"local_max_size": "lots"}}, "size"),
    ({"consent": {"wait_minutes": 0}}, "wait minutes must be at least 1"),
    ({"collectors": {"extra_log_globs": ["/var/log/\x1b[2J"]}}, "extra log globs"),
], ids=["session", "shell", "snapshot", "unknown-key", "duration", "machine-path", "relative", "dotdot", "size",
        "wait", "control"])
def test_a_bad_policy_is_refused_with_a_clear_line_and_nothing_stored(helpline, admin, body, words):
    answer = helpline.call("PUT", "policies/office", admin, json=body)
    assert answer.status_code == 422
    assert words in answer.json()["error"]["message"]
    assert helpline.call("GET", "policies/office", admin).status_code == 404


def test_a_pc_gets_its_groups_policy_signed_for_it_and_reports_the_version_it_runs(helpline, admin):
    pc = helpline.enrolled_pc("pc-ana", group="office")
    other = helpline.enrolled_pc("pc-bob", group="lab")
    assert check_in(helpline, pc) == {"current_version": None, "policy": None}
    helpline.ok("PUT", "policies/office", admin, json=POLICY)

    answer = check_in(helpline, pc)
    assert answer["current_version"] == 1
    statement = verify_policy(SignedPolicy.model_validate(answer["policy"]), pinned_server_key=helpline.runtime.public_key,
                              agent_id=pc.agent_id)
    assert statement.group == "office" and statement.version == 1 and statement.policy().allows_unattended("restore")
    with pytest.raises(ForbiddenError):  # signed for pc-ana alone
        verify_policy(SignedPolicy.model_validate(answer["policy"]), pinned_server_key=helpline.runtime.public_key,
                      agent_id=other.agent_id)
    assert check_in(helpline, other)["policy"] is None  # the lab group has no policy

    with helpline.db() as session:
        agent = session.get(Agent, pc.agent_id)
        assert agent.policy_version is None and policy_behind(session, agent)
    assert check_in(helpline, pc, running=1) == {"current_version": 1, "policy": None}
    with helpline.db() as session:
        agent = session.get(Agent, pc.agent_id)
        assert agent.policy_version == 1 and not policy_behind(session, agent)
        assert not policy_behind(session, session.get(Agent, other.agent_id))
    shown = helpline.ok("GET", f"agents/{pc.agent_id}", admin)
    assert shown["policy_version"] == 1 and shown["current_policy_version"] == 1
    assert helpline.ok("GET", "policies/office", admin)["agents_current"] == 1

    helpline.ok("PUT", "policies/office", admin, json={"unattended": []})
    with helpline.db() as session:
        assert policy_behind(session, session.get(Agent, pc.agent_id))
    assert helpline.ok("GET", "policies/office", admin)["agents_behind"] == 1
    listed = {a["id"]: a for a in helpline.ok("GET", "agents", admin)}
    assert "policy behind" in listed[pc.agent_id]["problems"] and "policy behind" not in listed[other.agent_id]["problems"]
    behind = helpline.ok("GET", "agents", admin, params={"problem": "policy-behind"})
    assert [a["id"] for a in behind] == [pc.agent_id]
    assert check_in(helpline, pc, running=1)["policy"]["payload"]["version"] == 2
    # A version the server never issued is not taken as the one the PC runs.
    check_in(helpline, pc, running=9)
    with helpline.db() as session:
        assert session.get(Agent, pc.agent_id).policy_version is None
    assert [e.details["version"] for e in helpline.audit("agent.policy_applied")] == [1, None]


def test_an_answer_with_a_policy_is_signed_by_the_server_like_every_answer_to_a_pc(helpline, admin):
    pc = helpline.enrolled_pc("pc-ana", group="office")
    helpline.ok("PUT", "policies/office", admin, json=POLICY)
    request = helpline.signed(pc, "POST", "agent/policy", json={})
    response = helpline.http.send(request)
    assert response.status_code == 200 and helpline.answer_is_signed(request, response)
    assert helpline.call("POST", "agent/policy", pc.credential, json={}).status_code == 401  # a bearer alone: no


def test_forged_other_pc_and_older_policies_are_refused_by_the_pc(helpline, admin):
    pc = helpline.enrolled_pc("pc-ana", group="office")
    helpline.ok("PUT", "policies/office", admin, json=POLICY)
    first = SignedPolicy.model_validate(check_in(helpline, pc)["policy"])
    helpline.ok("PUT", "policies/office", admin, json={"unattended": []})
    second = SignedPolicy.model_validate(check_in(helpline, pc, running=1)["policy"])
    key = helpline.runtime.public_key
    running = verify_policy(second, pinned_server_key=key, agent_id=pc.agent_id)

    with pytest.raises(AuthError, match="no downgrade"):
        verify_policy(first, pinned_server_key=key, agent_id=pc.agent_id, running=running)
    widened = SignedPolicy(payload={**second.payload, "body": {"unattended": ["restore"]}}, signature=second.signature)
    with pytest.raises(AuthError, match="not signed by this PC's server"):
        verify_policy(widened, pinned_server_key=key, agent_id=pc.agent_id)
    impostor = sign_policy(generate_key(), PolicyStatement.model_validate({**second.payload, "version": 3}))
    with pytest.raises(AuthError, match="not signed"):
        verify_policy(impostor, pinned_server_key=key, agent_id=pc.agent_id, running=running)
    # The same version again is no change; the same version with another body is refused.
    assert verify_policy(second, pinned_server_key=key, agent_id=pc.agent_id, running=running).version == 2


def test_requests_are_signed_unattended_only_where_the_groups_policy_allows_and_never_a_snapshot(helpline, admin):
    engineer = helpline.token()
    pc, number = linked_pc(helpline, engineer)  # group "office"
    restore = {"kind": "restore", "params": {"paths": ["/home/ana/report.odt"]}}
    diagnostics = {"kind": "diagnostics", "ticket": number}

    assert helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=restore)["unattended"] is False
    helpline.ok("PUT", "policies/office", admin, json={"unattended": ["diagnostics"]})
    assert helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=diagnostics)["unattended"] is True
    assert helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=restore)["unattended"] is False
    # The group's policy wins over the server-wide setting for restores.
    helpline.runtime.settings.snapshots.unattended_restore = True
    assert helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=restore)["unattended"] is False
    helpline.ok("PUT", "policies/office", admin, json={"unattended": ["restore"]})
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json=restore)
    snapshot = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={"kind": "snapshot"})
    assert made["unattended"] is True and snapshot["unattended"] is False
    taken = {s["payload"]["id"]: s for s in helpline.ok("GET", "agent/requests", pc)}
    request = verify_pc_request(SignedPcRequest.model_validate(taken[made["id"]]),
                                pinned_server_key=helpline.runtime.public_key, agent_id=pc.agent_id,
                                now=helpline.clock())
    assert request.unattended is True


def test_a_groups_server_quota_replaces_the_servers_for_its_pcs(helpline, admin):
    import os

    from server.settings import SnapshotSettings
    from tests.server.api.test_restic_rest import repo, usage

    helpline.runtime.settings.snapshots = SnapshotSettings(quota_bytes=100_000)
    pc = helpline.enrolled_pc("pc-ana", group="office")
    assert helpline.call("PUT", "policies/office", admin, json={"server_quota": "lots"}).status_code == 422
    helpline.ok("PUT", "policies/office", admin, json={"server_quota": "10k"})
    r = repo(helpline, pc)
    assert r.put("data", os.urandom(6_000)).status_code == 200
    refused = r.put("data", os.urandom(6_000))
    assert refused.status_code == 507
    assert "full: 6000 of 10000 bytes" in refused.json()["error"]["message"]
    assert "server_quota" in refused.json()["error"]["hint"]
    helpline.ok("PUT", "policies/office", admin, json={})  # no quota in the group's policy: the server's again
    assert r.put("data", os.urandom(6_000)).status_code == 200 and usage(helpline, pc.agent_id) == 12_000
