"""Clock, printers, failed services and DNS/DHCP failures read from other spellings of the same tools
(timedatectl of systemd 219 to 255, chronyc, w32tm; lpstat of CUPS 1.x and 2.x, every CUPS log level;
systemctl with and without marks, legend or JSON; dhclient, dhcpcd, NetworkManager, systemd-networkd,
systemd-resolved and Windows DNS/DHCP client events), written from the documented formats
(fixtures/variants), and the triage lines they give, with the healthy spellings that must give none."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.bundle.summary import build_summary
from agent.diagnostics.collectors.clock import parse_chrony_tracking, parse_timedatectl, parse_w32tm
from agent.diagnostics.collectors.logs import normalise_line
from agent.diagnostics.collectors.printers import parse_cups_error_log, parse_lpstat, printer_problems
from agent.diagnostics.collectors.services import parse_unit_list
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus

VARIANTS = Path(__file__).parent / "fixtures" / "variants"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
UNSYNCED = "The clock is not synchronised: sign-ins and certificates may fail"
UNSYNCED_NTP_OFF = "The clock is not synchronised (NTP is off): sign-ins and certificates may fail"


def attention(platform: str = "linux", **facts: dict) -> list[str]:
    results = [CollectorResult(name, name, CollectorStatus.OK, 0.1, [], value) for name, value in facts.items()]
    return build_summary(CollectionReport(NOW, NOW, platform, 20.0, results))["attention"]


def variant(name: str) -> str:
    return (VARIANTS / name).read_text()


@pytest.mark.parametrize("text, synchronized, ntp, line", [
    (variant("timedatectl-systemd219.txt"), False, True, UNSYNCED),
    (variant("timedatectl-systemd239.txt"), False, False, UNSYNCED_NTP_OFF),
    (variant("timedatectl-systemd255.txt"), False, False, UNSYNCED_NTP_OFF),
    (variant("timedatectl-systemd255-healthy.txt"), True, True, None),
    ("Timezone=Europe/Berlin\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=no\n", False, True, UNSYNCED),
    ("Timezone=Etc/UTC\nCanNTP=no\nNTP=no\nNTPSynchronized=yes\n", True, False, None),
    ("      Local time: Tue 2026-12-01 10:00:00 UTC\n  Network time on: no\nNTP synchronized: no\n", False, False,
     UNSYNCED_NTP_OFF),                                                                  # systemd 232-238
])
def test_timedatectl_of_every_systemd(text, synchronized, ntp, line):
    sync = parse_timedatectl(text)
    assert (sync["synchronized"], sync["ntp_enabled"]) == (synchronized, ntp)
    lines = attention(clock={"sync": sync, "sessions": [], "session_count": 0})
    assert lines == ([line] if line else [])


def test_timedatectl_status_keeps_the_zone_name():
    assert parse_timedatectl(variant("timedatectl-systemd219.txt"))["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize("parse, text, synchronized, line", [
    (parse_chrony_tracking, variant("chronyc-tracking-unsynchronised.txt"), False, UNSYNCED),
    (parse_chrony_tracking, variant("chronyc-tracking-leap-insert.txt"), True, None),  # a leap second is pending
    (parse_w32tm, variant("w32tm-service-stopped.txt"), False, UNSYNCED_NTP_OFF),
    (parse_w32tm, variant("w32tm-domain-synced.txt"), True, None),
])
def test_chrony_and_w32tm(parse, text, synchronized, line):
    sync = parse(text)
    assert sync["synchronized"] is synchronized
    assert attention(clock={"sync": sync}) == ([line] if line else [])


def _printer_lines(text: str) -> list[str]:
    parsed = parse_lpstat(text)
    facts = {**parsed, "problems": printer_problems(parsed["printers"], parsed["scheduler_running"])}
    return attention(printers=facts)


def test_lpstat_of_cups2_and_cups1_names_queues_that_cannot_print():
    parsed = parse_lpstat(variant("lpstat-t-cups2.txt"))
    assert parsed["jobs"] == 2 and parsed["default"] == "HP_LaserJet_4"
    assert _printer_lines(variant("lpstat-t-cups2.txt")) == [
        "Printer HP_LaserJet_4: The printer is not responding.",
        "Printer Brother_HL-L2350DW: Unable to connect to printer; will retry in 30 seconds",
        "Printer Canon_iR-ADV_C3530: queue stopped: Paused",
    ]  # Kyocera_ECOSYS is idle and enabled: nothing to say
    queues = {p["name"]: p for p in parse_lpstat(variant("lpstat-t-cups1.txt"))["printers"]}
    assert queues["Samsung_M2020"]["state"] == "idle" and queues["Samsung_M2020"]["enabled"] is True
    assert _printer_lines(variant("lpstat-t-cups1.txt")) == ["Printer Xerox_6515: queue stopped: reason unknown"]


def test_lpstat_without_a_scheduler():
    assert parse_lpstat(variant("lpstat-scheduler-down.txt"))["scheduler_running"] is False
    assert _printer_lines(variant("lpstat-scheduler-down.txt")) == [
        "Printing: the print service (CUPS) is not running"]


@pytest.mark.parametrize("alerts, line", [
    ("media-jam-error, toner-low-warning", "Printer P: alerts media-jam-error"),
    ("offline-report", "Printer P: alerts offline-report"),
    ("toner-low-warning", None),
    ("none", None),
])
def test_lpstat_alerts_that_stop_printing(alerts, line):
    text = f"printer P is idle.  enabled since Tue 01 Dec 2026 08:00:00 AM UTC\n\tAlerts: {alerts}\n"
    assert _printer_lines(text) == ([line] if line else [])


def test_cups_error_log_keeps_every_grave_level():
    errors = parse_cups_error_log(variant("cups-error_log-levels.txt"))
    assert [e["message"][:24] for e in errors] == ["[Job 17] Unable to conne", "[Job 17] Backend returne",
                                                   "Unable to open log file ", "Scheduler shutting down "]
    assert errors[0]["time"] == "01/Dec/2026:09:00:31.123456 +0100"


@pytest.mark.parametrize("fixture, units", [
    ("systemctl-failed-systemd219.txt", ["cups.service", "NetworkManager-wait-online.service"]),
    ("systemctl-failed-no-utf8.txt", ["snapd.service", "fwupd-refresh.service", "mnt-share.mount"]),
    ("systemctl-failed.json", ["gdm.service", "systemd-timesyncd.service"]),
    ("systemctl-failed-none.txt", []),
])
def test_failed_units_in_every_systemctl_spelling(fixture, units):
    failed = parse_unit_list(variant(fixture).splitlines())
    assert [u["unit"] for u in failed] == units
    assert all(u["active"] == "failed" for u in failed)
    services = {"systemd": True, "checked": True, "failed": failed, "enabled_not_running": [], "service_count": 90}
    expected = [f"{len(units)} failed service(s): {', '.join(units)}"] if units else []
    assert attention(services=services) == expected


@pytest.mark.parametrize("line, kind", [
    ("2026-12-01T10:00:00+0000 pc NetworkManager[812]: <warn>  [1764583200.1234] dhcp4 (wlp2s0): request timed out",
     "DHCP"),
    ("2026-12-01T10:00:00+0000 pc NetworkManager[812]: <warn>  [1.2] dhcp6 (eth0): request timed out", "DHCP"),
    ("Dec  1 10:00:00 pc dhclient[901]: No DHCPOFFERS received.", "DHCP"),
    ("Dec  1 10:00:00 pc dhclient[901]: DHCPNAK from 10.0.0.1 (xid=0x1a2b3c4d)", "DHCP"),
    ("Dec  1 10:00:00 pc dhcpcd[650]: eth0: using IPv4LL address 169.254.12.34", "DHCP"),
    ("2026-12-01T10:00:00+0000 pc systemd-networkd[500]: eth0: Could not acquire DHCPv4 lease, falling back to IPv4LL",
     "DHCP"),
    ("Microsoft-Windows-Dhcp-Client 1001: Your computer was not assigned an address from the network (by the DHCP "
     "Server) for the Network Card with network address 0x00155D012345.", "DHCP"),
    ("Microsoft-Windows-Dhcp-Client 1002: The IP address lease 10.0.0.50 for the Network Card with network address "
     "0x00155D012345 has been denied by the DHCP server 10.0.0.1 (The DHCP Server sent a DHCPNACK message).", "DHCP"),
    ("Microsoft-Windows-DNS-Client 1014: Name resolution for the name wpad timed out after none of the configured "
     "DNS servers responded.", "DNS"),
    ("2026-12-01T10:00:00+0000 pc systemd-resolved[600]: Server returned error SERVFAIL, mitigating potential DNS "
     "violation DVE-2018-0001, retrying transaction with reduced feature level UDP.", "DNS"),
    ("2026-12-01T10:00:00+0000 pc evolution[1200]: Temporary failure in name resolution", "DNS"),
    ("2026-12-01T10:00:00+0000 pc apt[1300]: Temporary failure resolving 'archive.ubuntu.com'", "DNS"),
    ("2026-12-01T10:00:00+0000 pc curl[1]: Could not resolve host: intranet.corp.example.com", "DNS"),
    # Healthy lines that name DHCP or DNS and are no failure.
    ("2026-12-01T10:00:00+0000 pc NetworkManager[812]: <info>  [1.2] dhcp4 (wlp2s0): activation: beginning "
     "transaction (timeout in 45 seconds)", None),
    ("2026-12-01T10:00:00+0000 pc NetworkManager[812]: <info>  [1.2] dhcp4 (eth0): state changed new lease, "
     "address=10.0.0.5", None),
    ("Dec  1 10:00:00 pc dhcpcd[650]: eth0: no IPv6 Routers available", None),
    ("2026-12-01T10:00:00+0000 pc systemd-resolved[600]: Using degraded feature set UDP instead of EDNS0 for DNS "
     "server 10.0.0.1.", None),
])
def test_dns_and_dhcp_failures_of_every_client(line, kind):
    message = normalise_line(line, has_host=not line.startswith("Microsoft"))
    lines = attention(logs={"since_hours": 24, "top_errors": [{"message": message, "count": 3}]},
                      network={"reachability": []})
    assert lines == ([f"{kind} failure in the log (3×): {message[:160]}"] if kind else [])


@pytest.mark.parametrize("text, health", [
    ("SMART overall-health self-assessment test result: PASSED", "PASSED"),
    ("SMART overall-health self-assessment test result: FAILED!\nDrive failure expected in less than 24 hours.",
     "FAILED"),
    ("SMART Health Status: OK", "PASSED"),                                                  # SAS/SCSI
    ("SMART Health Status: FAILURE PREDICTION THRESHOLD EXCEEDED [asc=5d, ascq=10]", "FAILED"),
    ("SMART overall-health self-assessment test result: UNKNOWN!", None),                   # behind a USB bridge
    ("SMART support is: Unavailable - device lacks SMART capability.", None),
])
def test_smartctl_verdicts_of_ata_nvme_and_scsi(text, health):
    from agent.diagnostics.collectors.storage import parse_smartctl_health
    assert parse_smartctl_health("=== START OF READ SMART DATA SECTION ===\n" + text) == health
    storage = {"smart": [{"disk": "sdb", "health": health}], "failing": ["sdb"] if health == "FAILED" else []}
    failing = "Disk sdb fails its health check (SMART): back up its data now"
    assert (failing in attention(storage=storage)) is (health == "FAILED")


@pytest.mark.parametrize("line, shape", [
    ("python3[4242]: segfault at 0 ip 00007f sp 00007ffd error 4 in libgtk-3.so.0[7f+1000]",
     "python3[<n>]: segfault at <n> ip <n>f sp <hex> error <n> in libgtk-3.so.0[<n>f+<n>]"),
    ("evince[1]: segfault at 8 ip 1 sp 2 error 6 in libc.so.6[7f+195000]",
     "evince[<n>]: segfault at <n> ip <n> sp <n> error <n> in libc.so.6[<n>f+<n>]"),
    ("python3.12[99]: segfault at 0 ip 0 sp 0 error 4 in libpython3.12.so.1.0[7f+1]",
     "python3.12[<n>]: segfault at <n> ip <n> sp <n> error <n> in libpython3.12.so.1.0[<n>f+<n>]"),
    ("ld.so: version 2.35 took 12.5 s for libfoo.so", "ld.so: version <n>.<n> took <n>.<n> s for libfoo.so"),
])
def test_library_names_stay_whole_when_numbers_are_replaced(line, shape):
    assert normalise_line(line) == shape
