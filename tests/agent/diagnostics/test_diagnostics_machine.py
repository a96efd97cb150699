"""The netconfig, updates, devices and storage collectors on recorded outputs of all three systems
(fixtures/, served to the Linux collectors through HELPLINE_DIAG_FIXTURES), and on this PC for real."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.diagnostics import collect
from agent.diagnostics.collectors.devices import dmi_from_sysfs, parse_lspci
from agent.diagnostics.collectors.netconfig import parse_firewall_rules, split_nmcli
from agent.diagnostics.collectors.storage import parse_smartctl_health
from agent.diagnostics.collectors.updates import (
    half_installed,
    parse_apt_history,
    parse_dnf_history,
    without_routine_status,
    without_settled_packages,
)
from agent.diagnostics.context import RECORDED_OUTPUTS_ENV, CollectOptions
from agent.diagnostics.model import CollectorStatus

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2024, 3, 14, 12, 0, tzinfo=timezone.utc)


def recorded_linux(tmp_path: Path, category: str, files: dict[str, str]) -> dict:
    root = tmp_path / "recorded"
    for relpath, fixture in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / relpath)
    env = {**os.environ, RECORDED_OUTPUTS_ENV: str(root)}
    result = collect(CollectOptions(categories={category}), tmp_path / "stage", platform="linux", env=env,
                     now=NOW).result(category)
    assert result.status is CollectorStatus.OK, result.error
    return result.facts


def windows(tmp_path, runner, env, category: str) -> dict:
    return collect(CollectOptions(categories={category}), tmp_path / "stage", platform="windows",
                   command_runner=runner, which=runner.which, env=env, now=NOW).result(category).facts


def darwin(tmp_path, runner, category: str) -> dict:
    return collect(CollectOptions(categories={category}), tmp_path / "stage", platform="darwin",
                   command_runner=runner, which=runner.which, env={"HOME": str(tmp_path)}, home=tmp_path,
                   now=NOW).result(category).facts


@pytest.mark.parametrize("category", ["netconfig", "updates", "devices", "storage"])
def test_runs_on_this_pc(tmp_path, category):
    result = collect(CollectOptions(categories={category}), tmp_path / "stage", platform="linux",
                     now=NOW).result(category)
    assert result.status is CollectorStatus.OK, result.error
    assert all(item.note for item in result.items if item.status.value in ("not_found", "skipped", "denied"))


# -- netconfig ---------------------------------------------------------------------------


def test_linux_networkmanager_wifi_hosts_and_firewall(tmp_path):
    facts = recorded_linux(tmp_path, "netconfig", {
        "netconfig/nmcli-general.txt": "linux/nmcli-general.txt",
        "netconfig/nmcli-devices.txt": "linux/nmcli-devices.txt",
        "netconfig/nmcli-wifi.txt": "linux/nmcli-wifi.txt",
        "netconfig/hosts.txt": "linux/hosts.txt",
        "netconfig/nft-ruleset.txt": "linux/nft-ruleset.txt",
    })
    assert facts["networkmanager"] == {"running": True, "state": "connected (site only)", "connectivity": "limited",
                                       "networking": True, "wifi_radio": True}
    assert facts["wifi"] == {"ssid": "Office WLAN", "signal_percent": 28, "security": "WPA2 802.1X", "channel": "36"}
    assert [d["device"] for d in facts["devices"]] == ["wlp0s20f3", "enp0s31f6", "docker0"]  # loopback left out
    assert facts["hosts"] == [{"address": "10.20.0.99", "names": ["fileserver.corp.example.com", "fileserver"]}]
    assert facts["firewall"] == {"backend": "nftables", "rule_count": 3, "input_policy": "drop"}


def test_nmcli_escapes_and_iptables():
    assert split_nmcli(r"no:Guest\:Lobby:72") == ["no", "Guest:Lobby", "72"]
    rules = parse_firewall_rules("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n",
                                 "iptables")
    assert rules == {"backend": "iptables", "rule_count": 1, "input_policy": "drop"}


def test_windows_wlan_and_firewall(tmp_path, windows_runner, windows_env):
    facts = windows(tmp_path, windows_runner, windows_env, "netconfig")
    assert facts["wifi"]["ssid"] == "Office WLAN" and facts["wifi"]["signal_percent"] == 31
    assert facts["wifi"]["security"] == "WPA2-Enterprise" and facts["wifi"]["radio"] == "802.11ax"
    assert facts["firewall"] == {"backend": "windows-firewall", "enabled": False,
                                 "profiles": {"domain": True, "private": True, "public": False}}


def test_macos_wifi_and_firewall(tmp_path, darwin_runner):
    facts = darwin(tmp_path, darwin_runner, "netconfig")
    assert facts["wifi"] == {"ssid": "Office WLAN", "signal_percent": None, "state": "connected"}
    assert facts["firewall"] == {"backend": "application-firewall", "enabled": True}


# -- updates ------------------------------------------------------------------------------


def test_linux_apt_history_holds_and_broken_packages(tmp_path):
    facts = recorded_linux(tmp_path, "updates", {
        "updates/apt-history.log": "linux/apt-history.log",
        "updates/dpkg.log": "linux/dpkg.log",
        "updates/dpkg-status.txt": "linux/dpkg-status.txt",
        "updates/dpkg-audit.txt": "linux/dpkg-audit.txt",
    })
    assert facts["manager"] == "apt"
    newest = facts["recent"][0]
    assert newest["time"] == "2024-03-13 17:02:11" and newest["command"] == "/usr/bin/unattended-upgrade"
    assert newest["actions"] == {"upgrade": 3} and newest["packages"] == ["libgtk-3-0", "firefox-esr", "libc6"]
    assert newest["error"] == "Sub-process /usr/bin/dpkg returned an error code (1)"
    assert facts["failed"] == [newest]
    assert facts["held"] == ["linux-image-amd64"]
    assert facts["broken"] == ["firefox-esr"]


def test_apt_history_install_counts_and_dpkg_log():
    first = parse_apt_history((FIXTURES / "linux" / "apt-history.log").read_text())[0]
    assert first["actions"] == {"install": 2} and first["error"] is None
    assert half_installed("2024-03-13 17:02:21 status half-configured libc6:amd64 2.36\n") == ["libc6"]


DPKG_RUN = """\
2024-03-13 17:02:19 startup archives unpack
2024-03-13 17:02:20 upgrade libc6:amd64 2.36-9+deb12u4 2.36-9+deb12u5
2024-03-13 17:02:20 status half-configured libc6:amd64 2.36-9+deb12u4
2024-03-13 17:02:21 status unpacked libc6:amd64 2.36-9+deb12u5
2024-03-13 17:02:22 configure libc6:amd64 2.36-9+deb12u5 <none>
2024-03-13 17:02:23 status installed libc6:amd64 2.36-9+deb12u5
2024-03-13 17:02:24 remove oldlib:i386 1.0 <none>
2024-03-13 17:02:24 status config-files oldlib:i386 1.0
2024-03-13 17:02:25 status not-installed oldlib:i386 <none>
2024-03-13 17:02:26 upgrade vlc:amd64 3.0.20 3.0.21
2024-03-13 17:02:26 status half-installed vlc:amd64 3.0.20
2024-03-13 17:02:27 status unpacked vlc:amd64 3.0.21
2024-03-13 17:02:28 status half-configured vlc:amd64 3.0.21
2024-03-13 17:02:29 trigproc man-db:amd64 2.11.2-2 <none>
2024-03-13 17:02:29 status triggers-pending man-db:amd64 2.11.2-2
[... helpline: 1000 bytes omitted here; kept the first 10 and the last 20 bytes ...]
"""


def test_dpkg_log_keeps_the_changes_and_what_a_broken_upgrade_left():
    kept, dropped = without_routine_status(DPKG_RUN)
    assert dropped == 7
    assert kept.splitlines() == [
        "2024-03-13 17:02:19 startup archives unpack",
        "2024-03-13 17:02:20 upgrade libc6:amd64 2.36-9+deb12u4 2.36-9+deb12u5",
        "2024-03-13 17:02:22 configure libc6:amd64 2.36-9+deb12u5 <none>",
        "2024-03-13 17:02:24 remove oldlib:i386 1.0 <none>",
        "2024-03-13 17:02:26 upgrade vlc:amd64 3.0.20 3.0.21",
        "2024-03-13 17:02:28 status half-configured vlc:amd64 3.0.21",
        "2024-03-13 17:02:29 trigproc man-db:amd64 2.11.2-2 <none>",
        "2024-03-13 17:02:29 status triggers-pending man-db:amd64 2.11.2-2",
        "[... helpline: 1000 bytes omitted here; kept the first 10 and the last 20 bytes ...]",
    ]
    assert half_installed(DPKG_RUN) == half_installed(kept) == ["vlc"]
    assert without_routine_status("") == ("", 0)
    crlf = DPKG_RUN.replace("\n", "\r\n")
    assert without_routine_status(crlf)[0] == kept.replace("\n", "\r\n")


def staged_update(tmp_path: Path, name: str, recorded: str):
    """The updates collector run on one recorded file: its result, that file's item and what it staged."""
    root = tmp_path / "recorded" / "updates"
    root.mkdir(parents=True)
    (root / name).write_text(recorded)
    env = {**os.environ, RECORDED_OUTPUTS_ENV: str(tmp_path / "recorded")}
    result = collect(CollectOptions(categories={"updates"}), tmp_path / "stage", platform="linux", env=env,
                     now=NOW).result("updates")
    item = next(i for i in result.items if i.path == f"updates/{name}")
    return result, item, (tmp_path / "stage" / "updates" / name).read_text()


