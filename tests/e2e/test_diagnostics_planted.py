"""`helpline share --output` for real on a PC with problems planted: a full tmpfs and a file system
out of inodes (real mounts, root only), kernel-log lines (an OOM kill, segfaults, disk I/O errors)
and a stopped print queue (recorded outputs served through HELPLINE_DIAG_FIXTURES, since this
machine has neither a journal nor a CUPS scheduler), likewise a disk failing its SMART check, an
unsynchronised clock, compositor warnings and a boot without a shutdown in the login records. The triage view and summary.json name each one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.bundle.summary import attention_lines
from protocol.archive import inspect_archive
from tests.support.tmpfs import full_and_starved_tmpfs

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "agent" / "diagnostics" / "fixtures"
ANSWERS = ["--what", "Labels do not print and Firefox vanished", "--since", "since this morning",
           "--tried", "restarted the printer"]


@pytest.fixture
def planted_mounts(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with full_and_starved_tmpfs(tmp_path) as mounts:
        yield mounts


def recorded_outputs(tmp_path: Path) -> Path:
    root = tmp_path / "recorded"
    for relpath, fixture in {
        "kernel/journal-kernel.txt": "linux/journal-kernel.txt",
        "kernel/previous-boot-errors.txt": "linux/previous-boot-errors.txt",
        "kernel/previous-boot-end.txt": "linux/previous-boot-end.txt",
        "printers/lpstat-t.txt": "linux/lpstat-t.txt",
        "printers/lpstat-l-p.txt": "linux/lpstat-l-p.txt",
        "printers/cups-error_log.txt": "linux/cups-error_log.txt",
        "clock/timedatectl.txt": "linux/timedatectl-show.txt",
        "storage/lsblk.json": "linux/lsblk.json",
        "storage/smartctl-sda.txt": "linux/smartctl-sda.txt",
        "storage/smartctl-nvme0n1.txt": "linux/smartctl-nvme0n1.txt",
        "display/journal-compositor.txt": "linux/journal-compositor.txt",
        "display/last.txt": "linux/last-x.txt",
    }.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / relpath)
    return root


def test_share_names_every_planted_problem(make_pc, tmp_path, planted_mounts):
    full, starved = planted_mounts
    target = tmp_path / "out" / "diag.tar.gz"
    out = make_pc("troubled").ok("share", "--yes", "--output", str(target), *ANSWERS,
                                 env={"HELPLINE_DIAG_FIXTURES": str(recorded_outputs(tmp_path))}).stdout
    assert "Saved to" in out

    listing = inspect_archive(target)
    summary_name = next(name for name in listing.names() if name.endswith("summary.json"))
    summary = json.loads(listing.read_member(summary_name, 4 * 1024 * 1024))
    report_name = next(name for name in listing.names() if name.endswith("report.html"))
    report = listing.read_member(report_name, 16 * 1024 * 1024).decode()
    lines = attention_lines(summary)
    assert lines == summary["attention"]

    def named(prefix: str) -> str:
        found = [line for line in lines if line.startswith(prefix)]
        assert found, f"no attention line starts with {prefix!r}: {lines}"
        return found[0]

    # Kernel log (recorded): the one-off OOM kill comes first, crashes by signal name, disk errors.
    assert lines[0] == named("Out of memory: the kernel killed firefox (pid 39211)")
    assert named("python3 (pid 48211) crashed with SIGSEGV in libgtk-3.so.0.2404.29")
    assert named("evolution (pid 51044) crashed with SIGSEGV")
    assert named("3 disk I/O error(s) in the kernel log (sdb, sdb1)")
    assert named("The last shutdown was not clean")
    # Real mounts on this machine.
    assert named(f"tmpfs {full} is 100 % full")
    assert named(f"File system {starved} is out of inodes (100 % used)")
    # A failing disk, printing and the clock (recorded).
    assert named("Disk sda fails its health check (SMART)")
    assert named("Printer Zebra_ZD420: queue stopped: Filter failed")
    assert named("The clock is not synchronised")
    # Login records (recorded): a boot that ended without a shutdown.
    assert named("1 shutdown(s) without an orderly shutdown in the login records")
    for line in lines:
        assert line.replace("&", "&amp;").replace("'", "&#x27;").replace('"', "&quot;") in report or line in report

    assert summary["kernel"]["oom_kills"][0]["process"] == "firefox"
    assert {s["signal"] for s in summary["kernel"]["segfaults"]} == {"SIGSEGV"}
    assert str(full) in {m["mount"] for m in summary["tmpfs_full"]}
    assert str(starved) in {m["mount"] for m in summary["inode_full"]}
    assert summary["printers"]["problems"] == [{"printer": "Zebra_ZD420", "problem": "queue stopped: Filter failed"}]
    assert summary["clock"]["synchronized"] is False
    assert summary["storage"]["failing"] == ["sda"]
    assert summary["display"]["compositor_warnings"] == 3
    assert summary["display"]["login"]["unclean_shutdown_count"] == 1
    assert summary["answers"] == {"what_happened": "Labels do not print and Firefox vanished",
                                  "since_when": "since this morning", "already_tried": "restarted the printer"}
