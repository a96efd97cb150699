"""An engineer's restore request reaches a PC's running `helpline agent run` within seconds, waits for
its user's `helpline requests approve`, and brings the file back byte-identical with the real restic;
a replayed, an expired or a forged request delivered to the same agent is refused and never runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from protocol import signing
from protocol.errors import ExitStatus
from protocol.pc_requests import PcRequest, sign_pc_request
from server.db import create_db_engine, transaction, write_sessions
from server.models import PcRequestRow
from tests.support.live import PC, LiveServer, helpline_bin

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")

WAIT_SECONDS = 60  # the longest any step below may take before the test fails (polls are bounded by it)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def until(what: str, check, seconds: float = WAIT_SECONDS):
    """Return ``check()``'s first truthy value, looking every 0.2 s for at most ``seconds``."""
    for _ in range(int(seconds / 0.2)):
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


class Agent:
    """`helpline agent run` of one PC, as a process of its own, stopped by its PID."""

    def __init__(self, pc: PC, log: Path):
        self.log = log
        self.process = subprocess.Popen([helpline_bin(), "agent", "run"], env=pc.env(), stdout=log.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode


def sessions(server: LiveServer):
    url = server.database_url or f"sqlite:///{server.data_dir / 'helpline.db'}"
    engine = create_db_engine(url)
    return engine, write_sessions(engine)


def queue_again(server: LiveServer, request_id: str) -> None:
    """Put a request back in the queue as it was signed: what a replaying relay or a tampered database does."""
    engine, factory = sessions(server)
    try:
        with transaction(factory) as session:
            row = session.get(PcRequestRow, request_id)
            row.state, row.version = "queued", row.version + 1
    finally:
        engine.dispose()


def plant(server: LiveServer, template_id: str, *, key=None, expired: bool = False) -> str:
    """Queue a copy of a request signed with ``key`` (default: the server's own), perhaps long expired,
    as a tampered database would; return its id."""
    engine, factory = sessions(server)
    key = key or signing.load_private_key(server.data_dir / "server-signing-key.pem")
    try:
        with transaction(factory) as session:
            template = session.get(PcRequestRow, template_id)
            now = datetime.now(UTC)
            created = now - timedelta(hours=3) if expired else now
            request = PcRequest(**{**template.payload, "id": str(uuid.uuid4()), "nonce": uuid.uuid4().hex,
                                   "created_at": created, "expires_at": created + timedelta(hours=1)})
            sealed = sign_pc_request(key, request)
            session.add(PcRequestRow(
                id=request.id, agent_id=template.agent_id, kind=template.kind, params=template.params,
                requested_by=template.requested_by, requested_by_name=template.requested_by_name, created_at=now,
                expires_at=now + timedelta(hours=1), nonce=request.nonce, unattended=False, payload=sealed.payload,
                signature=sealed.signature, state="queued", detail="", updated_at=now, version=1))
        return request.id
    finally:
        engine.dispose()


def state_of(server: LiveServer, request_id: str) -> tuple[str, str]:
    engine, factory = sessions(server)
    try:
        with transaction(factory) as session:
            row = session.scalar(select(PcRequestRow).where(PcRequestRow.id == request_id))
            return row.state, row.detail
    finally:
        engine.dispose()


@pytest.fixture
def ana(live_server, admin_pc, make_pc, tmp_path) -> PC:
    """Ana's PC: enrolled, with a local snapshot policy over her (test) home and one snapshot taken."""
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    pc = make_pc("ana-pc")
    agent_id = pc.ok("agent", "enroll", live_server.url, token, "--json").json()["agent_id"]
    home = tmp_path / "home" / "ana"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "report.odt").write_bytes(os.urandom(64_000))
    (home / "Documents" / "notes.txt").write_text("call the bank\n" * 40)
    pc.config_dir.mkdir(parents=True, exist_ok=True)
    (pc.config_dir / "agent.toml").write_text(
        "[snapshots]\n"
        f"paths = [{str(home)!r}]\n"
        f"local_repository = {str(tmp_path / 'repo')!r}\n"
        "server = false\n"
        "free_space_margin = 0\n"
        "wait_on_battery = false\n".replace("'", '"'))
    [first] = pc.ok("snapshot", "now", "--json").json()
    pc.home = home  # type: ignore[attr-defined]
    pc.first_snapshot = first["snapshot_id"]  # type: ignore[attr-defined]
    pc.agent_id = agent_id  # type: ignore[attr-defined]
    return pc


