"""Which operating system the PC runs, since when, in which time zone and locale."""

from __future__ import annotations

import os
import platform as py_platform
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from ..context import CollectContext
from .base import ALL_PLATFORMS, Collector, iso_utc, parse_timestamp, powershell, read_json, read_text

WINDOWS_OS_SCRIPT = (
    "$os = Get-CimInstance -ClassName Win32_OperatingSystem; $tz = Get-TimeZone; "
    "[pscustomobject]@{"
    "Caption=$os.Caption; Version=$os.Version; BuildNumber=$os.BuildNumber; "
    "OSArchitecture=$os.OSArchitecture; CSName=$os.CSName; "
    "LastBootUpTime=$os.LastBootUpTime.ToUniversalTime().ToString('o'); "
    "InstallDate=$os.InstallDate.ToUniversalTime().ToString('o'); "
    "LocalDateTime=$os.LocalDateTime.ToString('o'); "
    "Locale=$os.Locale; OSLanguage=$os.OSLanguage; MUILanguages=$os.MUILanguages; "
    "TimeZoneId=$tz.Id; TimeZoneDisplayName=$tz.DisplayName; "
    "UtcOffsetMinutes=$tz.BaseUtcOffset.TotalMinutes; "
    "Culture=(Get-Culture).Name; UICulture=(Get-UICulture).Name"
    "} | ConvertTo-Json -Depth 3"
)


