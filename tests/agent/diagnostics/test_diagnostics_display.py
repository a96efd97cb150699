"""The display-and-login collector on recorded outputs of all three systems (fixtures/, written from the
tools' documented formats: see fixtures/README-recorded.md), on this PC for real, and in summary.json."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from agent.bundle.summary import build_summary
from agent.diagnostics import collect
from agent.diagnostics.collectors.display import DisplayCollector, parse_last, parse_xorg_log, parse_xrandr
from agent.diagnostics.context import RECORDED_OUTPUTS_ENV, CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)
LINUX_RECORDED = {
    "display/journal-display-manager.txt": "linux/journal-display-manager.txt",
    "display/journal-compositor.txt": "linux/journal-compositor.txt",
    "display/xrandr.txt": "linux/xrandr.txt",
    "display/last.txt": "linux/last-x.txt",
}


def _linux(tmp_path: Path, files: dict[str, str], env: dict[str, str] | None = None, xorg: Path | None = None):
    root = tmp_path / "recorded"
    for relpath, fixture in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / relpath)
    base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    full_env = {**base, **(env or {}), RECORDED_OUTPUTS_ENV: str(root)}
    collector = DisplayCollector(xorg_logs=(str(xorg),) if xorg else ())
    return collect(CollectOptions(categories={"display"}), tmp_path / "stage", platform="linux", env=full_env,
                   now=NOW, collectors=[collector])


def test_xorg_log_errors_and_the_fatal_error():
    parsed = parse_xorg_log((FIXTURES / "linux/xorg-0.log").read_text())
    assert parsed["fatal"] == "no screens found"
    assert parsed["errors"] == ["open /dev/dri/card0: No such file or directory",
                                "Screen 0 deleted because of no matching config section."]
    assert parsed["warning_count"] == 2


def test_xrandr_tells_connected_from_switched_on():
    outputs = {o["output"]: o for o in parse_xrandr((FIXTURES / "linux/xrandr.txt").read_text())}
    assert outputs["eDP-1"] == {"output": "eDP-1", "connected": True, "primary": True, "mode": "1920x1080", "on": True}
    assert outputs["DP-1"]["connected"] and not outputs["DP-1"]["on"]  # plugged in but not used
    assert not outputs["DP-2"]["connected"]


def test_last_finds_the_boot_that_ended_without_a_shutdown():
    linux = parse_last((FIXTURES / "linux/last-x.txt").read_text())
    assert linux["unclean_shutdowns"] == [{"boot": "2024-03-12T08:59:40+01:00", "next_boot": "2024-03-13T08:04:30+01:00"}]
    assert linux["crashed_sessions"] == 1 and linux["reboots"] == 4 and linux["shutdowns"] == 2
    mac = parse_last((FIXTURES / "darwin/last.txt").read_text())
    assert mac["unclean_shutdowns"] == [{"boot": "Wed Mar 13 08:04", "next_boot": "Thu Mar 14 08:00"}]
    clean = parse_last("reboot   system boot  6.1.0 2024-03-14T08:00:40+01:00   still running\n"
                       "shutdown system down  6.1.0 2024-03-13T18:00:00+01:00 - 2024-03-14T08:00:40+01:00\n"
                       "reboot   system boot  6.1.0 2024-03-13T08:00:00+01:00 - 2024-03-13T18:00:00+01:00\n")
    assert clean["unclean_shutdown_count"] == 0


def test_linux_display_from_recorded_outputs(tmp_path):
    xorg = tmp_path / "Xorg.0.log"
    shutil.copy(FIXTURES / "linux/xorg-0.log", xorg)
    report = _linux(tmp_path, LINUX_RECORDED, env={"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"}, xorg=xorg)
    result = report.result("display")
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["session"] == {"type": "x11", "desktop": facts["session"]["desktop"], "display": True}
    assert facts["xorg"]["fatal"] == "no screens found"
    assert facts["display_manager"]["count"] == 3
    assert facts["display_manager"]["last"][-1] == "gdm3[812]: Gdm: GdmDisplay: Session never registered, failing"
    assert facts["compositor"]["count"] == 3  # the "-- Journal begins" line is not a warning
    assert [m["output"] for m in facts["monitors"] if m["on"]] == ["eDP-1", "HDMI-1"]
    assert facts["login"]["unclean_shutdown_count"] == 1
    items = {item.path: item for item in result.items}
    assert items["display/Xorg.0.log"].status is ItemStatus.OK
    assert "recorded output" in (items["display/xrandr.txt"].note or "")

    summary = build_summary(report)
    assert summary["display"]["xorg_fatal"] == "no screens found"
    assert [m["name"] for m in summary["display"]["monitors"]] == ["eDP-1", "HDMI-1", "DP-1"]
    assert "The X server failed to start: no screens found" in summary["attention"]
    assert any(line.startswith("1 shutdown(s) without an orderly shutdown") and "2024-03-12T08:59:40" in line
               for line in summary["attention"])


def test_no_display_skips_xrandr_and_says_why(tmp_path):
    report = _linux(tmp_path, {"display/last.txt": "linux/last-x.txt"}, env={})
    result = report.result("display")
    assert result.facts["monitors"] is None
    item = next(i for i in result.items if i.path == "display/xrandr.txt")
    assert item.status is ItemStatus.SKIPPED and "DISPLAY is not set" in item.note
    assert build_summary(report)["display"]["monitors"] is None


def test_windows_display_and_logons(tmp_path, windows_runner, windows_env):
    report = collect(CollectOptions(categories={"display"}), tmp_path / "stage", platform="windows",
                     command_runner=windows_runner, which=windows_runner.which, env=windows_env, now=NOW)
    facts = report.result("display").facts
    assert [a["name"] for a in facts["adapters"]] == ["Intel(R) UHD Graphics 620", "DisplayLink USB Device"]
    assert facts["adapters"][0]["mode"] == "1920x1080"
    assert facts["adapter_problems"] == ["DisplayLink USB Device"]
    assert facts["monitors"] == [{"name": "DELL P2419H", "connected": True}, {"name": None, "connected": False}]
    assert facts["login"]["logons"] == 1 and facts["login"]["unclean_shutdown_count"] == 2
    summary = build_summary(report)
    assert "Graphics adapter DisplayLink USB Device reports a problem" in summary["attention"]
    assert summary["display"]["monitors"] == [{"name": "DELL P2419H", "connected": True, "mode": None}]


def test_macos_displays_and_last(tmp_path, darwin_runner):
    report = collect(CollectOptions(categories={"display"}), tmp_path / "stage", platform="darwin",
                     command_runner=darwin_runner, which=darwin_runner.which, env={}, now=NOW)
    facts = report.result("display").facts
    assert facts["adapters"][0]["name"] == "Apple M1"
    assert [(m["name"], m["mode"], m["primary"]) for m in facts["monitors"]] == [
        ("Color LCD", "1440 x 900 @ 60.00Hz", True), ("DELL U2720Q", "3840 x 2160 @ 60.00Hz", False)]
    assert facts["login"]["unclean_shutdown_count"] == 1 and facts["login"]["crashed_sessions"] == 1


def test_display_on_this_pc(tmp_path):
    # For real: whatever this PC has, the collector finishes and every item says what happened.
    report = collect(CollectOptions(categories={"display"}), tmp_path / "stage", now=NOW)
    result = report.result("display")
    assert result.status is CollectorStatus.OK, result.error
    assert all(item.status is not ItemStatus.ERROR or item.note for item in result.items)
