"""Which machine this is and what is plugged into it: system and BIOS identity, PCI devices with
their drivers, USB devices, and devices the OS could not start.

Linux reads ``dmidecode`` (root only; otherwise the readable part of
/sys/class/dmi/id), ``lspci -k`` and ``lsusb``; Windows asks CIM for the BIOS,
the product and Plug-and-Play devices with an error code; macOS lists USB
devices through ``system_profiler``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, parse_timestamp, powershell, read_json, read_text

DMIDECODE = ("dmidecode", "-t", "system", "-t", "bios")
LSPCI = ("lspci", "-k")
LSUSB = ("lsusb",)
MAC_USB = ("system_profiler", "-json", "-detailLevel", "mini", "SPUSBDataType")
DMI_DIR = Path("/sys/class/dmi/id")
#: PCI classes that do nothing without a driver; a device of these without one is worth a line.
_NEEDS_DRIVER = ("Network controller", "Ethernet controller", "VGA compatible controller", "3D controller",
                 "Display controller", "Audio device", "Multimedia audio controller", "USB controller",
                 "SATA controller", "Non-Volatile memory controller", "Wireless controller", "RAID bus controller")

WINDOWS_DEVICES_SCRIPT = (
    "$bios = Get-CimInstance Win32_BIOS | Select-Object Manufacturer,SMBIOSBIOSVersion,"
    "@{n='ReleaseDate';e={$_.ReleaseDate.ToUniversalTime().ToString('o')}},SerialNumber; "
    "$product = Get-CimInstance Win32_ComputerSystemProduct | Select-Object Vendor,Name,Version,IdentifyingNumber; "
    "$problems = @(Get-CimInstance Win32_PnPEntity | Where-Object { $_.ConfigManagerErrorCode -ne 0 } | "
    "Select-Object Name,PNPClass,ConfigManagerErrorCode,Status); "
    "[pscustomobject]@{BIOS=$bios; Product=$product; ProblemDevices=$problems} | ConvertTo-Json -Depth 4"
)
#: Device Manager error codes a helpdesk meets most (CM_PROB_*).
_WINDOWS_DEVICE_ERRORS = {1: "not configured correctly", 3: "driver corrupted or out of memory",
                          10: "cannot start", 12: "not enough free resources", 14: "needs a restart",
                          18: "drivers need reinstalling", 22: "disabled", 24: "not present or not working",
                          28: "no driver installed", 31: "not working properly", 43: "stopped after reporting problems",
                          45: "not connected", 52: "driver signature cannot be verified"}


def parse_dmidecode(text: str) -> dict[str, Any]:
    """Parse ``dmidecode -t system -t bios`` into the system's and the BIOS's identity."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(("\t", " ")):
            current = sections.setdefault(line.strip(), {}) if line.strip().endswith("Information") else None
        elif current is not None and ":" in line:
            key, _, value = line.strip().partition(":")
            current.setdefault(key.strip(), value.strip())
    system = sections.get("System Information", {})
    bios = sections.get("BIOS Information", {})
    return {"manufacturer": system.get("Manufacturer"), "product": system.get("Product Name"),
            "version": system.get("Version"), "serial": system.get("Serial Number"), "family": system.get("Family"),
            "bios": {"vendor": bios.get("Vendor"), "version": bios.get("Version"),
                     "date": bios.get("Release Date")} if bios else None}


def dmi_from_sysfs(directory: Path = DMI_DIR) -> dict[str, Any] | None:
    """The world-readable part of the DMI table (no serial numbers) for a PC where dmidecode needs root."""
    def read(name: str) -> str | None:
        try:
            return (directory / name).read_text().strip() or None
        except OSError:
            return None

    if not directory.is_dir():
        return None
    return {"manufacturer": read("sys_vendor"), "product": read("product_name"), "version": read("product_version"),
            "serial": None, "family": read("product_family"),
            "bios": {"vendor": read("bios_vendor"), "version": read("bios_version"), "date": read("bios_date")}}


def parse_lspci(text: str) -> list[dict[str, Any]]:
    """Parse ``lspci -k``: slot, class, device name, the driver in use and the modules that could drive it."""
    devices: list[dict[str, Any]] = []
    for line in text.splitlines():
        match = re.match(r"^([0-9a-f]{2,4}:[0-9a-f]{2}(?::[0-9a-f]{2})?\.[0-9a-f]) ([^:]+): (.+)$", line)
        if match:
            devices.append({"slot": match.group(1), "class": match.group(2), "name": match.group(3).strip(),
                            "driver": None, "modules": []})
        elif devices and line.startswith("\t"):
            key, _, value = line.strip().partition(": ")
            if key == "Kernel driver in use":
                devices[-1]["driver"] = value.strip()
            elif key == "Kernel modules":
                devices[-1]["modules"] = [m.strip() for m in value.split(",") if m.strip()]
    return devices