def test_the_staged_dpkg_log_says_what_was_left_out(tmp_path):
    result, item, staged = staged_update(tmp_path, "dpkg.log", DPKG_RUN)
    assert staged == without_routine_status(DPKG_RUN)[0] and item.size == len(staged.encode())
    assert "7 routine status lines left out" in item.note and item.source == "/var/log/dpkg.log"
    assert result.facts["broken"] == ["vlc"]


def test_dnf_history_flags_errors():
    rows = parse_dnf_history((FIXTURES / "linux" / "dnf-history.txt").read_text())
    assert [(r["id"], r["packages"], r["error"]) for r in rows] == [(14, 34, True), (13, 5, False)]


def test_windows_update_history(tmp_path, windows_runner, windows_env):
    facts = windows(tmp_path, windows_runner, windows_env, "updates")
    assert facts["recent"][0]["result"] == "failed" and facts["recent"][0]["hresult"] == "0x80240017"
    assert [f["title"][:7] for f in facts["failed"]] == ["2024-03"]
    assert facts["recent"][1]["result"] == "succeeded"


def test_macos_softwareupdate_history(tmp_path, darwin_runner):
    facts = darwin(tmp_path, darwin_runner, "updates")
    assert facts["recent"][0] == {"title": "macOS Sonoma 14.4.1", "version": "14.4.1", "time": "03/13/2024, 09:12:03"}


