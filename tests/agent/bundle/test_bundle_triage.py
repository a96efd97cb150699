"""The triage view names each problem the new collectors find, on its own line and gravest first:
OOM kills, segfaults by signal name (with the crash report's title), full tmpfs and inodes,
stopped print queues, DNS and DHCP failures, an unsynchronised clock; it never says services are
fine when none were checked, carries the user's answers and keeps idle threads out of the top CPU."""

from __future__ import annotations

from datetime import datetime, timezone

from agent.bundle.summary import attention_lines, build_summary
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus

NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)

KERNEL = {
    "source": "journald",
    "oom_kills": [{"time": "2024-03-14T09:55:01+00:00", "pid": 39211, "process": "firefox", "rss_kb": 6123456}],
    "oom_kill_count": 1,
    "segfaults": [{"time": "2024-03-14T09:12:45+00:00", "process": "python3", "pid": 48211, "signal": "SIGSEGV",
                   "module": "libgtk-3.so.0"},
                  {"time": "2024-03-14T09:13:00+00:00", "process": "mail", "pid": 7, "signal": 11, "module": None}],
    "segfault_count": 2,
    "io_error_count": 3, "io_error_devices": {"sdb": 2, "sdb1": 1}, "driver_error_count": 2,
    "previous_boot": {"clean": False, "reason": "the previous boot's journal ends without a shutdown",
                      "error_count": 5},
}
CRASHES = {"recent_count": 1, "copied_reports": [
    {"name": "_usr_bin_python3.12.1000.crash", "executable": "/usr/bin/python3", "signal": "11",
     "title": "python3 crashed with SIGSEGV in gtk_widget_show()", "staged": "crashes/apport.crash"}]}
HARDWARE = {
    "disks": [{"mountpoint": "/", "percent": 40.0, "total": 100, "free": 60}],
    "tmpfs_full": [{"mountpoint": "/run/user/1000", "percent": 100.0, "free": 0}],
    "inode_full": [{"mountpoint": "/srv/mail", "fstype": "ext4", "inodes_percent": 99.2, "inodes_free": 12}],
}
PRINTERS = {"system": "cups", "scheduler_running": True, "printers": [{"name": "Zebra_ZD420", "state": "stopped"}],
            "problems": [{"printer": "Zebra_ZD420", "problem": "queue stopped: Filter failed"}],
            "cups_errors": [{"time": "x", "message": "[Job 41] Job stopped due to filter errors"}],
            "cups_error_count": 1}
CLOCK = {"sync": {"source": "timedatectl", "synchronized": False, "ntp_enabled": True}, "sessions": [],
         "session_count": 0}
LOGS = {"since_hours": 24, "top_errors": [
    {"message": "gnome-shell: JS WARNING: [<n>] reference to undefined property", "count": 4211},
    {"message": "NetworkManager: <error> dhcp4 (wlp0s20f3): request timed out", "count": 12},
    {"message": "systemd-resolved: Temporary failure in name resolution", "count": 3},
    {"message": "kernel: Out of memory: Killed process <n> (firefox)", "count": 1},
]}
NETWORK = {"reachability": [{"target": "intranet.corp.example.com:443", "reachable": False,
                             "dns": {"status": "nxdomain"}, "error": "name not found"}]}


def ok(name: str, facts: dict) -> CollectorResult:
    return CollectorResult(name, name, CollectorStatus.OK, 0.1, [], facts)


def summary_of(*results: CollectorResult, answers=None) -> dict:
    return build_summary(CollectionReport(NOW, NOW, "linux", 20.0, list(results)), answers=answers)


