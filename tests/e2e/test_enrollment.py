"""Journey 3: an admin makes enrollment tokens; PCs enroll; refusals for bad tokens."""

from __future__ import annotations

import json
import stat
import time

import pytest

from protocol.errors import ExitStatus
from tests.support.live import json_request

pytestmark = pytest.mark.e2e


def new_token(admin_pc, *args: str) -> dict:
    return admin_pc.ok("enroll-token", "create", "--json", *args).json()


def test_enroll_and_reenroll_without_duplicates(live_server, admin_pc, make_pc):
    token = new_token(admin_pc, "--group", "finance", "--max-uses", "5", "--note", "finance laptops")
    assert token["token"].startswith("hle_")
    pc = make_pc("laptop")
    out = pc.ok("agent", "enroll", live_server.url, token["token"], "--json").json()
    assert out["group"] == "finance"

    # The key and the credential are the PC's own, readable by its owner only.
    for name in ("agent-key.pem", "agent.json"):
        assert stat.S_IMODE((pc.agent_dir / name).stat().st_mode) == 0o600
    state = json.loads((pc.agent_dir / "agent.json").read_text())
    assert state["enrolled"] and state["credential"].startswith("hla_")

    again = pc.ok("agent", "enroll", live_server.url, token["token"], "--json").json()
    assert again["agent_id"] == out["agent_id"]
    agents = admin_pc.ok("agent", "list", "--json").json()
    assert [a["id"] for a in agents] == [out["agent_id"]]
    assert agents[0]["group"] == "finance" and agents[0]["enrolled"]

    listed = admin_pc.ok("enroll-token", "list", "--json").json()
    assert listed[0]["uses"] == 2 and "token" not in listed[0]
    # The old credential was replaced at re-enrollment; the new one works.
    assert pc.ok("status", "--json").json() == []


def test_used_up_revoked_expired_and_unknown_tokens_are_refused(live_server, admin_pc, make_pc):
    one = new_token(admin_pc, "--max-uses", "1")
    make_pc("first").ok("agent", "enroll", live_server.url, one["token"])
    used = make_pc("second").run("agent", "enroll", live_server.url, one["token"])
    assert used.code == ExitStatus.AUTH and "used up" in used.stderr

    revoked = new_token(admin_pc)
    admin_pc.ok("enroll-token", "revoke", str(revoked["id"]))
    result = make_pc("third").run("agent", "enroll", live_server.url, revoked["token"])
    assert result.code == ExitStatus.AUTH and "revoked" in result.stderr

    short = new_token(admin_pc, "--expires-in", "1s")
    time.sleep(1.5)
    result = make_pc("fourth").run("agent", "enroll", live_server.url, short["token"])
    assert result.code == ExitStatus.AUTH and "expired" in result.stderr

    result = make_pc("fifth").run("agent", "enroll", live_server.url, "hle_made-up-token")
    assert result.code == ExitStatus.AUTH and "not valid" in result.stderr
    assert len(admin_pc.ok("agent", "list", "--json").json()) == 1

    actions = [e["action"] for e in admin_pc.ok("audit", "--action", "agent.enroll", "--json").json()]
    assert actions.count("agent.enroll_refused") == 4 and actions.count("agent.enroll") == 1


def test_wrong_server_fingerprint_is_refused(live_server, admin_pc, make_pc):
    token = new_token(admin_pc)
    pc = make_pc("careful")
    result = pc.run("agent", "enroll", live_server.url, token["token"], "--server-key", "SHA256:not-the-servers-key")
    assert result.code == ExitStatus.AUTH  # a trust failure, not an unexpected error
    assert "not the expected" in result.stderr and "hint:" in result.stderr
    assert not (pc.agent_dir / "agent.json").exists()
    # The refused server never saw the token: its one use is still there for the right server.
    [listed] = [t for t in admin_pc.ok("enroll-token", "list", "--json").json() if t["id"] == token["id"]]
    assert listed["uses"] == 0
    assert admin_pc.ok("agent", "list", "--json").json() == []
    fingerprint = json_request(live_server, "GET", "/v1/server")[1]["fingerprint"]
    pc.ok("agent", "enroll", live_server.url, token["token"], "--server-key", fingerprint)


def test_plain_http_to_a_remote_host_is_refused(make_pc):
    result = make_pc("pc").run("agent", "enroll", "http://help.example.com", "hle_x")
    assert result.code == ExitStatus.CONFIG
    assert "plain http" in result.stderr


def test_unreachable_server(make_pc):
    from tests.support.live import free_port

    result = make_pc("pc").run("agent", "enroll", f"http://127.0.0.1:{free_port()}", "hle_x")
    assert result.code == ExitStatus.UNAVAILABLE
    assert "Cannot reach" in result.stderr


def test_the_token_comes_from_standard_input_a_file_or_the_environment(live_server, admin_pc, make_pc, tmp_path):
    token = new_token(admin_pc, "--max-uses", "5")["token"]
    from_stdin = make_pc("stdin").ok("agent", "enroll", live_server.url, "-", "--json", input=token + "\n").json()
    token_file = tmp_path / "enroll-token"
    token_file.write_text(token + "\n")
    from_file = make_pc("file").ok("agent", "enroll", live_server.url, "--token-file", str(token_file), "--json").json()
    from_env = make_pc("env").ok("agent", "enroll", live_server.url, "--json", env={"HELPLINE_ENROLL_TOKEN": token}).json()
    assert all(answer["group"] == "default" for answer in (from_stdin, from_file, from_env))
    assert admin_pc.ok("enroll-token", "list", "--json").json()[0]["uses"] == 3

    none = make_pc("none").run("agent", "enroll", live_server.url)
    assert none.code == ExitStatus.INVALID and "HELPLINE_ENROLL_TOKEN" in none.stderr
    twice = make_pc("twice").run("agent", "enroll", live_server.url, token, "--token-file", str(token_file))
    assert twice.code == ExitStatus.INVALID
    missing = make_pc("missing").run("agent", "enroll", live_server.url, "--token-file", str(tmp_path / "nope"))
    assert missing.code == ExitStatus.INVALID and "Cannot read the token file" in missing.stderr
    help_text = make_pc("help").ok("agent", "enroll", "--help").stdout
    assert "Other users of this PC can see command-line" in help_text
