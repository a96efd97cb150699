"""install.sh on a PC: installs into its own venv, enrolls once, upgrades in place, never shows the token."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.deploy.conftest import INSTALL_SH, UNINSTALL_SH, Installation
from tests.support.live import base_env, json_request, token_of
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]


def new_token(admin_pc, *args: str) -> str:
    return admin_pc.ok("enroll-token", "create", "--json", *args).json()["token"]


def installed(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"install.sh exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def programs_started(trace: Path) -> list[str]:
    """The execve lines of an strace log: every program started, with its arguments."""
    return [line for line in trace.read_text(errors="replace").splitlines() if "execve(" in line]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (tests/run.sh installs it)")
def test_install_enrolls_once_upgrades_in_place_the_token_in_no_argv_and_the_installed_agent_runs(
        live_server, admin_pc, installation: Installation, agent_wheel, tmp_path):
    token = new_token(admin_pc, "--max-uses", "1", "--group", "laptops")
    trace = tmp_path / "install.strace"
    first = installed(installation.run(INSTALL_SH, "--server", live_server.url, "--from", str(agent_wheel),
                                       "--token-file", "-", *installation.options(), input=token + "\n",
                                       trace=trace))
    started = programs_started(trace)
    # The trace saw the enrollment (so it would have seen the token had it been an argument) ...
    assert any('"agent", "enroll"' in line for line in started), started[-5:]
    # ... and no program got the token among its arguments.
    assert not [line for line in started if token in line]
    assert token not in first.stdout + first.stderr

    state = json.loads((installation.state_dir / "agent.json").read_text())
    agents = admin_pc.ok("agent", "list", "--json").json()
    assert [(a["id"], a["group"]) for a in agents] == [(state["agent_id"], "laptops")]
    assert (installation.state_dir.stat().st_mode & 0o777) == 0o700
    assert installation.helpline.resolve() == (installation.prefix / "venv" / "bin" / "helpline").resolve()

    # The second run upgrades the same venv in place: a file left in it stays, a changed installed file is
    # put back; the PC is enrolled already, so no token is needed (the only one is used up) and none is spent.
    venv = installation.prefix / "venv"
    (venv / "left-by-the-first-run").write_text("kept\n")
    [installed_main] = venv.glob("lib/python*/site-packages/cli/main.py")
    original = installed_main.read_text()
    installed_main.write_text(original + "\n# changed after the first install\n")
    second = installed(installation.run(INSTALL_SH, "--server", live_server.url, "--from", str(agent_wheel),
                                        *installation.options()))
    assert "enrolled already" in second.stderr
    assert (venv / "left-by-the-first-run").exists()
    assert installed_main.read_text() == original
    again = json.loads((installation.state_dir / "agent.json").read_text())
    assert again["agent_id"] == state["agent_id"] and again["credential"] == state["credential"]
    assert [a["id"] for a in admin_pc.ok("agent", "list", "--json").json()] == [state["agent_id"]]
    assert [t["uses"] for t in admin_pc.ok("enroll-token", "list", "--json").json()] == [1]

    run_installed_agent(live_server, admin_pc, installation, state["agent_id"], tmp_path)


def test_install_takes_the_token_from_a_file_or_the_environment_and_writes_units_systemd_accepts(
        live_server, admin_pc, installation: Installation, agent_wheel, tmp_path):
    missing = installation.run(INSTALL_SH, "--server", live_server.url, "--from", str(agent_wheel),
                               *installation.options())
    assert missing.returncode != 0 and "no enrollment token" in missing.stderr
    assert not (installation.prefix / "venv").exists()  # it failed before installing anything

    token_file = tmp_path / "token"
    token_file.write_text(new_token(admin_pc) + "\n")
    installed(installation.run(INSTALL_SH, "--server", live_server.url, "--from", str(agent_wheel),
                               "--token-file", str(token_file), *installation.options()))
    first_id = json.loads((installation.state_dir / "agent.json").read_text())["agent_id"]

    # --reenroll enrolls the same identity again (from the environment this time): still one agent.
    installed(installation.run(INSTALL_SH, "--server", live_server.url, "--from", str(agent_wheel), "--reenroll",
                               *installation.options(), env={"HELPLINE_ENROLL_TOKEN": new_token(admin_pc)}))
    assert json.loads((installation.state_dir / "agent.json").read_text())["agent_id"] == first_id
    assert [a["id"] for a in admin_pc.ok("agent", "list", "--json").json()] == [first_id]

    # The units as written for this prefix: systemd finds nothing to say about them (it checks that the
    # command exists and is executable, every setting is known and well formed).
    unit = installation.unit_dir / "helpline-agent.service"
    user_unit = installation.user_unit_dir / "helpline-agent-user.service"
    assert f"ExecStart={installation.helpline} agent run\n" in unit.read_text()
    assert f"ReadWritePaths={installation.state_dir} {installation.state_dir}-restores\n" in unit.read_text()
    assert "Environment=HELPLINE_AGENT_SERVICE=1\n" in unit.read_text()  # it serves the users' local socket
    assert installation.state_dir.with_name(installation.state_dir.name + "-restores").is_dir()
    assert "@PREFIX@" not in unit.read_text() + user_unit.read_text() and "@STATE_DIR@" not in unit.read_text()
    assert_systemd_accepts(unit)
    # The user manager's runtime folder: a short path, since the socket units it reads put their sockets
    # in it and a socket's path is limited to 107 bytes (a pytest folder can be longer).
    runtime = Path(tempfile.mkdtemp(prefix="hl-xdg-"))
    try:
        assert_systemd_accepts(user_unit, "--user", env={"XDG_RUNTIME_DIR": str(runtime)})
    finally:
        shutil.rmtree(runtime)

    # Uninstalling with --keep-state leaves the identity (installing again is the same agent) and nothing else.
    options = [o for o in installation.options() if o not in ("--python", sys.executable, "--no-start")]
    kept = installation.run(UNINSTALL_SH, "--keep-state", "--no-stop", *options)
    assert kept.returncode == 0, kept.stderr
    assert not installation.prefix.exists() and not unit.exists() and not user_unit.exists()
    assert json.loads((installation.state_dir / "agent.json").read_text())["agent_id"] == first_id
    gone = installation.run(UNINSTALL_SH, "--no-stop", *options)
    assert gone.returncode == 0, gone.stderr
    assert not installation.state_dir.exists()
    # A folder that is not an installation is left alone.
    installation.prefix.mkdir(parents=True)
    (installation.prefix / "precious").write_text("not ours\n")
    refused = installation.run(UNINSTALL_SH, "--no-stop", *options)
    assert refused.returncode != 0 and "does not look like" in refused.stderr
    assert (installation.prefix / "precious").exists()


def assert_systemd_accepts(unit: Path, *options: str, env: dict[str, str] | None = None) -> None:
    """`systemd-analyze verify` on ``unit`` exits 0 and prints nothing: any warning fails the test."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run(["systemd-analyze", *options, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env={**base_env(), **(env or {})})
    said = done.stdout + done.stderr
    assert done.returncode == 0 and said == "", f"systemd-analyze verify {unit} exited {done.returncode}:\n{said}"


