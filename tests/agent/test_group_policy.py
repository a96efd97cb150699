"""This PC's group policy: kept only when the pinned server key signed it for this PC and it is no older than
the one it runs; a copy edited on disk counts for nothing; its snapshot keys win over agent.toml; and a restore
or fresh diagnostics runs without the user only under a policy that allows it (the result says which version)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from agent.group_policy import POLICY_FILE, GroupPolicy
from agent.snapshots.policy import load_policy
from agent.store import AgentState, AgentStore
from protocol import signing
from protocol.errors import AuthError, ForbiddenError, InvalidInputError
from protocol.pc_requests import PcRequestState
from protocol.policy import PolicyCheckInAnswer, PolicyStatement, SignedPolicy, sign_policy
from tests.agent.service.test_requests import AGENT, NOW, Harness

SERVER_KEY = signing.generate_key()


def statement(version: int, body: dict, *, group: str = "office", agent_id: str = AGENT, at=NOW) -> PolicyStatement:
    return PolicyStatement(agent_id=agent_id, group=group, version=version, body=body, issued_at=at)


def signed(version: int, body: dict, *, key=SERVER_KEY, **kwargs) -> SignedPolicy:
    return sign_policy(key, statement(version, body, **kwargs))


@pytest.fixture
def agent_dir(tmp_path, monkeypatch):
    folder = tmp_path / "agent"
    AgentStore(folder).save(AgentState(server_url="http://127.0.0.1:1", agent_id=AGENT, credential="x",
                                       server_public_key=signing.public_key_b64(SERVER_KEY)))
    config = tmp_path / "agent.toml"
    config.write_text('[snapshots]\npaths = ["/srv/own"]\ninterval = "1h"\nkeep_daily = 3\n')
    monkeypatch.setenv("HELPLINE_AGENT_CONFIG", str(config))
    return folder


def test_a_signed_policy_is_kept_and_an_older_forged_or_misaddressed_one_refused(agent_dir):
    group = GroupPolicy(agent_dir)
    assert group.held() is None
    assert group.accept(signed(2, {"unattended": ["restore"]})).version == 2
    assert group.held().version == 2 and (agent_dir / POLICY_FILE).stat().st_mode & 0o777 == 0o600
    with pytest.raises(AuthError, match="no downgrade"):
        group.accept(signed(1, {"unattended": ["restore", "diagnostics"]}))
    with pytest.raises(AuthError, match="not signed"):
        group.accept(signed(3, {"unattended": ["restore", "diagnostics"]}, key=signing.generate_key()))
    with pytest.raises(ForbiddenError):
        group.accept(signed(3, {}, agent_id="another-pc"))
    with pytest.raises(AuthError, match="no downgrade"):  # another group's statement issued before the one run
        group.accept(signed(9, {}, group="lab", at=NOW - timedelta(days=1)))
    assert group.held().version == 2
    assert group.accept(signed(1, {}, group="lab", at=NOW + timedelta(hours=1))).group == "lab"  # moved group


def test_a_kept_policy_edited_on_disk_counts_for_nothing(agent_dir):
    group = GroupPolicy(agent_dir)
    group.accept(signed(1, {"unattended": []}))
    kept = json.loads((agent_dir / POLICY_FILE).read_text())
    kept["payload"]["body"]["unattended"] = ["restore", "diagnostics"]
    (agent_dir / POLICY_FILE).write_text(json.dumps(kept))
    assert group.held() is None and group.body() is None


def test_the_groups_snapshot_keys_win_over_agent_toml_and_the_rest_stays(agent_dir):
    before = load_policy(data_dir=agent_dir)
    assert [str(p) for p in before.paths] == ["/srv/own"] and before.interval == timedelta(hours=1)
    GroupPolicy(agent_dir).accept(signed(1, {"snapshots": {"interval": "2h", "keep_weekly": 8}}))
    after = load_policy(data_dir=agent_dir)
    assert after.interval == timedelta(hours=2) and after.retention.weekly == 8
    assert [str(p) for p in after.paths] == ["/srv/own"] and after.retention.daily == 3  # agent.toml's


def test_a_policy_that_cannot_run_on_this_pc_is_refused_and_the_old_one_stays(agent_dir):
    group = GroupPolicy(agent_dir)
    group.accept(signed(1, {"unattended": ["restore"]}))
    impossible = {"snapshots": {"keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}}
    with pytest.raises(InvalidInputError, match="does not fit this PC"):
        group.accept(signed(2, impossible))
    assert group.held().version == 1


class FakeServer:
    """The check-in route as the server answers it, remembering the versions the PC said it runs."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.running: list[int | None] = []

    def agent_policy(self, body):
        self.running.append(body.running)
        return self.answers.pop(0) if self.answers else PolicyCheckInAnswer(current_version=None)


