"""The macOS collectors, run on recorded command outputs and reports (fixtures/darwin)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.diagnostics.collectors.software import package_versions

from agent.diagnostics import collect
from agent.diagnostics.context import CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus

FIXTURES = Path(__file__).parent / "fixtures"
#: When the recorded outputs and reports were taken; "the last hours" are measured from here, never from today.
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)
#: Each recorded report's time, as its name says; the checkout's file times mean nothing.
REPORT_TIMES = {
    "Microsoft Outlook-2024-03-14-090214.ips": datetime(2024, 3, 14, 9, 2, 14, tzinfo=timezone.utc),
    "backupd-2024-03-13-221503.crash": datetime(2024, 3, 13, 22, 15, 3, tzinfo=timezone.utc),
}
OLD_REPORT = "softwareupdated-2024-03-12-080000.crash"


@pytest.fixture
def mac_home(tmp_path: Path) -> Path:
    """A home folder with the recorded diagnostic reports in ~/Library/Logs/DiagnosticReports, dated as named."""
    home = tmp_path / "Users" / "anna"
    reports = home / "Library" / "Logs" / "DiagnosticReports"
    shutil.copytree(FIXTURES / "darwin" / "DiagnosticReports", reports)
    for name, when in REPORT_TIMES.items():
        os.utime(reports / name, (when.timestamp(), when.timestamp()))
    return home


def _collect_darwin(tmp_path: Path, runner, home: Path, **options):
    env = {"HOME": str(home), "LANG": "de_DE.UTF-8", "TMPDIR": "/var/folders/xy/T/", "AWS_SECRET_ACCESS_KEY": "x"}
    return collect(CollectOptions(**options), tmp_path / "stage", platform="darwin", command_runner=runner,
                   which=runner.which, env=env, home=home, now=NOW)


def test_every_macos_collector_runs_on_recorded_outputs(tmp_path, darwin_runner, mac_home):
    report = _collect_darwin(tmp_path, darwin_runner, mac_home)
    for result in report.results:
        assert result.status is CollectorStatus.OK, (result.name, result.error)
    assert darwin_runner.unmatched == [], "a macOS command has no recorded output"
    assert not any(item.status is ItemStatus.NOT_FOUND for item in report.items)


def test_macos_system_facts(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"system"}).result("system").facts
    assert facts["os"] == {"family": "darwin", "name": "macOS", "version": "14.4.1", "build": "23E224",
                           "pretty_name": "macOS 14.4.1"}
    assert facts["boot_time"] == "2024-03-14T07:06:40+00:00"
    assert facts["uptime"] == "0d 4h 53m"  # at NOW, not today
    assert facts["kernel"]["release"] == "23.4.0"
    assert facts["architecture"] == "arm64"
    assert facts["locale"]["apple_locale"] == "de_DE"


def test_macos_hardware_disks_and_battery(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"hardware"}).result("hardware").facts
    assert facts["model"] == "Mac14,10"
    assert facts["cpu"]["model"] == "Apple M2 Pro"
    # Sealed system volumes are left out; the data volume is what fills up.
    assert [d["mountpoint"] for d in facts["disks"]] == ["/", "/System/Volumes/Data", "/Volumes/Time Machine"]
    assert [(d["mountpoint"], d["percent"]) for d in facts["disk_full"]] == [("/System/Volumes/Data", 94.2)]
    assert facts["battery"] == {"percent": 87, "state": "discharging", "plugged": False, "minutes_left": 312}


def test_macos_network_route_dns_and_proxy(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"network"}).result("network").facts
    assert facts["default_routes"] == [{"gateway": "192.168.178.1", "interface": "en0", "metric": None}]
    assert facts["dns"]["nameservers"] == ["192.168.178.1", "fd00::3a10:d5ff:fe12:3456"]
    assert facts["dns"]["search"] == ["fritz.box"]
    proxy = facts["proxy"]["system"]
    assert proxy["proxies"] == {"http": "proxy.corp.example.com:3128", "https": "proxy.corp.example.com:3128"}
    assert proxy["exceptions"] == ["*.local", "169.254/16", "*.corp.example.com"]
    assert proxy["pac_url"] is None


def test_macos_launchd_jobs_with_nonzero_status(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"services"}).result("services").facts
    assert facts["service_count"] == 7 and facts["running"] == 2
    assert {(j["label"], j["status"]) for j in facts["nonzero_status"]} == {
        ("com.example.vpn-helper", 78),
        ("com.apple.mdworker.shared.0A000000-0000-0000-0000-000000000000", -9),
        ("com.google.keystone.agent", 1),
    }


def test_macos_applications_receipts_and_brew(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"software"}).result("software").facts
    listing = json.loads((tmp_path / "stage" / "software" / "packages.json").read_text())["packages"]
    assert "packages" not in facts
    assert package_versions(listing)["Safari"] == "17.4.1"
    assert package_versions(listing)["Microsoft Outlook"] == "16.83"
    assert package_versions(listing)["Python Launcher"] == "3.12.0"
    assert package_versions(listing)["Python Launcher (/Applications/Python 3.10/Python Launcher.app)"] == "3.10.5"
    assert facts["package_count"] == 5
    assert facts["receipts_count"] == 6
    assert facts["brew_count"] == 4


def test_macos_unified_log_errors(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"logs"}).result("logs").facts
    assert facts["log_entries"] == 7
    counts = {entry["message"]: entry["count"] for entry in facts["top_errors"]}
    roam = [message for message in counts if "roam failed" in message]
    assert roam == ["kernel[<n>]: (AppleBCMWLANCore) AppleBCMWLANCore:startRoam: <n> roam failed, reason <n>, rssi -<n>"]
    assert counts[roam[0]] == 3
    timed_out = [message for message in counts if "request timed out" in message]
    assert len(timed_out) == 1 and counts[timed_out[0]] == 2  # UUID and task numbers normalised away
    assert facts["top_errors"][0]["message"] == roam[0]


def test_macos_diagnostic_reports_are_parsed_and_copied(tmp_path, darwin_runner, mac_home):
    old = mac_home / "Library" / "Logs" / "DiagnosticReports" / OLD_REPORT
    old.write_text("Process: softwareupdated [88]\n")
    stamp = datetime(2024, 3, 12, 8, 0, tzinfo=timezone.utc).timestamp()  # two days before NOW
    os.utime(old, (stamp, stamp))
    report = _collect_darwin(tmp_path, darwin_runner, mac_home, categories={"crashes"})
    facts = report.result("crashes").facts
    recent = {r["name"]: r["recent"] for r in facts["diagnostic_reports"]}
    assert recent == {"Microsoft Outlook-2024-03-14-090214.ips": True, "backupd-2024-03-13-221503.crash": True,
                      OLD_REPORT: False}
    assert facts["recent_count"] == 2
    copied = {c["application"]: c for c in facts["copied_reports"]}
    assert copied["Microsoft Outlook"]["app_version"] == "16.83"
    assert copied["Microsoft Outlook"]["bug_type"] == "309"
    assert copied["backupd"]["exception"] == "EXC_CRASH (SIGABRT)"
    staged = sorted(p.name for p in (tmp_path / "stage" / "crashes" / "diagnostic-reports").iterdir())
    assert staged == ["Microsoft_Outlook-2024-03-14-090214.ips", "backupd-2024-03-13-221503.crash"]


def test_macos_environment_keeps_only_allowed_names(tmp_path, darwin_runner, mac_home):
    facts = _collect_darwin(tmp_path, darwin_runner, mac_home,
                            categories={"environment"}).result("environment").facts
    assert facts["variables"] == {"HOME": str(mac_home), "LANG": "de_DE.UTF-8", "TMPDIR": "/var/folders/xy/T/"}
    assert facts["omitted_count"] == 1