def test_a_restore_request_reaches_the_running_agent_waits_for_consent_and_runs_once(live_server, admin_pc, ana,
                                                                                     tmp_path):
    report = ana.home / "Documents" / "report.odt"
    original = digest(report)
    report.unlink()
    agent = Agent(ana, tmp_path / "agent.log")
    try:
        until("the agent is running", lambda: "running" in agent.output() or agent.process.poll() is not None)
        assert agent.process.poll() is None, agent.output()
        number = admin_pc.ok("ticket", "create", "Deleted my report", "--json").json()["number"]
        made = admin_pc.ok("pc", "restore", ana.agent_id, str(report), "--ticket", number, "--no-wait", "--json").json()
        assert made["state"] == "queued"

        # The request reaches the running agent within seconds and waits for Ana.
        waiting = until("the request waits for Ana", lambda: ana.ok("requests", "--json").json())
        assert [w["id"] for w in waiting] == [made["id"]]
        assert "asks to restore" in ana.ok("status").stderr  # any command mentions it
        ana.ok("requests", "approve", made["id"][:8])

        done = admin_pc.run("pc", "requests", ana.agent_id, made["id"][:8], "--follow", "--json", timeout=WAIT_SECONDS)
        assert done.code == 0, done.stderr
        result = done.json()
        assert result["state"] == "done", result
        [restored] = result["result"]["restored"]
        placed = restored["placed_at"]
        assert Path(placed).parent == report.parent and Path(placed).name.startswith("report.odt.restored-")
        assert digest(Path(placed)) == original
        timeline = admin_pc.ok("ticket", "show", number, "--json").json()["timeline"]
        assert [e["kind"] for e in timeline if e["kind"].startswith("pc-request")][-1] == "pc-request-done"

        # The same signed request again (a replay): refused by the PC, nothing restored twice.
        queue_again(live_server, made["id"])
        until("the replay is refused", lambda: state_of(live_server, made["id"])[0] == "refused")
        assert "received before" in state_of(live_server, made["id"])[1]
        # A request signed long ago, delivered late; and one signed by another key: refused, never run.
        stale = plant(live_server, made["id"], expired=True)
        forged = plant(live_server, made["id"], key=signing.generate_key())
        until("both are refused", lambda: all(state_of(live_server, i)[0] == "refused" for i in (stale, forged)))
        assert "expired" in state_of(live_server, stale)[1]
        assert "not signed by this PC's server" in state_of(live_server, forged)[1]
        assert sorted(p.name for p in report.parent.iterdir() if p.name.startswith("report.odt")) == [Path(placed).name]
        assert ana.ok("requests", "--json").json() == []
    finally:
        code = agent.stop()
    assert code == 0, agent.output()


def test_a_refused_restore_never_runs_and_snapshots_are_taken_listed_and_compared_from_afar(live_server, admin_pc,
                                                                                           ana, tmp_path):
    agent = Agent(ana, tmp_path / "agent.log")
    try:
        made = admin_pc.ok("pc", "restore", ana.agent_id, str(ana.home / "Documents"), "--overwrite", "--no-wait",
                           "--json").json()
        until("the request waits for Ana", lambda: ana.ok("requests", "--json").json())
        ana.ok("requests", "refuse", made["id"][:8])
        followed = admin_pc.run("pc", "requests", ana.agent_id, made["id"][:8], "--follow", timeout=WAIT_SECONDS)
        assert followed.code == ExitStatus.FORBIDDEN
        assert "refused" in followed.stderr and "user refused" in followed.stderr
        assert sorted(p.name for p in ana.home.iterdir()) == ["Documents"]  # nothing was put back or aside

        # A snapshot now, a listing and a diff: no consent needed, answered by the running agent.
        (ana.home / "Documents" / "new-plan.txt").write_text("the new plan\n")
        taken = admin_pc.run("pc", "snapshot-now", ana.agent_id, "--json", timeout=WAIT_SECONDS)
        assert taken.code == 0, taken.stderr
        [run] = taken.json()["result"]["runs"]
        assert run["status"] == "ok" and run["files_new"] >= 1
        listed = admin_pc.run("pc", "files", ana.agent_id, run["snapshot_id"], str(ana.home / "Documents"), "--json",
                              timeout=WAIT_SECONDS)
        assert listed.code == 0, listed.stderr
        names = {Path(node["path"]).name for node in listed.json()["result"]["nodes"]}
        assert {"report.odt", "notes.txt", "new-plan.txt"} <= names
        compared = admin_pc.run("pc", "diff", ana.agent_id, ana.first_snapshot, run["snapshot_id"], timeout=WAIT_SECONDS)
        assert compared.code == 0, compared.stderr
        assert "new-plan.txt" in compared.stdout and "1 added" in compared.stdout
        reported = admin_pc.ok("pc", "snapshots", ana.agent_id, "--json").json()
        assert run["snapshot_id"] in [r["snapshot_id"] for r in reported["snapshots"]]
        assert reported["protection"]["words"].startswith("Protected")
        assert "Protected" in admin_pc.ok("pc", "snapshots", ana.agent_id).stdout
    finally:
        assert agent.stop() == 0, agent.output()