def test_check_in_takes_a_new_version_reports_it_and_drops_the_policy_when_the_group_has_none(agent_dir):
    group = GroupPolicy(agent_dir)
    server = FakeServer([PolicyCheckInAnswer(current_version=1, policy=signed(1, {"unattended": ["restore"]})),
                         PolicyCheckInAnswer(current_version=1)])
    held, changed = group.check_in(server)
    assert held.version == 1 and changed and server.running == [None, 1]
    forged = PolicyCheckInAnswer(current_version=2, policy=signed(2, {}, key=signing.generate_key()))
    server = FakeServer([forged])
    held, changed = group.check_in(server)
    assert held.version == 1 and not changed  # refused, logged; the kept one stays in force
    held, changed = group.check_in(FakeServer([]))
    assert held is None and changed and group.held() is None


# --- unattended requests --------------------------------------------------------------------------


def runner_under(pc: Harness, policy: PolicyStatement | None):
    runner = pc.runner()
    runner.policy = lambda: policy
    return runner


@pytest.mark.parametrize("kind", ["restore", "diagnostics"])
def test_a_request_runs_unattended_only_under_a_policy_that_allows_it_and_says_so(tmp_path, kind):
    pc = Harness(tmp_path)
    request = pc.request(kind, unattended=True)
    assert runner_under(pc, statement(4, {"unattended": [kind]})).handle(request) is PcRequestState.DONE
    rid = request.payload["id"]
    assert "waiting_consent" not in pc.states(rid) and pc.ran == [rid]
    details = [detail for r, _, detail in pc.sent if r == rid]
    assert details[0] == "Started unattended under policy version 4." and details[-1].endswith("policy version 4.")


def test_without_the_allowance_or_without_the_servers_flag_the_request_waits_for_the_user(tmp_path):
    pc = Harness(tmp_path)
    pc.stop.set()  # nobody answers: the runner stops waiting
    not_allowed = runner_under(pc, statement(2, {"unattended": ["diagnostics"]}))
    assert not_allowed.handle(pc.request("restore", unattended=True)) is PcRequestState.WAITING_CONSENT
    not_flagged = runner_under(pc, statement(2, {"unattended": ["restore"]}))
    assert not_flagged.handle(pc.request("restore", unattended=False)) is PcRequestState.WAITING_CONSENT
    assert pc.ran == []


def test_the_result_names_the_policy_version_it_ran_unattended_under(tmp_path):
    pc = Harness(tmp_path)
    results = []
    runner = runner_under(pc, statement(7, {"unattended": ["restore"]}))
    runner.send = lambda rid, update: results.append(update.result)
    runner.handle(pc.request("restore", unattended=True))
    assert results[-1] == {"snapshot": "abcd1234", "unattended_policy_version": 7}


def test_the_policys_consent_wait_ends_a_question_nobody_answered(tmp_path):
    pc = Harness(tmp_path)
    request = pc.request("restore", minutes=600)
    pc.clock.now = NOW + timedelta(minutes=31)  # the policy gives the user 30 minutes from the request
    assert runner_under(pc, statement(1, {"consent": {"wait_minutes": 30}})).handle(request) is PcRequestState.REFUSED
    assert pc.ran == [] and "in the time the group's policy gives" in pc.sent[-1][2]


