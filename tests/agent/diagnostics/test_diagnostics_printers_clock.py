"""The printers and clock collectors on recorded outputs of all three systems (fixtures/), and on
this PC for real where it has the tools."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from agent.diagnostics import collect
from agent.diagnostics.collectors.clock import (
    ClockCollector,
    parse_chrony_tracking,
    parse_loginctl,
    parse_timedatectl,
    parse_w32tm,
    parse_who,
)
from agent.diagnostics.collectors.printers import PrintersCollector, parse_cups_error_log, parse_lpstat
from agent.diagnostics.context import RECORDED_OUTPUTS_ENV, CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus
from tests.agent.diagnostics.conftest import FixtureRunner

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)


def _recorded_linux(tmp_path: Path, category: str, files: dict[str, str]):
    root = tmp_path / "recorded"
    for relpath, fixture in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / relpath)
    env = {**os.environ, RECORDED_OUTPUTS_ENV: str(root)}
    return collect(CollectOptions(categories={category}), tmp_path / "stage", platform="linux", env=env,
                   now=NOW).result(category)


# -- printers ------------------------------------------------------------------------


def test_lpstat_names_the_stopped_queue_and_its_reason():
    parsed = parse_lpstat((FIXTURES / "linux" / "lpstat-t.txt").read_text())
    assert parsed["scheduler_running"] is True and parsed["default"] == "HP_LaserJet_4050"
    queues = {p["name"]: p for p in parsed["printers"]}
    assert queues["HP_LaserJet_4050"] == {"name": "HP_LaserJet_4050", "accepting": True, "state": "idle",
                                          "enabled": True, "since": "Thu Mar 14 09:12:33 2024", "reason": None}
    assert queues["Zebra_ZD420"]["state"] == "stopped" and queues["Zebra_ZD420"]["accepting"] is False
    assert queues["Zebra_ZD420"]["reason"] == "Filter failed"
    assert parsed["jobs"] == 2
    assert all("ipp://" not in str(p) and "usb://" not in str(p) for p in parsed["printers"])  # URIs stay raw


def test_linux_printers_from_recorded_cups(tmp_path):
    result = _recorded_linux(tmp_path, "printers", {
        "printers/lpstat-t.txt": "linux/lpstat-t.txt",
        "printers/lpstat-l-p.txt": "linux/lpstat-l-p.txt",
        "printers/cups-error_log.txt": "linux/cups-error_log.txt",
    })
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["problems"] == [{"printer": "Zebra_ZD420", "problem": "queue stopped: Filter failed"}]
    zebra = next(p for p in facts["printers"] if p["name"] == "Zebra_ZD420")
    assert zebra["alerts"] == "media-empty-error"
    assert facts["cups_error_count"] == 3
    assert facts["cups_errors"][-1]["message"].startswith("[cups-driverd] Bad driver information file")


def test_cups_error_log_keeps_errors_only():
    errors = parse_cups_error_log((FIXTURES / "linux" / "cups-error_log.txt").read_text())
    assert [e["time"] for e in errors] == ["14/Mar/2024:08:01:10 +0100"] * 2 + ["14/Mar/2024:09:12:20 +0100"]


def test_printers_on_this_pc(tmp_path):
    report = collect(CollectOptions(categories={"printers"}), tmp_path / "stage", platform="linux", now=NOW)
    result = report.result("printers")
    assert result.status is CollectorStatus.OK, result.error
    if shutil.which("lpstat") is None:
        assert result.facts["note"].startswith("lpstat is not installed")
    else:
        assert {i.path for i in result.items} >= {"printers/lpstat-t.txt", "printers/lpstat-l-p.txt"}
        # No cupsd here: a CUPS client alone is not a print service that is down.
        if not os.path.exists("/usr/sbin/cupsd"):
            assert result.facts["scheduler_running"] is None and result.facts["problems"] == []


def test_missing_lpstat_says_so(make_ctx):
    ctx = make_ctx("linux", FixtureRunner([]), category="printers", env={})
    facts = PrintersCollector().collect(ctx)
    assert facts["printers"] == [] and "not installed" in facts["note"]
    assert ctx.items[0].status is ItemStatus.NOT_FOUND


def test_windows_printers_and_spooler(tmp_path, windows_runner, windows_env):
    report = collect(CollectOptions(categories={"printers"}), tmp_path / "stage", platform="windows",
                     command_runner=windows_runner, which=windows_runner.which, env=windows_env, now=NOW)
    facts = report.result("printers").facts
    assert facts["spooler"] == {"status": "Running", "start_type": "Automatic"}
    assert facts["scheduler_running"] is True and facts["default"] == "HP LaserJet 4050 (2nd floor)"
    assert facts["problems"] == [{"printer": "Zebra ZD420", "problem": "status Offline"}]
    assert facts["jobs"] == 2


def test_windows_spooler_stopped_is_a_problem(tmp_path, windows_env):
    stopped = tmp_path / "printers.json"
    stopped.write_text((FIXTURES / "windows" / "printers.json").read_text().replace('"Running"', '"Stopped"'))
    runner = FixtureRunner([("powershell.exe", "Get-Printer", str(stopped), 0)])
    report = collect(CollectOptions(categories={"printers"}), tmp_path / "stage", platform="windows",
                     command_runner=runner, which=runner.which, env=windows_env, now=NOW)
    assert report.result("printers").facts["problems"][0] == {"printer": "*",
                                                              "problem": "the Print Spooler service is Stopped"}


def test_macos_printers_from_lpstat(tmp_path, darwin_runner):
    report = collect(CollectOptions(categories={"printers"}), tmp_path / "stage", platform="darwin",
                     command_runner=darwin_runner, which=darwin_runner.which, env={"HOME": str(tmp_path)},
                     home=tmp_path, now=NOW)
    facts = report.result("printers").facts
    assert facts["problems"] == [{"printer": "Brother_HL_L2350DW", "problem":
                                  'queue stopped: Unable to locate printer "Brother HL-L2350DW series._ipp._tcp.local.".'}]


# -- clock -----------------------------------------------------------------------------


def test_timedatectl_unsynchronised_from_recorded_output(tmp_path):
    result = _recorded_linux(tmp_path, "clock", {"clock/timedatectl.txt": "linux/timedatectl-show.txt",
                                                 "clock/loginctl-sessions.txt": "linux/loginctl-sessions.txt"})
    facts = result.facts
    assert facts["sync"]["source"] == "timedatectl"
    assert facts["sync"]["synchronized"] is False and facts["sync"]["ntp_enabled"] is True
    assert facts["sync"]["timezone"] == "Europe/Berlin"
    assert [s["user"] for s in facts["sessions"]] == ["anna", "gdm", "anna"]
    assert facts["sessions"][0] == {"session": "2", "user": "anna", "seat": "seat0", "tty": "tty2"}


def test_chrony_and_who_parsers():
    chrony = parse_chrony_tracking((FIXTURES / "linux" / "chronyc-tracking.txt").read_text())
    assert chrony["synchronized"] is True and chrony["offset_seconds"] == -0.000012345
    assert parse_timedatectl("NTPSynchronized=yes\nNTP=yes\n")["synchronized"] is True
    who = parse_who((FIXTURES / "linux" / "who.txt").read_text())
    assert who[1] == {"user": "anna", "tty": "pts/1", "since": "2024-03-14 09:15", "from": "10.20.3.17"}
    assert parse_loginctl("") == []


def test_clock_on_this_pc(tmp_path):
    report = collect(CollectOptions(categories={"clock"}), tmp_path / "stage", platform="linux", now=NOW)
    result = report.result("clock")
    assert result.status is CollectorStatus.OK, result.error
    assert isinstance(result.facts["sessions"], list)
    if not os.path.isdir("/run/systemd/system") and shutil.which("chronyc") is None:
        assert result.facts["sync"]["synchronized"] is None and result.facts["sync"]["note"]


def test_windows_clock_on_the_local_cmos_clock(tmp_path, windows_runner, windows_env):
    report = collect(CollectOptions(categories={"clock"}), tmp_path / "stage", platform="windows",
                     command_runner=windows_runner, which=windows_runner.which, env=windows_env, now=NOW)
    facts = report.result("clock").facts
    assert facts["sync"]["synchronized"] is False and facts["sync"]["server"] is None
    assert [(s["user"], s["state"]) for s in facts["sessions"]] == [("anna", "active"), ("svc-backup", "disconnected")]
    synced = parse_w32tm("Leap Indicator: 0(no warning)\nSource: dc01.corp.example.com\n")
    assert synced["synchronized"] is True and synced["server"] == "dc01.corp.example.com"


def test_macos_network_time_and_sessions(tmp_path, darwin_runner):
    report = collect(CollectOptions(), tmp_path / "stage", platform="darwin", command_runner=darwin_runner,
                     which=darwin_runner.which, env={"HOME": str(tmp_path)}, home=tmp_path, now=NOW,
                     collectors=[ClockCollector()])
    facts = report.result("clock").facts
    assert facts["sync"] == {"source": "systemsetup", "ntp_enabled": True, "synchronized": None}
    assert [s["tty"] for s in facts["sessions"]] == ["console", "ttys000"]
