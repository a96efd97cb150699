"""Snapshot journeys with a real server: the PC's snapshots go to its own REST repository on the server, the
runs and sample restores are reported there, the password is escrowed, and an engineer's restore request reaches
the PC's `helpline agent run` within seconds and brings the file back; a replacement PC restores the old PC's
files from the server; the PC's own credential cannot delete its history."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ADMIN, PC, helpline_bin, json_request, token_of
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def configure(pc: PC, home: Path, **extra: str) -> dict[str, str]:
    config = pc.agent_dir.parent / "agent.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[snapshots]", f'paths = ["{home}"]', "free_space_margin = 0", "wait_on_battery = false",
             *(f"{key} = {value}" for key, value in extra.items())]
    config.write_text("\n".join(lines) + "\n")
    return {"HELPLINE_AGENT_CONFIG": str(config), "HOME": str(home)}


def make_home(root: Path, seed: int) -> Path:
    rng = random.Random(seed)
    (root / "Documents").mkdir(parents=True)
    (root / "Documents" / "report.odt").write_bytes(rng.randbytes(80_000))
    (root / "Documents" / "notes.txt").write_text("remember the milk\n" * 30)
    return root


def enroll(pc: PC, admin_pc: PC, server) -> str:
    token = admin_pc.ok("enroll-token", "create", "--json", "--max-uses", "5").json()["token"]
    return pc.ok("agent", "enroll", server.url, token, "--json").json()["agent_id"]


@pytest.fixture
def server(server_factory):
    return server_factory(snapshots__unattended_restore="true")


@pytest.fixture
def admin_pc(make_pc, server) -> PC:
    """The admin's computer, logged in to ``server`` (which allows unattended restores)."""
    pc = make_pc("admin")
    pc.login(server)
    return pc


