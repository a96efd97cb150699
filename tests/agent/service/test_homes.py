"""The service's snapshots cover every user's home: the policy's "~" paths resolved per user."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from agent.service import homes
from agent.snapshots.policy import policy_from_config


def entry(name: str, uid: int, home: Path, shell: str = "/bin/bash") -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid, "", str(home), shell))


def test_login_defs_range_and_its_default(tmp_path):
    defs = tmp_path / "login.defs"
    defs.write_text("# comment\nUID_MIN\t\t 2000\nUID_MAX 3000\nGID_MIN 100\n")
    assert homes.uid_range(defs) == (2000, 3000)
    assert homes.uid_range(tmp_path / "missing") == (1000, 60000)


def test_only_peoples_homes_that_exist_and_are_theirs(tmp_path):
    me = os.geteuid()
    ann, bob, svc, gone, shared = (tmp_path / n for n in ("ann", "bob", "svc", "gone", "shared"))
    for folder in (ann, bob, svc, shared):
        folder.mkdir()
    entries = [entry("ann", me, ann), entry("bob", me, bob), entry("svc", me, svc, "/usr/sbin/nologin"),
               entry("gone", me, gone), entry("other", me + 1, shared), entry("root", me - 5000, tmp_path)]
    found = homes.user_homes(entries, uids=(me - 10, me + 10))
    assert found == [ann, bob]  # no service account, no missing home, no home owned by someone else, none out of range


def test_home_paths_become_one_per_user_and_others_stay(tmp_path):
    own = tmp_path / "root-home"
    policy = policy_from_config({"snapshots": {"paths": ["~", "~/Documents", "/srv/shared"]}}, home=own,
                                data_dir=tmp_path / "state")
    ann, bob = Path("/home/ann"), Path("/home/bob")
    resolved = homes.per_user(policy, own_home=own, homes=[ann, bob])
    assert resolved.paths == (ann, bob, ann / "Documents", bob / "Documents", Path("/srv/shared"))
    assert homes.per_user(policy, own_home=own, homes=[]).paths == policy.paths  # nobody's home: as read


def test_only_the_installed_service_reads_homes_per_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_AGENT_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(homes, "user_homes", lambda: pytest.fail("a test's or a user's agent must not list homes"))
    from agent.store import AgentStore

    assert homes.service_snapshots(AgentStore(tmp_path / "state"))._policy is None  # the policy as read, later


@pytest.mark.parametrize("env, installed", [
    ({}, True), ({"HELPLINE_AGENT_DIR": "/x"}, False), ({"HELPLINE_AGENT_DIR": "/x", "HELPLINE_AGENT_SERVICE": "1"}, True),
], ids=["default-state", "a-test-folder", "the-unit"])
def test_what_counts_as_the_installed_service(monkeypatch, env, installed):
    from agent.service import wire

    for name in ("HELPLINE_AGENT_DIR", "HELPLINE_AGENT_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert wire.is_installed_service() is installed
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert wire.is_installed_service() is False
