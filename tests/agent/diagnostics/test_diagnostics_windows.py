"""The Windows collectors, run on recorded PowerShell and command outputs (fixtures/windows)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from agent.diagnostics import collect
from agent.diagnostics.collectors.crashes import parse_wer
from agent.diagnostics.collectors.software import package_versions
from agent.diagnostics.context import CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus

FIXTURES = Path(__file__).parent / "fixtures"
#: When the recorded outputs were taken; "the last hours" are measured from here, never from today.
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)
HOUR, DAY = 3600, 86400


def _collect_windows(tmp_path: Path, runner, env: dict[str, str], **options):
    return collect(CollectOptions(**options), tmp_path / "stage", platform="windows", command_runner=runner,
                   which=runner.which, env=env, home=Path(env["USERPROFILE"]), now=NOW)


def _modified(path: Path, seconds_before_now: float) -> None:
    stamp = NOW.timestamp() - seconds_before_now
    os.utime(path, (stamp, stamp))


def test_every_windows_collector_runs_on_recorded_outputs(tmp_path, windows_runner, windows_env):
    report = _collect_windows(tmp_path, windows_runner, windows_env)
    for result in report.results:
        assert result.status is CollectorStatus.OK, (result.name, result.error)
    assert windows_runner.unmatched == [], "a Windows command has no recorded output"
    assert not any(item.status is ItemStatus.NOT_FOUND for item in report.items)
    assert all(call.startswith(("powershell.exe -NoLogo -NoProfile -NonInteractive -Command",
                                "systeminfo", "netsh", "ipconfig", "w32tm", "query user"))
               for call in windows_runner.calls)


def test_windows_system_facts(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env, categories={"system"}).result("system").facts
    assert facts["os"] == {"family": "windows", "name": "Microsoft Windows 11 Pro", "version": "10.0.22631",
                           "build": "22631", "pretty_name": "Microsoft Windows 11 Pro 10.0.22631"}
    assert facts["boot_time"] == "2024-03-11T07:42:18+00:00"
    assert facts["uptime_seconds"] // 60 == (3 * DAY + 4 * HOUR + 17 * 60) // 60  # at NOW, not today
    assert facts["uptime"] == "3d 4h 17m"
    assert facts["hostname"] == "DESKTOP-7KQ2M4L"
    assert facts["timezone"]["name"] == "W. Europe Standard Time"
    assert facts["timezone"]["utc_offset"] == "+01:00"
    assert facts["locale"]["culture"] == "de-DE"


def test_windows_hardware_flags_the_full_fixed_disk_only(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env, categories={"hardware"}).result("hardware").facts
    assert [d["mountpoint"] for d in facts["disks"]] == ["C:", "D:"]  # USB stick and network share left out
    assert [(d["mountpoint"], d["percent"]) for d in facts["disk_full"]] == [("D:", 95.3)]
    assert facts["cpu"]["model"] == "11th Gen Intel(R) Core(TM) i7-1185G7 @ 3.00GHz"
    assert (facts["cpu"]["physical_cores"], facts["cpu"]["logical_cores"]) == (4, 8)
    assert facts["manufacturer"] == "Dell Inc." and facts["model"] == "Latitude 7420"
    assert facts["battery"] == {"percent": 64, "plugged": False, "minutes_left": 187}


def test_windows_network_route_dns_and_proxies(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env, categories={"network"}).result("network").facts
    assert facts["default_routes"][0] == {"gateway": "192.168.1.1", "interface": "WLAN", "metric": 0}
    assert facts["dns"]["nameservers"] == ["192.168.1.1", "9.9.9.9", "10.20.0.53"]
    assert facts["proxy"]["user"]["enabled"] is True
    assert facts["proxy"]["user"]["server"] == "proxy.corp.example.com:8080"
    assert facts["proxy"]["winhttp"]["direct"] is True
    assert facts["proxy"]["environment"] == {"HTTPS_PROXY": "http://proxy.corp.example.com:8080"}


def test_windows_services_automatic_but_stopped(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env, categories={"services"}).result("services").facts
    stopped = {s["name"]: s["status"] for s in facts["automatic_stopped"]}
    # WSearch comes as numbers (Windows PowerShell 5.1 enum output): 1 = Stopped, 2 = Automatic.
    assert stopped == {"Spooler": "Stopped", "WSearch": "Stopped", "vpnagent": "StartPending"}
    assert facts["service_count"] == 8 and facts["running"] == 3


def test_windows_installed_programs(tmp_path, windows_runner, windows_env):
    report = _collect_windows(tmp_path, windows_runner, windows_env, categories={"software"},
                              app_versions={"teams": ["ms-teams.exe", "--version"]})
    facts = report.result("software").facts
    listing = json.loads((tmp_path / "stage" / "software" / "packages.json").read_text())["packages"]
    assert facts["package_manager"] == "windows-uninstall"
    assert facts["package_count"] == 8
    assert package_versions(listing)["Mozilla Firefox (x64 de)"] == "123.0.1"
    assert package_versions(listing)["7-Zip 23.01 (x64)"] == "23.01"
    # Two Teams installs with different versions both stay visible.
    assert package_versions(listing)["Microsoft Teams"] == "1.7.00.3653"
    assert package_versions(listing)["Microsoft Teams [user]"] == "24033.811.2738.2546"
    assert facts["apps"] == {"teams": {"version": None, "status": "not_found"}}
    assert "packages" not in facts


def test_windows_event_log_errors_are_counted_and_normalised(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env, categories={"logs"}).result("logs").facts
    assert facts["events"] == 7
    assert facts["by_level"] == {"Error": 4, "Warning": 2, "Critical": 1}
    top = facts["top_errors"][0]
    assert top["count"] == 3  # "done this 1/2/3 time(s)", "5000/60000 ms" differ only in numbers
    assert top["message"].startswith("Service Control Manager <n>: The Print Spooler service terminated")


def test_windows_crash_reports_and_dumps(tmp_path, windows_runner, windows_env):
    archive = Path(windows_env["PROGRAMDATA"], "Microsoft", "Windows", "WER", "ReportArchive",
                   "AppCrash_OUTLOOK.EXE_9f3c2b1a_0b7e4a4d")
    archive.mkdir(parents=True)
    shutil.copy(FIXTURES / "windows" / "Report.wer", archive / "Report.wer")
    _modified(archive / "Report.wer", 3 * HOUR)
    old = archive.parent / "AppCrash_Teams.exe_old"
    old.mkdir()
    shutil.copy(FIXTURES / "windows" / "Report.wer", old / "Report.wer")
    _modified(old / "Report.wer", 7 * DAY)
    dumps = Path(windows_env["LOCALAPPDATA"], "CrashDumps")
    dumps.mkdir()
    (dumps / "OUTLOOK.EXE.14868.dmp").write_bytes(b"MDMP" + b"\0" * 4096)
    _modified(dumps / "OUTLOOK.EXE.14868.dmp", 3 * HOUR)
    (dumps / "Teams.exe.2211.dmp").write_bytes(b"MDMP")
    _modified(dumps / "Teams.exe.2211.dmp", 25 * HOUR)  # just outside the default 24 hours

    report = _collect_windows(tmp_path, windows_runner, windows_env, categories={"crashes"})
    facts = report.result("crashes").facts
    dumps_by_name = {d["name"]: d for d in facts["crash_dumps"]}
    assert set(dumps_by_name) == {"OUTLOOK.EXE.14868.dmp", "Teams.exe.2211.dmp"}
    assert dumps_by_name["OUTLOOK.EXE.14868.dmp"]["size"] == 4100
    assert dumps_by_name["OUTLOOK.EXE.14868.dmp"]["recent"] and not dumps_by_name["Teams.exe.2211.dmp"]["recent"]
    assert len(facts["wer_reports"]) == 2 and facts["recent_count"] == 2  # the new dump and the new report
    [copied] = facts["copied_reports"]
    assert copied["application"] == "OUTLOOK.EXE"
    assert copied["app_version"] == "16.0.17328.20162"
    assert copied["fault_module"] == "mso20win32client.dll"
    assert copied["exception_code"] == "c0000005"
    assert copied["event_type"] == "APPCRASH"
    # Dumps are memory images: listed, never staged.
    assert not [i for i in report.items if i.path.endswith(".dmp")]
    assert not list((tmp_path / "stage").rglob("*.dmp"))


def test_wer_event_time_is_converted_from_filetime():
    details = parse_wer((FIXTURES / "windows" / "Report.wer").read_bytes())
    assert details["time"] == "2024-03-14T01:42:11+00:00"
    assert details["friendly_name"] == "Stopped working"


def test_windows_environment_is_allow_listed_case_insensitively(tmp_path, windows_runner, windows_env):
    facts = _collect_windows(tmp_path, windows_runner, windows_env,
                             categories={"environment"}).result("environment").facts
    assert "Path" in facts["variables"] and "USERNAME" in facts["variables"]
    assert "GITHUB_TOKEN" not in facts["variables"]
    assert "ghp_" not in (tmp_path / "stage" / "environment" / "variables.txt").read_text()