# -- devices ------------------------------------------------------------------------------


def test_linux_identity_pci_drivers_and_usb(tmp_path):
    facts = recorded_linux(tmp_path, "devices", {
        "devices/dmidecode.txt": "linux/dmidecode.txt",
        "devices/lspci-k.txt": "linux/lspci-k.txt",
        "devices/lsusb.txt": "linux/lsusb.txt",
    })
    assert facts["identity"] == {"manufacturer": "Dell Inc.", "product": "Latitude 7420", "version": "Not Specified",
                                 "serial": "7KQ2M4L", "family": "Latitude",
                                 "bios": {"vendor": "Dell Inc.", "version": "1.31.1", "date": "01/17/2024"}}
    assert facts["problems"] == [{"device": "Intel Corporation Wi-Fi 6 AX201 (rev 20)", "class": "Network controller",
                                  "problem": "no driver in use (could use iwlwifi)"}]
    assert [d["id"] for d in facts["usb"]] == ["0a5c:5843", "046d:c52b", "0a5f:0164"]  # root hubs left out


def test_lspci_of_this_pc_and_sysfs_fallback(tmp_path):
    if shutil.which("lspci"):
        import subprocess
        text = subprocess.run(["lspci", "-k"], capture_output=True, text=True, timeout=10).stdout
        assert len(parse_lspci(text)) == len([line for line in text.splitlines() if line and line[0] != "\t"])
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "sys_vendor").write_text("LENOVO\n")
    (dmi / "bios_version").write_text("N32ET86W (1.62 )\n")
    assert dmi_from_sysfs(dmi)["manufacturer"] == "LENOVO"
    assert dmi_from_sysfs(dmi)["bios"]["version"] == "N32ET86W (1.62 )"
    assert dmi_from_sysfs(tmp_path / "none") is None


