"""The kernel collector on recorded outputs of all three systems: OOM kills, segfaults with their
signal names, I/O and driver errors, the previous boot and how it ended, Windows System-log
events and macOS kernel panics. Outputs this machine cannot produce (no journal, no systemd)
come from fixtures/ and are served through HELPLINE_DIAG_FIXTURES, as the collector would see them."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from agent.diagnostics import collect
from agent.diagnostics.collectors.kernel import (
    KernelCollector,
    parse_kernel_log,
    parse_mac_shutdown_cause,
    parse_panic_report,
    previous_shutdown_linux,
    signal_name,
)
from agent.diagnostics.context import RECORDED_OUTPUTS_ENV, CollectOptions
from agent.diagnostics.model import CollectorStatus, ItemStatus

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)


def recorded(tmp_path: Path, files: dict[str, str]) -> Path:
    """A recorded-outputs directory laid out like the staging directory: {relpath: fixture}."""
    root = tmp_path / "recorded"
    for relpath, fixture in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / relpath)
    return root


def collect_linux_kernel(tmp_path: Path, files: dict[str, str]):
    env = {**os.environ, RECORDED_OUTPUTS_ENV: str(recorded(tmp_path, files))}
    report = collect(CollectOptions(categories={"kernel"}), tmp_path / "stage", platform="linux", env=env, now=NOW)
    return report.result("kernel")


def test_signal_names_not_numbers():
    assert signal_name(11) == "SIGSEGV" and signal_name("6") == "SIGABRT" and signal_name("x") is None


def test_journal_kernel_log_names_oom_kills_segfaults_io_and_driver_errors(tmp_path):
    result = collect_linux_kernel(tmp_path, {
        "kernel/journal-kernel.txt": "linux/journal-kernel.txt",
        "kernel/previous-boot-errors.txt": "linux/previous-boot-errors.txt",
        "kernel/previous-boot-end.txt": "linux/previous-boot-end.txt",
    })
    assert result.status is CollectorStatus.OK, result.error
    facts = result.facts
    assert facts["source"] == "journald"
    assert facts["oom_kills"] == [{"time": "2024-03-14T09:55:01+00:00", "pid": 39211, "process": "firefox",
                                   "rss_kb": 6123456, "cgroup": False}]
    crashes = {(c["process"], c["signal"], c["module"]) for c in facts["segfaults"]}
    assert crashes == {("python3", "SIGSEGV", "libgtk-3.so.0.2404.29"), ("evolution", "SIGSEGV", "libcamel-1.2.so.64")}
    assert facts["io_error_devices"] == {"sdb": 2, "sdb1": 1}
    assert facts["driver_error_count"] == 2  # firmware load, USB descriptor
    previous = facts["previous_boot"]
    assert previous["clean"] is False and "without a shutdown" in previous["reason"]
    assert previous["error_count"] == 5
    assert {"message": "pc-anna NetworkManager: <error> [1710349964.1234] dhcp4 (wlp0s20f3): request timed out",
            "count": 1} in previous["top_errors"]
    sources = {item.path: item for item in result.items}
    assert "recorded output" in sources["kernel/journal-kernel.txt"].note
    assert sources["kernel/journal-kernel.txt"].source.startswith("journalctl -k -b")


def test_dmesg_when_there_is_no_journal(tmp_path):
    result = collect_linux_kernel(tmp_path, {"kernel/dmesg.txt": "linux/dmesg-iso.txt"})
    facts = result.facts
    assert facts["source"] == "dmesg"
    assert facts["oom_kills"][0]["process"] == "java" and facts["oom_kills"][0]["cgroup"] is True
    assert facts["segfaults"] == [{"time": "2024-03-14T09:44:02+00:00", "process": "calc", "pid": 9120,
                                   "signal": "SIGFPE", "kind": "trap divide error", "address": None,
                                   "module": "soffice.bin"}]
    assert facts["io_error_devices"] == {"ata2.00": 1}
    assert facts["driver_error_count"] == 1  # the hung task


def test_clean_and_unknown_previous_shutdowns():
    clean = (FIXTURES / "linux" / "previous-boot-end-clean.txt").read_text().splitlines()
    assert previous_shutdown_linux(clean)["clean"] is True
    assert previous_shutdown_linux(["-- No entries --"])["clean"] is None


def test_kernel_log_of_this_pc_runs_or_says_why_not(tmp_path):
    report = collect(CollectOptions(categories={"kernel"}), tmp_path / "stage", platform="linux", now=NOW)
    result = report.result("kernel")
    assert result.status is CollectorStatus.OK, result.error
    item = next(i for i in result.items if i.path in ("kernel/dmesg.txt", "kernel/journal-kernel.txt"))
    if item.status is ItemStatus.OK:
        assert result.facts["source"] in ("dmesg", "journald") and result.facts["lines"] > 0
    else:
        assert result.facts["source"] is None and result.facts["note"]


def test_unreadable_kernel_log_is_an_error_item_not_a_failure(make_ctx):
    from tests.agent.diagnostics.conftest import FixtureRunner

    runner = FixtureRunner([("dmesg", "", "linux/dmesg-iso.txt", 1)])  # dmesg: read kernel buffer failed
    ctx = make_ctx("linux", runner, category="kernel", env={})
    facts = KernelCollector().collect(ctx)
    assert facts["source"] is None and "error" in facts["note"]


def test_windows_system_log_shutdowns_disk_and_driver_errors(tmp_path, windows_runner, windows_env):
    report = collect(CollectOptions(categories={"kernel"}), tmp_path / "stage", platform="windows",
                     command_runner=windows_runner, which=windows_runner.which, env=windows_env, now=NOW)
    facts = report.result("kernel").facts
    assert facts["unexpected_shutdown_count"] == 2  # Kernel-Power 41 and EventLog 6008
    assert facts["previous_boot"]["clean"] is False
    assert facts["previous_boot"]["reason"].startswith("EventLog event 6008: The previous system shutdown")
    assert [e["id"] for e in facts["disk_errors"]] == [7] and facts["io_error_count"] == 1
    assert [e["id"] for e in facts["driver_errors"]] == [7000]
    assert [e["id"] for e in facts["other_errors"]] == [1014]
    assert facts["disk_errors"][0]["time"] == "2024-03-14T10:20:41+00:00"


def test_macos_panics_and_previous_shutdown_cause(tmp_path, darwin_runner):
    panics = tmp_path / "DiagnosticReports"
    shutil.copytree(FIXTURES / "darwin" / "panics", panics)
    recent = panics / "Kernel-2024-03-13-173107.panic"
    os.utime(recent, (NOW.timestamp() - 86400, NOW.timestamp() - 86400))
    old = panics / "old-2024-01-02-101010.panic"
    os.utime(old, (NOW.timestamp() - 72 * 86400, NOW.timestamp() - 72 * 86400))
    report = collect(CollectOptions(), tmp_path / "stage", platform="darwin", command_runner=darwin_runner,
                     which=darwin_runner.which, env={"HOME": str(tmp_path)}, home=tmp_path, now=NOW,
                     collectors=[KernelCollector(panic_dirs=(panics,))])
    facts = report.result("kernel").facts
    assert facts["kernel_panic_count"] == 1
    assert facts["kernel_panics"][0]["panic"].startswith("panic(cpu 2 caller 0xfffffe0014b2c3d4): watchdog timeout")
    assert facts["previous_boot"] == {"clean": False, "reason": "unknown (often a power problem)",
                                      "shutdown_cause": -128}
    assert (tmp_path / "stage" / "kernel" / "panics" / recent.name).is_file()


def test_panic_and_shutdown_parsers_on_older_formats():
    assert parse_panic_report('panic(cpu 0 caller 0x1): "a freed zone element"\n') == \
        'panic(cpu 0 caller 0x1): "a freed zone element"'
    assert parse_mac_shutdown_cause("Previous shutdown cause: 5") == {"code": 5, "clean": True,
                                                                       "reason": "normal shutdown"}
    assert parse_mac_shutdown_cause("nothing") is None


def test_kernel_log_parser_ignores_ordinary_lines():
    facts = parse_kernel_log(["[    1.23] EXT4-fs (vda): mounted filesystem", "", "-- Boot 1a2b --"])
    assert facts["oom_kill_count"] == facts["segfault_count"] == facts["io_error_count"] == 0
