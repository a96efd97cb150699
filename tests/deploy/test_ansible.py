"""The Ansible role installs and enrolls the agent on localhost (connection local), and a second run changes nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, Installation

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")]

PLAYBOOK = ROOT / "deploy" / "ansible" / "playbook.yml"


def ansible_playbook() -> str:
    found = Path(sys.executable).with_name("ansible-playbook")
    if found.exists():
        return str(found)
    if shutil.which("ansible-playbook"):
        return shutil.which("ansible-playbook")
    pytest.skip("ansible-core is not installed (the dev extra brings it)")


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counts for localhost: ok, changed, failed, …"""
    line = next(line for line in output.splitlines() if line.startswith("localhost"))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_the_playbook_installs_and_enrolls_and_a_second_run_changes_nothing(
        live_server, admin_pc, installation: Installation, agent_wheel, tmp_path):
    token = admin_pc.ok("enroll-token", "create", "--json", "--max-uses", "1").json()["token"]
    extra = {
        "helpline_server_url": live_server.url, "helpline_source": str(agent_wheel),
        "helpline_prefix": str(installation.prefix), "helpline_state_dir": str(installation.state_dir),
        "helpline_unit_dir": str(installation.unit_dir), "helpline_user_unit_dir": str(installation.user_unit_dir),
        "helpline_bin_dir": "none", "helpline_python": sys.executable, "helpline_start": False,
        "helpline_become": False, "helpline_installer_dir": str(tmp_path / "installer"),
        "ansible_python_interpreter": sys.executable,
    }
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = {**installation.env(), "HELPLINE_ENROLL_TOKEN": token, "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1", "LC_ALL": "C.UTF-8",
           "ANSIBLE_GATHER_SUBSET": "min", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    command = [ansible_playbook(), "-c", "local", "-i", "localhost,", str(PLAYBOOK), "-e", f"@{tmp_path / 'vars.json'}"]

    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] >= 3 and recap(first.stdout)["failed"] == 0
    assert token not in first.stdout + first.stderr
    agent_id = json.loads((installation.state_dir / "agent.json").read_text())["agent_id"]
    assert [a["id"] for a in admin_pc.ok("agent", "list", "--json").json()] == [agent_id]
    assert (installation.unit_dir / "helpline-agent.service").exists()

    # The token is used up: a second run that tried to enroll again would fail.
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0, second.stdout
    assert [a["id"] for a in admin_pc.ok("agent", "list", "--json").json()] == [agent_id]
