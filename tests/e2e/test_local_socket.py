"""One identity per PC: with the agent service running, a user's `helpline pair`, `status`, `reply`, `share` and
`session` go through its local socket, and the server sees one agent for the PC; without the service the per-user
path works."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from protocol.errors import ExitStatus
from tests.support.live import ENGINEER_PASSWORD, PC, base_env, create_engineer, helpline_bin
from tests.support.sessions import ENGINEER, Desk, EngineerRun, UserTerminal, cast_output, ssh_keygen

pytestmark = pytest.mark.e2e

ANSWERS = ["--what", "Printer queue stuck", "--since", "today", "--tried", "restarting it"]


class ServiceOfThePC:
    """`helpline agent run` on its own state folder, serving its socket; stopped by PID."""

    def __init__(self, root: Path, server_url: str, token: str, sock: Path):
        self.state = root / "service-state"
        self.sock = sock
        self.files = root / "service-files"
        (self.files / "Documents").mkdir(parents=True)
        (self.files / "Documents" / "plan.txt").write_text("the plan\n" * 100)
        config = root / "service-agent.toml"
        config.write_text(f'[snapshots]\nenabled = false\npaths = ["{self.files}"]\nserver = false\nfree_space_margin = 0\n')
        self.env = {**base_env(), "HELPLINE_AGENT_DIR": str(self.state), "HELPLINE_AGENT_SOCKET": str(sock),
                    "HELPLINE_AGENT_CONFIG": str(config), "HELPLINE_CONFIG_DIR": str(root / "service-config")}
        enrolled = subprocess.run([helpline_bin(), "agent", "enroll", server_url, "-", "--json"], input=token + "\n",
                                  capture_output=True, text=True, env=self.env, timeout=120)
        assert enrolled.returncode == 0, enrolled.stderr
        self.log = (root / "service.log").open("w")
        self.proc = subprocess.Popen([helpline_bin(), "agent", "run"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        until = time.monotonic() + 60
        while time.monotonic() < until and not sock.exists() and self.proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), (root / "service.log").read_text()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return Path(self.log.name).read_text()


@pytest.fixture
def sock_dir():
    path = Path(tempfile.mkdtemp(prefix="hl-e2e-"))  # short: socket paths are limited to ~100 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_of_the_pc(root: Path, sock: Path) -> PC:
    """A user of the PC: their own data folder and config, the service's socket, no HELPLINE_AGENT_DIR."""
    user = PC(root, "user")

    def env() -> dict[str, str]:
        env = base_env()
        env.update({"HELPLINE_CONFIG_DIR": str(user.config_dir), "HELPLINE_AGENT_SOCKET": str(sock),
                    "XDG_DATA_HOME": str(root / "user-data"), "HOME": str(root / "user-home")})
        return env

    user.env = env
    return user


def test_users_commands_go_through_the_service_and_the_server_sees_one_agent(live_server, admin_pc, tmp_path, sock_dir):
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    service = ServiceOfThePC(tmp_path, live_server.url, token, sock_dir / "agent.sock")
    try:
        user = user_of_the_pc(tmp_path, service.sock)
        number = admin_pc.ok("ticket", "create", "Printer broken", "--json").json()["number"]
        code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]

        assert f"linked to ticket {number}" in user.ok("pair", code).stdout
        status = user.ok("status", "--json").json()
        assert [t["number"] for t in status] == [number]
        user.ok("reply", "It prints blank pages")
        shared = user.ok("share", "--yes", *ANSWERS).stdout
        assert re.search(rf"Ticket {number} — your diagnostics were delivered", shared), shared

        # A user cannot move the PC's identity to another server.
        moved = user.run("pair", code, "--server", "http://127.0.0.1:9")
        assert moved.code == ExitStatus.FORBIDDEN and "linked to" in moved.stderr
        # Snapshots are the service's: taken and listed through the socket (root's: the policy's paths).
        [run] = user.ok("snapshot", "now", "--json").json()
        assert run["status"] == "ok" and run["files_new"] == 1
        [listed] = user.ok("snapshot", "list", "--json").json()
        assert listed["paths"] == [str(service.files)] and listed["id"].startswith(run["snapshot_id"])
        assert (service.state / "snapshots").is_dir()  # in the service's folder, not the user's
        plan = service.files / "Documents" / "plan.txt"
        plan.unlink()
        restored = user.ok("restore", str(plan), "--json").json()
        assert Path(restored["placed_at"]).read_text() == "the plan\n" * 100
        assert user.ok("requests", "--json").json() == []  # engineers' requests on this user's tickets: none

        agents = admin_pc.ok("agent", "list", "--json").json()
        assert len(agents) == 1 and agents[0]["tickets"] == [number], agents
        shown = admin_pc.ok("ticket", "show", number, "--json").json()
        assert len(shown["agents"]) == 1 and len(shown["bundles"]) == 1
        assert any("blank pages" in (e.get("message") or "") for e in shown["timeline"])
        # The user's own folder holds no identity (only their outbox, now empty).
        user_agent = tmp_path / "user-data" / "helpline" / "agent"
        assert not (user_agent / "agent-key.pem").exists() and not (user_agent / "agent.json").exists()
        assert not list((user_agent / "outbox").glob("*.tar.gz"))
    finally:
        log = service.stop()
    assert "Serving this PC's users on" in log, log
    assert not service.sock.exists()  # removed on a clean stop

    # Without the service the per-user path is back: this user's own folder, which is not linked.
    alone = user.run("status")
    assert alone.code == ExitStatus.CONFIG and "not linked" in alone.stderr


