"""Whether the disks are healthy and how storage is laid out: SMART health, block devices with
their file systems (LVM, LUKS), fstab entries that point nowhere, and disk encryption.

Linux asks ``smartctl -H`` (root only), ``lsblk`` and /etc/fstab; Windows
``Get-PhysicalDisk`` and ``Get-BitLockerVolume``; macOS ``diskutil info /``
and ``fdesetup status``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, parse_colon_pairs, powershell, read_json, read_text, slug

LSBLK = ("lsblk", "-J", "-o", "NAME,TYPE,FSTYPE,SIZE,MOUNTPOINT,UUID,LABEL,MODEL,TRAN")
MAX_SMART_DISKS = 4
DISKUTIL_ROOT = ("diskutil", "info", "/")
FDESETUP = ("fdesetup", "status")
#: fstab file systems that are not block devices (or that may rightly be absent).
_VIRTUAL_FS = {"tmpfs", "proc", "sysfs", "devpts", "devtmpfs", "nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "swap",
               "none", "auto", "efivarfs", "overlay", "bind", "9p", "virtiofs", "securityfs", "cgroup2", "debugfs"}

WINDOWS_STORAGE_SCRIPT = (
    "$disks = @(Get-PhysicalDisk -ErrorAction SilentlyContinue | Select-Object FriendlyName,MediaType,BusType,"
    "@{n='HealthStatus';e={[string]$_.HealthStatus}},@{n='OperationalStatus';e={[string]$_.OperationalStatus}},Size); "
    "try { $bitlocker = @(Get-BitLockerVolume -ErrorAction Stop | Select-Object MountPoint,"
    "@{n='VolumeStatus';e={[string]$_.VolumeStatus}},@{n='ProtectionStatus';e={[string]$_.ProtectionStatus}},"
    "EncryptionPercentage,@{n='LockStatus';e={[string]$_.LockStatus}}); $denied = $null } "
    "catch { $bitlocker = @(); $denied = $_.Exception.Message }; "
    "[pscustomobject]@{PhysicalDisks=$disks; BitLocker=$bitlocker; BitLockerError=$denied} | ConvertTo-Json -Depth 4"
)


def parse_smartctl_health(text: str) -> str | None:
    """Return ``PASSED``, ``FAILED`` or None from ``smartctl -H`` (ATA and NVMe wording)."""
    match = re.search(r"self-assessment test result:\s*(\w+)|SMART Health Status:\s*(\w+)", text)
    if not match:
        return None
    verdict = (match.group(1) or match.group(2)).upper()
    # "UNKNOWN!" (a USB bridge that passes no answer) is no verdict; FAILED and FAILURE are.
    return "PASSED" if verdict in ("PASSED", "OK") else "FAILED" if verdict.startswith("FAIL") else None


def flatten_lsblk(data: Any) -> list[dict[str, Any]]:
    """Flatten ``lsblk -J`` trees into one row per device with its parent's name."""
    rows: list[dict[str, Any]] = []

    def walk(devices: Any, parent: str | None) -> None:
        for device in as_list(devices):
            if not isinstance(device, dict):
                continue
            rows.append({"name": device.get("name"), "type": device.get("type"), "fstype": device.get("fstype"),
                         "size": device.get("size"), "mountpoint": device.get("mountpoint"),
                         "uuid": device.get("uuid"), "label": device.get("label"), "model": device.get("model"),
                         "transport": device.get("tran"), "parent": parent})
            walk(device.get("children"), device.get("name"))

    walk(data.get("blockdevices") if isinstance(data, dict) else None, None)
    return rows


def parse_fstab(text: str) -> list[dict[str, Any]]:
    """Parse /etc/fstab into source, mount point, type and options."""
    entries = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3:
            entries.append({"source": fields[0], "mountpoint": fields[1], "fstype": fields[2],
                            "options": fields[3] if len(fields) > 3 else "defaults"})
    return entries