def parse_lsusb(text: str) -> list[dict[str, Any]]:
    """Parse ``lsusb`` (``Bus 001 Device 003: ID 046d:c52b Logitech, Inc. Unifying Receiver``), hubs left out."""
    devices = []
    for line in text.splitlines():
        match = re.match(r"^Bus (\d+) Device (\d+): ID ([0-9a-f]{4}:[0-9a-f]{4}) ?(.*)$", line)
        if match and "root hub" not in match.group(4):
            devices.append({"bus": match.group(1), "device": match.group(2), "id": match.group(3),
                            "name": match.group(4).strip() or None})
    return devices


def _mac_usb(items: Any, found: list[dict[str, Any]]) -> None:
    for item in as_list(items):
        if not isinstance(item, dict):
            continue
        if item.get("_name") and (item.get("vendor_id") or item.get("manufacturer")):
            found.append({"name": item.get("_name"), "id": f"{item.get('vendor_id', '?')}:{item.get('product_id', '?')}",
                          "manufacturer": item.get("manufacturer")})
        _mac_usb(item.get("_items"), found)


class DevicesCollector(Collector):
    """System and BIOS identity, PCI and USB devices, devices without a working driver."""

    name = "devices"
    category = "devices"
    description = "System and BIOS identity (dmidecode), PCI devices with their drivers, USB devices, failed devices."
    platforms = ALL_PLATFORMS
    timeout = 6.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        if ctx.recorded("devices/dmidecode.txt") or (os.geteuid() == 0 and ctx.which("dmidecode")):
            identity = parse_dmidecode(read_text(ctx, ctx.run("devices/dmidecode.txt", DMIDECODE, timeout=4)) or "")
        else:
            ctx.note("devices/dmidecode.txt", " ".join(DMIDECODE), ItemStatus.SKIPPED,
                     "dmidecode needs root (or is not installed); read /sys/class/dmi/id instead")
            identity = dmi_from_sysfs()
        pci = usb = None
        if ctx.available("devices/lspci-k.txt", "lspci"):
            pci = parse_lspci(read_text(ctx, ctx.run("devices/lspci-k.txt", LSPCI, timeout=4)) or "")
        if ctx.available("devices/lsusb.txt", "lsusb"):
            usb = parse_lsusb(read_text(ctx, ctx.run("devices/lsusb.txt", LSUSB, timeout=4)) or "")
        return {
            "identity": identity,
            "pci": pci,
            "usb": usb,
            "problems": [{"device": d["name"], "class": d["class"], "problem": "no driver in use"
                          + (f" (could use {', '.join(d['modules'])})" if d["modules"] else "")}
                         for d in pci or [] if d["driver"] is None and d["class"].startswith(_NEEDS_DRIVER)],
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("devices/windows-devices.json", powershell(WINDOWS_DEVICES_SCRIPT), timeout=6))
        data = data if isinstance(data, dict) else {}
        bios = data.get("BIOS") if isinstance(data.get("BIOS"), dict) else {}
        product = data.get("Product") if isinstance(data.get("Product"), dict) else {}
        released = parse_timestamp(bios.get("ReleaseDate"))
        problems = []
        for device in as_list(data.get("ProblemDevices")):
            if isinstance(device, dict):
                code = device.get("ConfigManagerErrorCode")
                problems.append({"device": device.get("Name"), "class": device.get("PNPClass"),
                                 "problem": f"code {code}: {_WINDOWS_DEVICE_ERRORS.get(code, 'see Device Manager')}"})
        return {
            "identity": {"manufacturer": product.get("Vendor"), "product": product.get("Name"),
                         "version": product.get("Version"), "serial": product.get("IdentifyingNumber"),
                         "family": None,
                         "bios": {"vendor": bios.get("Manufacturer"), "version": bios.get("SMBIOSBIOSVersion"),
                                  "date": released.date().isoformat() if released else None}},
            "pci": None, "usb": None, "problems": problems,
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("devices/usb.json", MAC_USB, timeout=5))
        usb: list[dict[str, Any]] = []
        if isinstance(data, dict):
            _mac_usb(data.get("SPUSBDataType"), usb)
        return {"identity": None, "pci": None, "usb": usb, "problems": []}