def test_a_users_earlier_identity_hands_its_tickets_to_the_service(live_server, admin_pc, tmp_path, sock_dir):
    sock = sock_dir / "agent.sock"
    user = user_of_the_pc(tmp_path, sock)
    number = admin_pc.ok("ticket", "create", "Laptop slow", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user.ok("pair", code, "--server", live_server.url)  # no service yet: the user's own identity
    [before] = admin_pc.ok("agent", "list", "--json").json()

    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    service = ServiceOfThePC(tmp_path, live_server.url, token, sock)
    try:
        status = user.ok("status", "--json").json()  # the first call through the socket offers the old tickets
        assert [t["number"] for t in status] == [number]
        agents = {a["id"]: a for a in admin_pc.ok("agent", "list", "--json").json()}
        assert agents[before["id"]]["status"] == "revoked"
        [service_agent] = [a for a in agents.values() if a["id"] != before["id"]]
        assert service_agent["tickets"] == [number] and service_agent["status"] == "active"
        user_agent = tmp_path / "user-data" / "helpline" / "agent"
        assert (user_agent / "retired" / "agent-key.pem").exists() and not (user_agent / "agent.json").exists()
        user.ok("reply", "Still slow after the update")  # acts through the service on the handed-over ticket
        [event] = admin_pc.ok("audit", "--action", "agent.hand_over", "--json").json()
        assert before["id"] in str(event) and event["action"] == "agent.hand_over"
    finally:
        service.stop()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client")
def test_a_users_session_runs_through_the_service(live_server, admin_pc, make_pc, tmp_path, sock_dir, terminals):
    """The user's `helpline session` on a real terminal, its server calls made by the service with the PC's identity;
    the engineer's real `ssh` (through `helpline connect`) runs a command; the recording reaches the ticket."""
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    service = ServiceOfThePC(tmp_path, live_server.url, token, sock_dir / "agent.sock")
    run = None
    try:
        create_engineer(admin_pc, ENGINEER)
        engineer = make_pc("engineer")
        engineer.login(live_server, ENGINEER, ENGINEER_PASSWORD)
        key = ssh_keygen(tmp_path / "keys")
        engineer.ok("ssh-key", "add", f"{key}.pub")
        number = engineer.ok("ticket", "create", "Printer offline", "--assign", ENGINEER, "--json").json()["number"]
        code = engineer.ok("ticket", "pair-code", number, "--json").json()["code"]
        user = user_of_the_pc(tmp_path, service.sock)
        user.ok("pair", code)
        desk = Desk(live_server, engineer, user, number, key, tmp_path)

        terminal = UserTerminal(desk)
        terminals.append(terminal)
        run = EngineerRun(desk, number, "--scope", "control", "--key", str(key), "--",
                          "-o", "BatchMode=yes", "echo hello-through-the-service-$((40 + 2)); exit 3")
        prompt = terminal.asked()
        assert b"alice" in prompt.lower() and number.encode() in prompt  # the grant, verified in the user's process
        terminal.child.sendline(b"yes")
        status, out, err = run.finish()
        assert status == 3, err
        assert out.decode().strip() == "hello-through-the-service-42"
        terminal.finished()
        session = desk.wait_for_state(terminal.session_id, "ended")
        assert session["bytes_to_pc"] > 0 and session["bytes_from_pc"] > 0
        assert session["username"] == "root"  # the account the kernel named to the service, not the caller's word
        deadline = time.monotonic() + 30
        while not desk.session(terminal.session_id)["recording"] and time.monotonic() < deadline:
            time.sleep(0.3)
        saved = tmp_path / "session.cast"
        engineer.ok("recording", terminal.session_id, "--output", str(saved))
        assert "hello-through-the-service-42" in cast_output(saved)

        # One agent for the PC: the service's, which offered the session; the user's folder holds no identity,
        # only the grant it used (a grant opens one session).
        [agent] = admin_pc.ok("agent", "list", "--json").json()
        assert session["agent_id"] == agent["id"]
        user_agent = tmp_path / "user-data" / "helpline" / "agent"
        assert not (user_agent / "agent-key.pem").exists() and not (user_agent / "agent.json").exists()
        assert (user_agent / "used-grants.json").exists()
    finally:
        if run is not None:
            run.stop()
        service.stop()


@pytest.fixture
def pc_user(sock_dir):
    """A real OS user of the PC (root only), with a home of their own and /bin/sh as login shell."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, useradd and setpriv to run a command as another user")
    name = f"hls{os.getpid() % 100000}"
    home = sock_dir / "home" / name
    done = subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-U", name],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        entry = pwd.getpwnam(name)
        home.mkdir(parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        for folder in (sock_dir, home.parent):
            folder.chmod(0o755)  # the user reaches the service's socket and their home
        yield entry
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client")
def test_another_users_session_runs_as_them_through_the_service(live_server, admin_pc, make_pc, tmp_path, sock_dir,
                                                                 pc_user, terminals):
    """A real unprivileged user pairs and runs `helpline session` through the root service: the session is offered
    under their account, the engineer's shell runs as them, the grants they used are kept in their own folder.
    (Another user's calls on it are refused: tests/agent/service/test_session_calls.py, over the real socket.)"""
    token = admin_pc.ok("enroll-token", "create", "--json").json()["token"]
    service = ServiceOfThePC(tmp_path, live_server.url, token, sock_dir / "agent.sock")
    run = None
    try:
        create_engineer(admin_pc, ENGINEER)
        engineer = make_pc("engineer")
        engineer.login(live_server, ENGINEER, ENGINEER_PASSWORD)
        key = ssh_keygen(tmp_path / "keys")
        engineer.ok("ssh-key", "add", f"{key}.pub")
        number = engineer.ok("ticket", "create", "Scanner offline", "--assign", ENGINEER, "--json").json()["number"]
        code = engineer.ok("ticket", "pair-code", number, "--json").json()["code"]

        home = Path(pc_user.pw_dir)
        as_user = ("setpriv", f"--reuid={pc_user.pw_uid}", f"--regid={pc_user.pw_gid}", "--clear-groups")
        user = PC(home, "user")
        user.env = lambda: {**base_env(), "HELPLINE_CONFIG_DIR": str(home / "config"),
                            "HELPLINE_AGENT_SOCKET": str(service.sock), "XDG_DATA_HOME": str(home / "data"),
                            "HOME": str(home), "USER": pc_user.pw_name, "LOGNAME": pc_user.pw_name}
        paired = subprocess.run([*as_user, helpline_bin(), "pair", code], env=user.env(), capture_output=True,
                                text=True, timeout=120)
        assert paired.returncode == 0, paired.stderr
        desk = Desk(live_server, engineer, user, number, key, tmp_path)

        terminal = UserTerminal(desk, run_as=as_user)
        terminals.append(terminal)
        # Root, the PC's administrator, sees the user's session; the waiting offer names the user's account.
        offered = desk.session(terminal.session_id)
        assert offered["username"] == pc_user.pw_name and offered["agent_id"]
        run = EngineerRun(desk, number, "--scope", "control", "--key", str(key), "--",
                          "-o", "BatchMode=yes", "echo shell-of-$(id -un)-in-$HOME")
        terminal.asked()
        terminal.child.sendline(b"yes")
        status, out, err = run.finish()
        assert status == 0, err
        assert out.decode().strip() == f"shell-of-{pc_user.pw_name}-in-{home}"
        terminal.finished()
        session = desk.wait_for_state(terminal.session_id, "ended")
        assert session["bytes_to_pc"] > 0
        assert (home / "data" / "helpline" / "agent" / "used-grants.json").stat().st_uid == pc_user.pw_uid
        [agent] = admin_pc.ok("agent", "list", "--json").json()
        assert session["agent_id"] == agent["id"]  # the service's identity, the only one of the PC
    finally:
        if run is not None:
            run.stop()
        service.stop()