def run_installed_agent(live_server, admin_pc, installation: Installation, agent_id: str, tmp_path: Path) -> None:
    """Run ``PREFIX/bin/helpline agent run`` as the unit would; it fetches an engineer's request, then stops on
    SIGTERM with a clean exit."""
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "notes.txt").write_text("remember the milk\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[snapshots]\npaths = ["{home}"]\nfree_space_margin = 0\nwait_on_battery = false\n')
    # As the unit runs it: the state folder from HELPLINE_AGENT_DIR, the installed command, no PYTHONPATH.
    env = {**installation.env(), "HELPLINE_AGENT_DIR": str(installation.state_dir), "HOME": str(home),
           "HELPLINE_AGENT_CONFIG": str(config)}
    service = subprocess.Popen([str(installation.helpline), "agent", "run"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        token = token_of(admin_pc)
        status, made = json_request(live_server, "POST", f"/v1/agents/{agent_id}/requests", token,
                                    {"kind": "browse", "params": {}})
        assert status in (200, 201), made

        def fetched():
            _, found = json_request(live_server, "GET", f"/v1/agents/{agent_id}/requests/{made['id']}", token)
            return found if found.get("state") not in ("queued", None) else None

        assert wait_for(fetched, "the installed agent to fetch the engineer's request")["state"] != "expired"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            out, err = service.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            service.kill()
            out, err = service.communicate()
            pytest.fail(f"the agent did not stop on SIGTERM:\n{out}\n{err}")
    assert service.returncode == 0, f"{out}\n{err}"
    assert "The Helpline agent stopped." in out