def enrolled(admin: PC, server: LiveServer, pc: PC, home: Path, *, local: bool, scheduled: bool = True) -> str:
    """Enroll ``pc`` (approved: PCs on one test machine share its machine id and host name) with a snapshot policy
    over ``home`` into the server's repository (and a local one with ``local``); return its agent id."""
    token = admin.ok("enroll-token", "create", "--json").json()["token"]
    agent_id = pc.ok("agent", "enroll", server.url, token, "--json").json()["agent_id"]
    if admin.ok("agent", "show", agent_id, "--json").json()["status"] == "pending":
        admin.ok("agent", "approve", agent_id, "--reason", "a second test PC on the same machine")
    pc.config_dir.mkdir(parents=True, exist_ok=True)
    (pc.config_dir / "agent.toml").write_text(
        "[snapshots]\n"
        f"enabled = {'true' if scheduled else 'false'}\n"
        f'paths = ["{home}"]\n'
        f"local = {'true' if local else 'false'}\n"
        "server = true\n"
        "free_space_margin = 0\n"
        "wait_on_battery = false\n")
    return agent_id


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_whole_tree_comes_back_on_a_replacement_pc_from_the_old_pcs_server_repository(server_factory, make_pc,
                                                                                          tmp_path):
    # The admin allows unattended restores here: the new PC's agent runs it without anyone at its keyboard.
    server = server_factory(snapshots__unattended_restore="true")
    admin = make_pc("admin")
    admin.login(server)
    old_home = tmp_path / "old" / "home" / "ana"
    for folder in ("Documents/2026", "Pictures", ".config/app"):
        (old_home / folder).mkdir(parents=True)
    (old_home / "Documents" / "2026" / "budget.ods").write_bytes(os.urandom(200_000))
    (old_home / "Documents" / "letter.txt").write_text("Dear bank,\n" * 100)
    (old_home / "Pictures" / "cat.jpg").write_bytes(os.urandom(350_000))
    (old_home / ".config" / "app" / "settings.ini").write_text("[ui]\ntheme = dark\n")
    old, new = make_pc("old-pc"), make_pc("new-pc")
    old_id = enrolled(admin, server, old, old_home, local=False)
    old.ok("snapshot", "now")  # into the server's repository; the password goes to escrow
    new_home = tmp_path / "new" / "home" / "ana"
    new_home.mkdir(parents=True)
    # The new PC runs no scheduled snapshot work of its own here: only the engineer's request.
    new_id = enrolled(admin, server, new, new_home, local=False, scheduled=False)
    agent = Agent(new, tmp_path / "new-agent.log")
    try:
        until("the new PC's agent is running", lambda: "running" in agent.output() or agent.process.poll() is not None)
        assert agent.process.poll() is None, agent.output()
        target = new_home / "from-old-pc"
        done = admin.run("pc", "restore", new_id, str(old_home), "--from", old_id, "--into", str(target), "--json",
                         timeout=WAIT_SECONDS * 2)
        assert done.code == 0, done.stderr + "\n" + agent.output()
        answer = done.json()
        assert answer["state"] == "done" and answer["unattended"] is True
        [restored] = answer["result"]["restored"]
        assert tree(Path(restored["placed_at"])) == tree(old_home)
        # The old PC's repository was read for that request only: nothing of it stays on the new PC.
        assert not any(new.agent_dir.rglob("replacement/*/password"))
        released = admin.ok("audit", "--action", "snapshot.escrow.released", "--json").json()
        assert [e["details"]["to_agent"] for e in released] == [new_id]
    finally:
        assert agent.stop() == 0, agent.output()


def test_fresh_diagnostics_reach_the_ticket_once_the_user_agrees(live_server, admin_pc, ana, tmp_path):
    number = admin_pc.ok("ticket", "create", "Printer queue stuck", "--json").json()["number"]
    ana.ok("pair", admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"])
    agent = Agent(ana, tmp_path / "agent.log")
    try:
        made = admin_pc.ok("pc", "diagnostics", ana.agent_id, "--ticket", number, "--no-wait", "--json").json()
        [item] = until("the request waits for Ana", lambda: ana.ok("requests", "--json").json())
        assert item["kind"] == "diagnostics" and "fresh diagnostics" in ana.ok("requests").stdout
        ana.ok("requests", "approve", made["id"][:8])
        done = admin_pc.run("pc", "requests", ana.agent_id, made["id"][:8], "--follow", "--json", timeout=WAIT_SECONDS * 3)
        assert done.code == 0, done.stderr + agent.output()
        bundles = admin_pc.ok("ticket", "show", number, "--json").json()["bundles"]
        assert [b["id"] for b in bundles] == [done.json()["result"]["bundle_id"]]
    finally:
        assert agent.stop() == 0, agent.output()


def test_following_on_a_terminal_shows_progress_and_ctrl_c_leaves_the_request_going(live_server, admin_pc, make_pc):
    import pexpect

    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    agent_id = make_pc("offline-pc").ok("agent", "enroll", live_server.url, token, "--json").json()["agent_id"]
    env = admin_pc.env()
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(helpline_bin(), ["pc", "snapshot-now", agent_id], env=env, encoding="utf-8", timeout=60,
                          dimensions=(40, 160))
    child.expect("sent to PC")
    child.expect("waiting for the PC to fetch it")  # the progress bar's words: nobody runs this PC's agent
    child.sendintr()
    child.expect("Stopped following; the request goes on.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitStatus.INTERRUPTED
    [still] = admin_pc.ok("pc", "requests", agent_id, "--active", "--json").json()
    assert still["kind"] == "snapshot" and still["state"] == "queued"
