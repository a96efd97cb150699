"""Windows System-log events, macOS panic reports and shutdown causes, and crash reports of other
versions and spellings (fixtures/variants, written from the documented formats), and the triage
lines they give: a blue screen is an unexpected shutdown, a disk event names its disk, a crashed
service is named, a crash report is found for a process the kernel names by its short name."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.bundle.summary import build_summary
from agent.diagnostics.collectors.crashes import parse_apport, parse_ips_header, parse_legacy_crash
from agent.diagnostics.collectors.kernel import (
    parse_kernel_log, parse_mac_shutdown_cause, parse_panic_report, parse_windows_system_events,
)
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus

VARIANTS = Path(__file__).parent / "fixtures" / "variants"
DARWIN = Path(__file__).parent / "fixtures" / "darwin"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def summary(platform: str, **facts: dict) -> dict:
    results = [CollectorResult(name, name, CollectorStatus.OK, 0.1, [], value) for name, value in facts.items()]
    return build_summary(CollectionReport(NOW, NOW, platform, 20.0, results))


def test_windows_system_log_of_a_blue_screen_failing_disks_and_crashing_services():
    facts = parse_windows_system_events(json.loads((VARIANTS / "windows-system-events.json").read_text()))
    assert [e["id"] for e in facts["unexpected_shutdowns"]] == [1001, 41]  # the bugcheck is one too
    assert facts["io_error_devices"] == {"Harddisk0": 1, "Disk 1": 1, "C:": 1, "D:": 1}
    assert facts["io_error_count"] == 5  # and volmgr 161, which names no disk
    assert [(s["service"], s["problem"]) for s in facts["service_errors"]] == [
        ("Print Spooler", "crashed (restarted)"), ("Print Spooler", "crashed (restarted)"),
        ("Citrix Workspace Updater", "crashed"), ("Intel(R) Rapid Storage Technology", "failed to start"),
        ("Windows Update", "did not start in time"), ("Network List Service", "stopped with an error")]
    lines = summary("windows", kernel={"source": "windows-system-log", **facts})["attention"]
    assert "2 unexpected shutdown(s) in the System log" in lines
    assert "5 disk I/O error(s) in the System log (Harddisk0, Disk 1, C:, D:)" in lines
    assert "Service Print Spooler crashed (restarted) (2×)" in lines
    assert "Service Citrix Workspace Updater crashed" in lines
    assert "Service Intel(R) Rapid Storage Technology failed to start" in lines
    assert not any("kernel log" in line for line in lines)


@pytest.mark.parametrize("name, panic", [
    ("panics/Kernel-2026-12-01-074002.ips",
     'panic(cpu 4 caller 0xfffffe002a1b2c3d): "AppleNVMe: ANS2 firmware crashed" @AppleNVMeCore.cpp:1234'),
    ("panics/Kernel-2026-11-20-101010.ips", "panic(cpu 0 caller 0xfffffff0201d6f6c): x86 CPU CATERR detected"),
    ("panics/old-2016-05-03-091500.panic",
     "panic(cpu 2 caller 0xffffff801a2b3c4d): Kernel trap at 0xffffff7f9a8b7c6d, type 14=page fault, registers:"),
])
def test_panic_reports_of_every_macos(name, panic):
    assert parse_panic_report((VARIANTS / name).read_text()) == panic
    facts = {"source": "diagnostic-reports", "kernel_panics": [{"name": name, "time": "t", "panic": panic}],
             "kernel_panic_count": 1}
    assert summary("darwin", kernel=facts)["attention"] == [f"Kernel panic t: {panic}"]


def test_old_macos_shutdown_cause_spelling():
    cause = parse_mac_shutdown_cause((VARIANTS / "shutdown-cause-old.txt").read_text())
    assert cause == {"code": -62, "clean": False, "reason": "watchdog: system hung"}


def test_mac_crash_reports_name_their_signal_and_find_the_kernel_crash():
    ips = parse_ips_header((DARWIN / "DiagnosticReports" / "Microsoft Outlook-2024-03-14-090214.ips").read_text())
    assert (ips["application"], ips["pid"], ips["exception"], ips["signal"]) == \
        ("Microsoft Outlook", 2231, "EXC_BREAKPOINT", "SIGTRAP")
    legacy = parse_legacy_crash((DARWIN / "DiagnosticReports" / "backupd-2024-03-13-221503.crash").read_text())
    assert (legacy["application"], legacy["pid"], legacy["signal"]) == ("backupd", 318, "SIGABRT")
    older = parse_legacy_crash("Process:         Preview [412]\nException Type:  EXC_BAD_ACCESS\n"
                               "Termination Signal: Segmentation fault: 11\n")
    assert (older["pid"], older["signal"]) == (412, "11")
    crashes = {"recent_count": 2, "copied_reports": [{**ips, "staged": "crashes/outlook.ips"},
                                                     {**older, "staged": "crashes/preview.crash"}]}
    details = {r["program"]: r["detail"] for r in summary("darwin", crashes=crashes)["crashes"]["recent"]}
    assert details == {"Microsoft Outlook": "SIGTRAP", "Preview": "SIGSEGV"}


@pytest.mark.parametrize("kernel_line, report_fields, title", [
    # python3 is a link to python3.12: the kernel says python3, apport the real executable.
    ("python3[4242]: segfault at 0 ip 0 sp 0 error 4 in libgtk-3.so.0[7f+1000]",
     {"ExecutablePath": "/usr/bin/python3.12", "Signal": "11", "Title": "python3.12 crashed with SIGSEGV"},
     "python3.12 crashed with SIGSEGV"),
    # comm is cut to 15 characters.
    ("gnome-control-c[777]: segfault at 0 ip 0 sp 0 error 4 in libgnutls.so.30[7f+1000]",
     {"ExecutablePath": "/usr/bin/gnome-control-center", "SignalName": "SIGSEGV",
      "Title": "gnome-control-center crashed with SIGSEGV in gnutls_free()"},
     "gnome-control-center crashed with SIGSEGV in gnutls_free()"),
    # Same prefix, other program: no report.
    ("python3[4243]: segfault at 0 ip 0 sp 0 error 4", {"ExecutablePath": "/usr/bin/python3-config",
                                                        "Signal": "11", "Title": "python3-config crashed"}, None),
])
def test_a_kernel_crash_finds_its_crash_report(kernel_line, report_fields, title):
    apport = parse_apport("ProblemType: Crash\n" + "".join(f"{k}: {v}\n" for k, v in report_fields.items()))
    crashes = {"recent_count": 1, "copied_reports": [{**apport, "staged": "crashes/var-crash/x.crash"}]}
    result = summary("linux", kernel={"source": "journald", **parse_kernel_log([kernel_line])}, crashes=crashes)
    assert result["kernel"]["segfaults"][0]["report"] == title
    assert result["crashes"]["recent"][0]["detail"] == "SIGSEGV"
    process = kernel_line.split("[", 1)[0]
    crash_lines = [line for line in result["attention"] if line.startswith(f"{process} (pid ")]
    assert len(crash_lines) == 1 and crash_lines[0].split(" — crash report: ")[1:] == ([title] if title else [])


@pytest.mark.parametrize("fixture, errors, warnings, fatal", [
    ("xorg-0-old.log", ['Failed to load module "nvidia" (module does not exist, 0)', "No drivers available."], 1,
     "no screens found"),
    ("xorg-0-sameline.log", ["modeset(0): drmSetMaster failed: Permission denied"], 0,
     "AddScreen/ScreenInit failed for driver 0"),
])
def test_xorg_logs_of_other_versions(fixture, errors, warnings, fatal):
    from agent.diagnostics.collectors.display import parse_xorg_log
    parsed = parse_xorg_log((VARIANTS / fixture).read_text())
    assert (parsed["errors"], parsed["warning_count"], parsed["fatal"]) == (errors, warnings, fatal)
    display = {"session": {"type": "x11"}, "xorg": parsed}
    assert f"The X server failed to start: {fatal}" in summary("linux", display=display)["attention"]