def test_each_problem_has_its_own_attention_line_gravest_first():
    summary = summary_of(ok("kernel", KERNEL), ok("crashes", CRASHES), ok("hardware", HARDWARE),
                         ok("printers", PRINTERS), ok("clock", CLOCK), ok("logs", LOGS), ok("network", NETWORK))
    lines = summary["attention"]
    assert lines[0] == "Out of memory: the kernel killed firefox (pid 39211) at 2024-03-14T09:55:01+00:00"
    assert lines[1] == ("python3 (pid 48211) crashed with SIGSEGV in libgtk-3.so.0 — crash report: "
                        "python3 crashed with SIGSEGV in gtk_widget_show()")
    assert lines[2] == "mail (pid 7) crashed with SIGSEGV"  # a bare 11 becomes its name
    assert "The last shutdown was not clean: the previous boot's journal ends without a shutdown" in lines
    assert "3 disk I/O error(s) in the kernel log (sdb, sdb1)" in lines
    assert "tmpfs /run/user/1000 is 100 % full" in lines
    assert "File system /srv/mail is out of inodes (99.2 % used)" in lines
    assert "Printer Zebra_ZD420: queue stopped: Filter failed" in lines
    assert "The clock is not synchronised: sign-ins and certificates may fail" in lines
    assert any(line.startswith("DHCP failure in the log (12×)") for line in lines)
    assert any(line.startswith("DNS failure in the log (3×)") for line in lines)
    assert "DNS failure: intranet.corp.example.com:443 could not be resolved" in lines
    assert all("Detail 11" not in line and "signal 11" not in line for line in lines)
    # The one-off OOM kill leads the top errors too, ahead of a warning repeated 4211 times.
    assert summary["errors"]["top"][0]["message"].startswith("kernel: Out of memory")
    assert summary["kernel"]["segfaults"][0]["report"] == "python3 crashed with SIGSEGV in gtk_widget_show()"
    assert summary["crashes"]["recent"][0]["detail"] == "SIGSEGV"
    assert summary["tmpfs_full"] == [{"mount": "/run/user/1000", "used_percent": 100.0, "free": 0}]
    assert summary["inode_full"] == [{"mount": "/srv/mail", "used_percent": 99.2, "free": 12}]
    assert summary["printers"]["problems"] == PRINTERS["problems"]
    assert summary["clock"]["synchronized"] is False


def test_a_one_off_oom_kill_stays_in_the_top_five_among_many_warnings():
    noisy = {"failed": [{"unit": f"unit{i}.service"} for i in range(9)], "systemd": True,
             "enabled_not_running": [{"unit": f"late{i}.service"} for i in range(9)], "service_count": 40}
    hardware = {**HARDWARE, "disks": [{"mountpoint": f"/d{i}", "percent": 97.0, "free": 1} for i in range(6)]}
    lines = summary_of(ok("services", noisy), ok("hardware", hardware), ok("kernel", KERNEL))["attention"]
    assert lines[0].startswith("Out of memory: the kernel killed firefox")


def test_services_not_checked_is_not_ok():
    summary = summary_of(ok("services", {"init_system": "tini", "systemd": False, "failed": None,
                                         "enabled_not_running": None, "service_count": None,
                                         "note": "systemd is not the init system (PID 1 is tini); services were "
                                                 "not checked"}))
    assert summary["services"]["checked"] is False
    assert "Services were not checked: systemd is not the init system (PID 1 is tini); services were not checked" \
        in summary["attention"]
    checked = summary_of(ok("services", {"systemd": True, "failed": [], "enabled_not_running": []}))
    assert checked["services"]["checked"] is True and checked["attention"] == []


def test_summary_carries_the_users_answers():
    answers = {"what_happened": "Outlook crashes on start", "since_when": "this morning", "already_tried": "",
               "ignored": "x"}
    assert summary_of(answers=answers)["answers"] == {"what_happened": "Outlook crashes on start",
                                                      "since_when": "this morning", "already_tried": None}
    assert summary_of()["answers"] is None


def test_idle_kernel_threads_do_not_pad_the_top_cpu_list():
    rows = [{"pid": 2, "name": "kthreadd", "cpu_percent": 0.0, "rss": 0, "cmdline": None},
            {"pid": 14, "name": "rcu_sched", "cpu_percent": None, "rss": 0, "cmdline": None},
            {"pid": 0, "name": "System Idle Process", "cpu_percent": 97.0, "rss": 8, "cmdline": None},
            {"pid": 4242, "name": "firefox", "cpu_percent": 87.5, "rss": 10**9, "cmdline": "firefox"},
            {"pid": 55, "name": "kworker/u16:2", "cpu_percent": 3.1, "rss": 0, "cmdline": None}]
    top = summary_of(ok("processes", {"top_cpu": rows, "top_memory": rows}))["processes"]
    assert [p["name"] for p in top["top_cpu"]] == ["firefox", "kworker/u16:2"]  # a busy kworker is news
    assert len(top["top_memory"]) == 5