def test_windows_bios_and_failed_devices(tmp_path, windows_runner, windows_env):
    facts = windows(tmp_path, windows_runner, windows_env, "devices")
    assert facts["identity"]["bios"] == {"vendor": "Dell Inc.", "version": "1.31.1", "date": "2024-01-17"}
    assert facts["problems"] == [{"device": "ZDesigner ZD420-203dpi ZPL", "class": "Printer",
                                  "problem": "code 28: no driver installed"}]


def test_macos_usb_devices(tmp_path, darwin_runner):
    facts = darwin(tmp_path, darwin_runner, "devices")
    assert [d["name"] for d in facts["usb"]] == ["USB Receiver", "ZTC ZD420-203dpi ZPL"]


# -- storage ------------------------------------------------------------------------------


def test_linux_smart_luks_lvm_and_a_stale_fstab_entry(tmp_path):
    facts = recorded_linux(tmp_path, "storage", {
        "storage/lsblk.json": "linux/lsblk.json",
        "storage/fstab.txt": "linux/fstab.txt",
        "storage/smartctl-sda.txt": "linux/smartctl-sda.txt",
        "storage/smartctl-nvme0n1.txt": "linux/smartctl-nvme0n1.txt",
    })
    assert facts["smart"] == [{"disk": "sda", "model": "WDC WD10EZEX-08W", "health": "FAILED"},
                              {"disk": "nvme0n1", "model": "BC711 NVMe SK hynix 512GB", "health": "PASSED"}]
    assert facts["failing"] == ["sda"]
    assert facts["encrypted"] == ["nvme0n1p2", "nvme0n1p2_crypt"]
    assert facts["lvm"] == ["nvme0n1p2_crypt", "vg0-root", "vg0-swap"]
    # /mnt/backup's disk is gone; /mnt/usb is nofail and the CIFS share is not a block device.
    assert [m["mountpoint"] for m in facts["fstab_missing"]] == ["/mnt/backup"]


def test_smartctl_wording():
    assert parse_smartctl_health("SMART Health Status: OK") == "PASSED"
    assert parse_smartctl_health("Read Device Identity failed") is None


def test_windows_disk_health_and_bitlocker(tmp_path, windows_runner, windows_env):
    facts = windows(tmp_path, windows_runner, windows_env, "storage")
    assert facts["failing"] == ["WDC WD10EZEX-08WN4A0"]
    assert facts["encrypted"] == ["C:"]
    assert [(v["mountpoint"], v["protection"]) for v in facts["bitlocker"]] == [("C:", "On"), ("D:", "Off")]


def test_macos_smart_and_filevault(tmp_path, darwin_runner):
    facts = darwin(tmp_path, darwin_runner, "storage")
    assert facts["filevault"] is True and facts["failing"] == []
    assert facts["smart"] == [{"disk": "disk3", "model": "APPLE SSD AP0512Q", "health": "PASSED"}]


DPKG_STATUS_LIST = """\
install ok installed\tadduser
hold ok installed\tlinux-image-amd64
install ok installed\tfirefox-esr
install ok half-configured\tvlc
deinstall ok config-files\toldlib
install ok unpacked\tlibc6
purge ok installed\tflash
install ok installed\tzsh
"""


def test_the_staged_package_status_list_keeps_only_the_odd_ones_out(tmp_path):
    kept, dropped = without_settled_packages(DPKG_STATUS_LIST)
    assert dropped == 3
    assert [line.split("\t")[1] for line in kept.splitlines()] == [
        "linux-image-amd64", "vlc", "oldlib", "libc6", "flash"]
    assert without_settled_packages("") == ("", 0)

    result, item, staged = staged_update(tmp_path, "dpkg-status.txt", DPKG_STATUS_LIST)
    assert staged == kept and item.size == len(staged.encode())
    assert "3 packages installed as asked left out" in item.note
    assert result.facts["held"] == ["linux-image-amd64"]  # read from the whole list, before it was cut