# --- the service: checks in, applies, and says once when the server is too old -------------------------


class ServiceClient:
    """A client as the service's check-in uses it: answers from a list, or raises what it is given."""

    def __init__(self, answers):
        self.answers = answers
        self.running: list[int | None] = []

    def agent_policy(self, body):
        self.running.append(body.running)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self):
        pass


def service_with(agent_dir, client):
    import threading

    from agent.service.run import agent_service
    from agent.snapshots.jobs import Snapshots

    events = []
    snapshots = Snapshots(AgentStore(agent_dir), client_factory=lambda: client)
    service = agent_service(snapshots, stop=threading.Event(), on_event=events.append)
    return service, snapshots, events


def test_the_service_applies_a_new_policy_at_check_in_and_reads_its_snapshot_keys_again(agent_dir):
    client = ServiceClient([PolicyCheckInAnswer(current_version=1, policy=signed(1, {"snapshots": {"interval": "3h"}})),
                            PolicyCheckInAnswer(current_version=1), PolicyCheckInAnswer(current_version=1)])
    service, snapshots, events = service_with(agent_dir, client)
    assert snapshots.policy.interval == timedelta(hours=1)  # agent.toml's
    service.check_in()
    assert snapshots.policy.interval == timedelta(hours=3) and client.running == [None, 1]
    assert [e.what for e in events] == ["now running policy version 1 of group office"]
    service.check_in()
    assert client.running == [None, 1, 1] and len(events) == 1  # nothing new: nothing said


def test_a_server_too_old_for_policies_is_told_once_and_the_kept_policy_stays(agent_dir):
    from agent.client import ServerTooOldError
    from protocol.errors import UnavailableError

    GroupPolicy(agent_dir).accept(signed(2, {"unattended": ["restore"]}))
    too_old = ServerTooOldError("The server at http://x is too old for group policies: upgrade it.")
    client = ServiceClient([UnavailableError("The server did not answer in time."), too_old])
    service, _snapshots, events = service_with(agent_dir, client)
    service.check_in()
    service.check_in()
    service.check_in()
    assert len(client.running) == 2  # not asked again after it said it is too old
    words = [e.what for e in events]
    assert words[0] == "policy check-in failed: The server did not answer in time."
    assert words[1].startswith("The server at http://x is too old for group policies: upgrade it.") and len(words) == 2
    assert GroupPolicy(agent_dir).held().version == 2


def test_a_group_policy_with_escrow_off_keeps_the_repository_password_on_the_pc(agent_dir):
    from agent.snapshots.jobs import Snapshots

    class Escrow:
        sent: list[str] = []

        def put_escrow(self, body):
            self.sent.append(body.password)

        def close(self):
            pass

    client = Escrow()
    snapshots = Snapshots(AgentStore(agent_dir), client_factory=lambda: client)
    GroupPolicy(agent_dir).accept(signed(1, {"escrow": False}))
    snapshots._escrow("server")
    assert client.sent == [] and snapshots.state.read().repository("server").escrow is None  # asked again later
    GroupPolicy(agent_dir).accept(signed(2, {"escrow": True}))
    snapshots._escrow("server")
    assert len(client.sent) == 1 and snapshots.state.read().repository("server").escrow == "sent"


def test_a_group_policys_collectors_and_log_globs_add_to_the_admins_diagnostics_settings(agent_dir, monkeypatch):
    from agent.share import ShareRequest, collect_options

    monkeypatch.setenv("HELPLINE_AGENT_DIR", str(agent_dir))
    before = collect_options(ShareRequest(logs=["/tmp/mine.log"]))
    GroupPolicy(agent_dir).accept(signed(1, {"collectors": {"disabled": ["browser"],
                                                            "extra_log_globs": ["/var/log/myapp/*.log"]}}))
    after = collect_options(ShareRequest(logs=["/tmp/mine.log"]))
    assert before.log_globs == ["/tmp/mine.log"] and "browser" not in before.exclude
    assert after.log_globs == ["/tmp/mine.log", "/var/log/myapp/*.log"] and "browser" in after.exclude