def test_windows_and_macos_kernel_facts_reach_the_triage():
    windows = summary_of(ok("kernel", {"unexpected_shutdown_count": 2, "io_error_count": 1,
                                       "io_error_devices": {}, "driver_error_count": 1,
                                       "previous_boot": {"clean": False, "reason": "EventLog event 6008: ..."}}))
    assert "2 unexpected shutdown(s) in the System log" in windows["attention"]
    assert "1 disk I/O error(s) in the kernel log (a disk)" in windows["attention"]
    mac = summary_of(ok("kernel", {"kernel_panics": [{"time": "2024-03-13T16:31:07+00:00",
                                                       "name": "Kernel.panic", "panic": "panic(cpu 2): watchdog"}]}))
    assert mac["attention"][0] == "Kernel panic 2024-03-13T16:31:07+00:00: panic(cpu 2): watchdog"


def test_attention_lines_accept_an_older_summary_without_the_new_sections():
    assert attention_lines({"disk_full": [{"mount": "/", "used_percent": 97}]}) == ["Disk / is 97 % full"]


def test_disk_health_devices_updates_and_wifi_reach_the_triage():
    summary = summary_of(
        ok("storage", {"failing": ["sda"], "smart": [{"disk": "sda", "health": "FAILED"}], "encrypted": ["nvme0n1p2"],
                       "fstab_missing": [{"source": "UUID=77aa", "mountpoint": "/mnt/backup"}]}),
        ok("devices", {"identity": {"manufacturer": "Dell Inc.", "product": "Latitude 7420",
                                    "bios": {"version": "1.31.1", "date": "01/17/2024"}},
                       "problems": [{"device": "Intel Wi-Fi 6 AX201", "problem": "no driver in use"}], "usb": []}),
        ok("updates", {"manager": "apt", "recent": [{"time": "2024-03-13 17:02:11", "command": "unattended-upgrade",
                                                     "error": "dpkg returned an error code (1)"}],
                       "failed": [{"time": "2024-03-13 17:02:11", "command": "unattended-upgrade",
                                   "error": "dpkg returned an error code (1)"}],
                       "held": ["linux-image-amd64"], "broken": ["firefox-esr"]}),
        ok("netconfig", {"networkmanager": {"state": "connected (site only)", "connectivity": "limited"},
                         "wifi": {"ssid": "Office WLAN", "signal_percent": 28}, "hosts": [{}],
                         "firewall": {"backend": "nftables", "rule_count": 3, "input_policy": "drop"}}),
    )
    lines = summary["attention"]
    assert lines[0] == "Disk sda fails its health check (SMART): back up its data now"
    assert "fstab mounts /mnt/backup from a device that is not attached (boot may stall)" in lines
    assert "Device Intel Wi-Fi 6 AX201: no driver in use" in lines
    assert "Broken package(s), half installed: firefox-esr" in lines
    assert "Update failed: unattended-upgrade (dpkg returned an error code (1)) at 2024-03-13 17:02:11" in lines
    assert "NetworkManager reports limited connectivity" in lines
    assert "Wi-Fi signal is weak (28 %) on Office WLAN" in lines
    assert summary["devices"]["product"] == "Latitude 7420" and summary["devices"]["bios_version"] == "1.31.1"
    assert summary["updates"]["held"] == ["linux-image-amd64"]
    assert summary["netconfig"]["firewall"]["input_policy"] == "drop"
    assert summary["storage"]["encrypted"] == ["nvme0n1p2"]


def test_report_page_never_shows_ok_for_services_not_checked():
    from agent.bundle.report_html import render_report

    facts = {"init_system": "tini", "systemd": False, "checked": False, "failed": None,
             "note": "systemd is not the init system (PID 1 is tini); services were not checked"}
    manifest = {"items": [], "collectors": [{"name": "services", "category": "services", "status": "ok"}]}
    page = render_report(manifest, summary_of(ok("services", facts)), {"services": facts})
    section = page.split('id="cat-services"', 1)[1].split("</section>", 1)[0]
    assert "st-not_checked" in section and "st-ok" not in section
    checked = {**facts, "systemd": True, "checked": True, "failed": []}
    page = render_report(manifest, summary_of(ok("services", checked)), {"services": checked})
    assert "st-ok" in page.split('id="cat-services"', 1)[1].split("</section>", 1)[0]