class SystemCollector(Collector):
    """OS, kernel, boot time, time zone and locale: the first lines of any ticket."""

    name = "system"
    category = "system"
    description = "Operating system and version, kernel, boot time and uptime, time zone and locale."
    platforms = ALL_PLATFORMS
    timeout = 10.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        # os-release(5): /etc/os-release wins, /usr/lib/os-release is the fallback.
        source = next((p for p in ("/etc/os-release", "/usr/lib/os-release") if os.path.exists(p)), "/etc/os-release")
        release = parse_os_release(read_text(ctx, ctx.copy_file("system/os-release.txt", source, 64 * 1024)) or "")
        ctx.run("system/uname.txt", ("uname", "-a"), timeout=5)
        locale_file = next((p for p in ("/etc/default/locale", "/etc/locale.conf") if os.path.exists(p)), None)
        system_locale: dict[str, str] = {}
        if locale_file:
            item = ctx.copy_file("system/locale.txt", locale_file, max_bytes=64 * 1024)
            system_locale = parse_os_release(read_text(ctx, item) or "")
        return {
            "os": {
                "family": "linux",
                "name": release.get("NAME"),
                "version": release.get("VERSION_ID"),
                "id": release.get("ID"),
                "pretty_name": release.get("PRETTY_NAME"),
                "codename": release.get("VERSION_CODENAME"),
            },
            "kernel": {"release": py_platform.release(), "version": py_platform.version()},
            "architecture": py_platform.machine(),
            "hostname": py_platform.node(),
            **_boot_facts(psutil.boot_time(), ctx.now),
            "timezone": _posix_timezone(ctx),
            "locale": {
                "LANG": ctx.env.get("LANG"),
                "LC_ALL": ctx.env.get("LC_ALL"),
                "system_default": system_locale.get("LANG"),
            },
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        item = ctx.run("system/windows-os.json", powershell(WINDOWS_OS_SCRIPT), timeout=8)
        ctx.run("system/systeminfo.csv", ("systeminfo", "/fo", "csv"), timeout=8)
        data = read_json(ctx, item) or {}
        boot = parse_timestamp(data.get("LastBootUpTime"))
        installed = parse_timestamp(data.get("InstallDate"))
        offset = data.get("UtcOffsetMinutes")
        return {
            "os": {
                "family": "windows",
                "name": data.get("Caption"),
                "version": data.get("Version"),
                "build": data.get("BuildNumber"),
                "pretty_name": " ".join(filter(None, [data.get("Caption"), data.get("Version")])) or None,
            },
            "architecture": data.get("OSArchitecture"),
            "hostname": data.get("CSName"),
            "installed_at": installed.isoformat(timespec="seconds") if installed else None,
            **_boot_facts(boot.timestamp() if boot else None, ctx.now),
            "timezone": {
                "name": data.get("TimeZoneId"),
                "display_name": data.get("TimeZoneDisplayName"),
                "utc_offset": _format_offset(offset * 60) if isinstance(offset, (int, float)) else None,
            },
            "locale": {"culture": data.get("Culture"), "ui_culture": data.get("UICulture"),
                       "system_locale": data.get("Locale")},
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        versions = parse_sw_vers(read_text(ctx, ctx.run("system/sw_vers.txt", ("sw_vers",), timeout=5)) or "")
        boot_text = read_text(ctx, ctx.run("system/kern-boottime.txt", ("sysctl", "-n", "kern.boottime"), timeout=5))
        uname = read_text(ctx, ctx.run("system/uname.txt", ("uname", "-a"), timeout=5)) or ""
        locale_text = read_text(ctx, ctx.run("system/apple-locale.txt", ("defaults", "read", "-g", "AppleLocale"),
                                             timeout=5))
        uname_parts = uname.split()
        return {
            "os": {
                "family": "darwin",
                "name": versions.get("ProductName"),
                "version": versions.get("ProductVersion"),
                "build": versions.get("BuildVersion"),
                "pretty_name": " ".join(filter(None, [versions.get("ProductName"), versions.get("ProductVersion")]))
                or None,
            },
            "kernel": {"release": uname_parts[2] if len(uname_parts) > 2 else None},
            "architecture": uname_parts[-1] if uname_parts else None,
            "hostname": uname_parts[1] if len(uname_parts) > 1 else None,
            **_boot_facts(parse_kern_boottime(boot_text or ""), ctx.now),
            "timezone": _posix_timezone(ctx),
            "locale": {"LANG": ctx.env.get("LANG"), "apple_locale": (locale_text or "").strip() or None},
        }


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) (or /etc/default/locale) KEY=value lines, unquoting values."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def parse_sw_vers(text: str) -> dict[str, str]:
    """Parse ``sw_vers`` output (``ProductName:\\tmacOS`` lines)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_kern_boottime(text: str) -> float | None:
    """Parse ``sysctl -n kern.boottime`` (``{ sec = 1710400000, usec = 12345 } ...``) into a timestamp."""
    match = re.search(r"sec\s*=\s*(\d+)", text)
    return float(match.group(1)) if match else None


def _boot_facts(boot_timestamp: float | None, now: datetime) -> dict[str, Any]:
    """Boot time and the uptime it gives at ``now``."""
    if boot_timestamp is None:
        return {"boot_time": None, "uptime_seconds": None, "uptime": None}
    uptime = max(0, int(now.timestamp() - boot_timestamp))
    days, rest = divmod(uptime, 86400)
    hours, rest = divmod(rest, 3600)
    return {
        "boot_time": iso_utc(boot_timestamp),
        "uptime_seconds": uptime,
        "uptime": f"{days}d {hours}h {rest // 60}m",
    }


def _posix_timezone(ctx: CollectContext) -> dict[str, Any]:
    """Return the zone name (TZ, /etc/timezone or the /etc/localtime link), abbreviation and UTC offset."""
    name = ctx.env.get("TZ")
    if not name:
        try:
            name = Path("/etc/timezone").read_text().strip() or None
        except OSError:
            name = None
    if not name:
        try:
            link = os.readlink("/etc/localtime")
            name = link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else None
        except OSError:
            name = None
    now = ctx.now.astimezone()
    offset = now.utcoffset()
    return {
        "name": name,
        "abbreviation": now.tzname(),
        "utc_offset": _format_offset(offset.total_seconds()) if offset is not None else None,
    }


def _format_offset(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = int(abs(seconds)) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