def test_snapshots_reach_the_server_and_an_engineers_restore_request_runs_on_the_pc(server, admin_pc, make_pc,
                                                                                     tmp_path):
    pc = make_pc("pc")
    home = make_home(tmp_path / "home" / "ann", 1)
    env = configure(pc, home)
    agent_id = enroll(pc, admin_pc, server)
    runs = pc.ok("snapshot", "now", "--json", env=env).json()
    assert {run["repository"]: run["status"] for run in runs} == {"local": "ok", "server": "ok"}
    assert [s["paths"] for s in pc.ok("snapshot", "list", "--repository", "server", "--json", env=env).json()] == [
        [str(home)]]
    token = token_of(admin_pc)
    status, reports = json_request(server, "GET", f"/v1/agents/{agent_id}/snapshots", token)
    assert status == 200 and {r["repository"] for r in reports} == {"local", "server"}
    assert all(r["status"] == "ok" and r["paths"] == [str(home)] for r in reports)
    state = (pc.agent_dir / "snapshots" / "state.json").read_text()
    assert '"escrow": "sent"' in state

    report = home / "Documents" / "report.odt"
    original = digest(report)
    report.unlink()
    service = subprocess.Popen([helpline_bin(), "agent", "run"], env={**pc.env(), **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        status, created = json_request(server, "POST", f"/v1/agents/{agent_id}/requests", token, {
            "kind": "restore", "params": {"paths": [str(report)], "repository": "server"}})
        assert status in (200, 201), created
        sent = time.monotonic()

        def finished():
            code, found = json_request(server, "GET", f"/v1/agents/{agent_id}/requests/{created['id']}", token)
            return found if found.get("state") in ("done", "failed", "refused", "expired") else None

        done = wait_for(finished, "the restore request to finish")
        assert done["state"] == "done", done
        assert time.monotonic() - sent < 60
        [item] = done["result"]["restored"]
        placed = Path(item["placed_at"])
        assert placed.parent == report.parent and digest(placed) == original
        status, protection = json_request(server, "GET", f"/v1/agents/{agent_id}/protection", token)
        assert status == 200 and protection["last_snapshot_id"]
        assert protection["words"].startswith(("Protected", "At risk", "Not"))
    finally:
        service.terminate()
        out, _err = service.communicate(timeout=60)
    assert service.returncode == 0
    assert f"request {created['id'][:8]} (restore) from {ADMIN}: done" in out  # the service says what it ran


def test_a_replacement_pc_restores_the_old_pcs_files_from_the_server(server, admin_pc, make_pc, tmp_path):
    old = make_pc("old")
    home = make_home(tmp_path / "old-home" / "ann", 2)
    old_env = configure(old, home)
    old_id = enroll(old, admin_pc, server)
    old.ok("snapshot", "now", "--repository", "server", env=old_env)
    originals = {p.name: digest(p) for p in (home / "Documents").iterdir()}

    new = make_pc("new")
    new_home = tmp_path / "new-home" / "ann"
    new_home.mkdir(parents=True)
    new_env = configure(new, new_home)
    new_id = enroll(new, admin_pc, server)
    admin_pc.ok("agent", "approve", new_id)  # both identities live on this one test machine: it looks re-imaged
    token = token_of(admin_pc)
    target = tmp_path / "brought-over"
    service = subprocess.Popen([helpline_bin(), "agent", "run"], env={**new.env(), **new_env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status, created = json_request(server, "POST", f"/v1/agents/{new_id}/requests", token, {
            "kind": "restore", "params": {"paths": [str(home / "Documents")], "source_agent_id": old_id,
                                          "target": f"folder:{target}"}})
        assert status in (200, 201), created

        def finished():
            code, found = json_request(server, "GET", f"/v1/agents/{new_id}/requests/{created['id']}", token)
            return found if found.get("state") in ("done", "failed", "refused", "expired") else None

        done = wait_for(finished, "the replacement restore to finish", 90)
    finally:
        service.terminate()
        out, err = service.communicate(timeout=60)
    assert done["state"] == "done", (done["detail"], out, err)
    assert {p.name: digest(p) for p in (target / "Documents").iterdir()} == originals


def test_reports_wait_while_the_server_is_away_and_escrow_off_is_remembered(server_factory, make_pc, tmp_path):
    server = server_factory(snapshots__escrow="false")
    admin = make_pc("admin")
    admin.login(server)
    pc = make_pc("pc")
    home = make_home(tmp_path / "home" / "ann", 3)
    env = configure(pc, home)
    agent_id = enroll(pc, admin, server)
    runs = pc.ok("snapshot", "now", "--json", env=env).json()
    assert {run["status"] for run in runs} == {"ok"}
    state = json.loads((pc.agent_dir / "snapshots" / "state.json").read_text())
    assert state["repositories"]["server"]["escrow"] == "refused" and state["pending"] == []

    server.stop()
    (home / "Documents" / "later.txt").write_text("written while the server was away\n")
    away = pc.run("snapshot", "now", "--json", env=env)
    assert away.code == ExitStatus.PARTIAL, away.stderr  # the local snapshot was made, the server's was not
    by_repository = {run["repository"]: run for run in away.json()}
    assert by_repository["local"]["status"] == "ok" and by_repository["server"]["status"] == "failed"
    pending = json.loads((pc.agent_dir / "snapshots" / "state.json").read_text())["pending"]
    assert [item["body"]["repository"] for item in pending] == ["local", "server"]

    server.start()
    pc.ok("agent", "run", "--once", env=env)
    assert json.loads((pc.agent_dir / "snapshots" / "state.json").read_text())["pending"] == []
    status, reports = json_request(server, "GET", f"/v1/agents/{agent_id}/snapshots", token_of(admin))
    assert status == 200
    statuses = sorted((r["repository"], r["status"]) for r in reports)
    assert ("local", "ok") in statuses and ("server", "failed") in statuses
    assert sum(1 for r in reports if r["repository"] == "local") >= 2