def missing_fstab_sources(entries: list[dict[str, Any]], devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return fstab entries whose device is not attached (a boot that waits for it, then drops to a shell)."""
    uuids = {d["uuid"] for d in devices if d.get("uuid")}
    labels = {d["label"] for d in devices if d.get("label")}
    names = {f"/dev/{d['name']}" for d in devices if d.get("name")} | {f"/dev/mapper/{d['name']}" for d in devices
                                                                       if d.get("name")}
    missing = []
    for entry in entries:
        source, options = entry["source"], entry["options"].split(",")
        if entry["fstype"] in _VIRTUAL_FS or "nofail" in options or "noauto" in options:
            continue
        key, _, value = source.partition("=")
        present = (value in uuids if key == "UUID" else value in labels if key == "LABEL"
                   else source in names if source.startswith("/dev/") and "/by-" not in source else True)
        if not present:
            missing.append(entry)
    return missing


class StorageCollector(Collector):
    """SMART health, block devices (LVM, encrypted), fstab, BitLocker and FileVault."""

    name = "storage"
    category = "storage"
    description = "Disk health (SMART), block devices with LVM and encrypted volumes, fstab, BitLocker or FileVault."
    platforms = ALL_PLATFORMS
    timeout = 8.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        devices: list[dict[str, Any]] = []
        if ctx.available("storage/lsblk.json", "lsblk"):
            devices = flatten_lsblk(read_json(ctx, ctx.run("storage/lsblk.json", LSBLK, timeout=4)))
        fstab = parse_fstab(read_text(ctx, ctx.copy_file("storage/fstab.txt", "/etc/fstab", max_bytes=64 * 1024))
                            or "")
        smart = []
        disks = [d for d in devices if d["type"] == "disk" and not str(d["name"]).startswith(("zram", "loop", "ram"))]
        for disk in disks[:MAX_SMART_DISKS]:
            relpath = f"storage/smartctl-{slug(str(disk['name']))}.txt"
            if not (ctx.recorded(relpath) or (os.geteuid() == 0 and ctx.which("smartctl"))):
                ctx.note(relpath, f"smartctl -H /dev/{disk['name']}", ItemStatus.SKIPPED,
                         "smartctl needs root (or is not installed)")
                continue
            # smartctl's exit status is a bit mask (2: device open failed, 8: disk failing); the text says which.
            item = ctx.run(relpath, ("smartctl", "-H", f"/dev/{disk['name']}"), timeout=4, ok_codes=range(256))
            smart.append({"disk": disk["name"], "model": disk.get("model"),
                          "health": parse_smartctl_health(read_text(ctx, item) or "")})
        return {
            "devices": devices,
            "encrypted": [d["name"] for d in devices if d.get("fstype") == "crypto_LUKS" or d.get("type") == "crypt"],
            "lvm": [d["name"] for d in devices if d.get("fstype") == "LVM2_member" or d.get("type") == "lvm"],
            "fstab": fstab,
            "fstab_missing": missing_fstab_sources(fstab, devices) if devices else [],
            "smart": smart,
            "failing": [s["disk"] for s in smart if s["health"] == "FAILED"],
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("storage/windows-storage.json", powershell(WINDOWS_STORAGE_SCRIPT), timeout=8))
        data = data if isinstance(data, dict) else {}
        disks = [{"disk": d.get("FriendlyName"), "media": d.get("MediaType"), "bus": d.get("BusType"),
                  "health": d.get("HealthStatus"), "status": d.get("OperationalStatus")}
                 for d in as_list(data.get("PhysicalDisks")) if isinstance(d, dict)]
        volumes = [{"mountpoint": v.get("MountPoint"), "status": v.get("VolumeStatus"),
                    "protection": v.get("ProtectionStatus"), "percent": v.get("EncryptionPercentage"),
                    "lock": v.get("LockStatus")} for v in as_list(data.get("BitLocker")) if isinstance(v, dict)]
        return {
            "devices": disks, "encrypted": [v["mountpoint"] for v in volumes if v["protection"] == "On"],
            "bitlocker": volumes, "bitlocker_note": data.get("BitLockerError"),
            "smart": [{"disk": d["disk"], "model": None, "health": "PASSED" if d["health"] == "Healthy" else "FAILED"}
                      for d in disks if d["health"]],
            "failing": [d["disk"] for d in disks if d["health"] and d["health"] != "Healthy"],
            "fstab": [], "fstab_missing": [], "lvm": [],
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        info = parse_colon_pairs(read_text(ctx, ctx.run("storage/diskutil-info.txt", DISKUTIL_ROOT, timeout=5)) or "")
        vault = read_text(ctx, ctx.run("storage/fdesetup-status.txt", FDESETUP, timeout=3)) or ""
        smart_status = info.get("SMART Status")
        health = None if not smart_status or smart_status == "Not Supported" else \
            "PASSED" if smart_status == "Verified" else "FAILED"
        disk = info.get("Part of Whole") or info.get("Device Identifier")
        return {
            "devices": [{"name": info.get("Device Identifier"), "fstype": info.get("File System Personality"),
                         "mountpoint": info.get("Mount Point"), "model": info.get("Device / Media Name"),
                         "solid_state": info.get("Solid State")}] if info else [],
            "filevault": True if "FileVault is On" in vault else False if "FileVault is Off" in vault else None,
            "encrypted": ["/"] if "FileVault is On" in vault else [],
            "smart": [{"disk": disk, "model": info.get("Device / Media Name"), "health": health}] if health else [],
            "failing": [disk] if health == "FAILED" else [],
            "fstab": [], "fstab_missing": [], "lvm": [],
        }
