"""The service definitions that are not checked by a service manager here: launchd plists and the Windows task."""

from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET

import pytest

from tests.deploy.conftest import AGENT_DEPLOY

TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
PREFIX = "/opt/helpline-agent"
STATE = "/Library/Application Support/Helpline"


def rendered_plist(name: str) -> dict:
    """The plist as install.sh writes it: placeholders replaced, then parsed."""
    text = (AGENT_DEPLOY / "macos" / name).read_text().replace("@PREFIX@", PREFIX).replace("@STATE_DIR@", STATE)
    assert "@" not in re.sub(r"<!--.*?-->", "", text, flags=re.S), "a placeholder install.sh does not fill"
    return plistlib.loads(text.encode())


def test_the_launch_daemon_runs_the_installed_agent_and_restarts_it_only_after_a_failure():
    plist = rendered_plist("com.helpline.agent.plist")
    assert plist["Label"] == "com.helpline.agent"
    assert plist["ProgramArguments"] == [f"{PREFIX}/bin/helpline", "agent", "run"]
    assert plist["EnvironmentVariables"]["HELPLINE_AGENT_DIR"] == STATE
    assert plist["EnvironmentVariables"]["HELPLINE_AGENT_SERVICE"] == "1"  # it serves the users' local socket
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] >= 20  # the agent's clean stop: restic gets time to remove its lock
    assert plist["Umask"] == 0o077
    assert "UserName" not in plist  # a LaunchDaemon runs as root: it snapshots every user's home


def test_the_launch_agent_follows_requests_in_each_users_session():
    plist = rendered_plist("com.helpline.agent-user.plist")
    assert plist["Label"] == "com.helpline.agent-user"
    assert plist["ProgramArguments"] == [f"{PREFIX}/bin/helpline", "requests", "--follow"]
    assert plist["LimitLoadToSessionType"] == "Aqua"
    assert "HELPLINE_AGENT_DIR" not in plist.get("EnvironmentVariables", {})  # the user's own, not the service's
    assert plist["KeepAlive"] == {"SuccessfulExit": False}


def task() -> ET.Element:
    return ET.parse(AGENT_DEPLOY / "windows" / "helpline-agent-task.xml").getroot()


def find(root: ET.Element, path: str) -> ET.Element:
    found = root.find("/".join(f"t:{part}" for part in path.split("/")), {"t": TASK_NS})
    assert found is not None, f"{path} is missing"
    return found


def test_the_windows_task_is_task_scheduler_xml_running_the_installed_launcher_as_system():
    root = task()
    assert root.tag == f"{{{TASK_NS}}}Task" and root.get("version") == "1.4"
    assert find(root, "RegistrationInfo/URI").text == r"\Helpline\Helpline Agent"
    # The command is pinned to the launcher install.ps1 writes under the prefix.
    assert find(root, "Actions/Exec/Command").text == r"@PREFIX@\helpline-agent.cmd"
    assert find(root, "Actions/Exec/WorkingDirectory").text == "@PREFIX@"
    assert find(root, "Actions/Exec").find(f"{{{TASK_NS}}}Arguments") is None
    [principal] = find(root, "Principals")
    assert principal.get("id") == find(root, "Actions").get("Context")
    assert find(root, "Principals/Principal/UserId").text == "S-1-5-18"  # LocalSystem
    assert find(root, "Principals/Principal/RunLevel").text == "HighestAvailable"
    assert find(root, "Triggers/BootTrigger/Enabled").text == "true"


@pytest.mark.parametrize("path, value", [
    ("Settings/RestartOnFailure/Interval", "PT1M"),
    ("Settings/RestartOnFailure/Count", "999"),
    ("Settings/ExecutionTimeLimit", "PT0S"),
    ("Settings/MultipleInstancesPolicy", "IgnoreNew"),
    ("Settings/DisallowStartIfOnBatteries", "false"),
    ("Settings/StopIfGoingOnBatteries", "false"),
], ids=["restart-interval", "restart-count", "no-time-limit", "one-instance", "on-battery", "battery-stop"])
def test_the_windows_task_restarts_on_failure_and_never_times_out(path, value):
    assert find(task(), path).text == value


def test_install_ps1_registers_that_task_and_pipes_the_token():
    """What can be checked of the PowerShell script without PowerShell: it registers the task file above with
    the prefix filled in, and the token reaches helpline only through a pipe."""
    script = (AGENT_DEPLOY / "install.ps1").read_text()
    assert 'windows\\helpline-agent-task.xml' in script and '"@PREFIX@"' in script
    uses = [line.strip() for line in script.splitlines() if "$Token" in line and "& " in line]
    assert uses == ["$Token | & $Helpline @EnrollArgs"]
    assert '"-")' in script.split("$EnrollArgs = @(", 1)[1].split("\n", 1)[0]
