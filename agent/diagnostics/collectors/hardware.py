"""What the PC is made of and how full it is: CPU, memory and swap, disks, battery, temperatures.

Any mount 90 % full or more is listed in ``disk_full``: a full disk is the most
common cause of "my PC is broken" an engineer should see first. On Linux, a file
system out of inodes (``inode_full``) and a full in-memory tmpfs such as /tmp,
/dev/shm or /run/user/… (``tmpfs_full``) break programs the same way, so they are
checked too (over 95 %).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import psutil

from ..context import CollectContext
from .base import ALL_PLATFORMS, Collector, as_list, parse_colon_pairs, powershell, read_json, read_text

DISK_FULL_PERCENT = 90.0
#: Inode use and tmpfs use at or above this are flagged (a tmpfs at 90 % is often normal).
SCRATCH_FULL_PERCENT = 95.0
#: tmpfs mounts under these are the kernel's own (cgroups, sysfs), never a place programs write files.
_KERNEL_TMPFS_ROOTS = ("/sys", "/proc")
#: File systems that are full by design (snap images, CDs) or not disks at all.
_IGNORED_FSTYPES = frozenset({"squashfs", "iso9660", "udf", "devtmpfs", "proc", "sysfs", "nsfs"})
_MAX_PARTITIONS = 64
_DISK_USAGE_TIMEOUT = 2.0  # a stale network mount must not eat the collector's time

WINDOWS_HARDWARE_SCRIPT = (
    "[pscustomobject]@{"
    "Processor=@(Get-CimInstance Win32_Processor | Select-Object Name,NumberOfCores,NumberOfLogicalProcessors,"
    "MaxClockSpeed,CurrentClockSpeed,LoadPercentage); "
    "ComputerSystem=(Get-CimInstance Win32_ComputerSystem | Select-Object Manufacturer,Model,"
    "TotalPhysicalMemory,NumberOfProcessors); "
    "LogicalDisks=@(Get-CimInstance Win32_LogicalDisk | Select-Object DeviceID,VolumeName,FileSystem,"
    "DriveType,Size,FreeSpace); "
    "Battery=@(Get-CimInstance Win32_Battery | Select-Object Name,EstimatedChargeRemaining,BatteryStatus,"
    "EstimatedRunTime)"
    "} | ConvertTo-Json -Depth 4"
)


class HardwareCollector(Collector):
    """CPU, memory, disks (full ones flagged), battery and temperatures."""

    name = "hardware"
    category = "hardware"
    description = "CPU, memory and swap, disks and their usage (flagging mounts 90 % full), battery and temperatures."
    platforms = ALL_PLATFORMS
    timeout = 10.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        ctx.run("hardware/lsblk.json", ("lsblk", "-J"), timeout=5)
        ctx.run("hardware/df.txt", ("df", "-hT"), timeout=5)
        lscpu = read_text(ctx, ctx.run("hardware/lscpu.txt", ("lscpu",), timeout=5)) or ""
        model = parse_colon_pairs(lscpu).get("Model name") or _cpuinfo_model()
        disks = psutil_disks()
        tmpfs = tmpfs_mounts()
        return {
            "cpu": _cpu_facts(model),
            "memory": _memory_facts(),
            "disks": disks,
            "disk_full": full_mounts(disks),
            "tmpfs": tmpfs,
            "tmpfs_full": [{"mountpoint": t["mountpoint"], "percent": t["percent"], "free": t["free"]}
                           for t in tmpfs if t.get("percent") is not None and t["percent"] >= SCRATCH_FULL_PERCENT],
            "inode_full": [{"mountpoint": d["mountpoint"], "fstype": d["fstype"], "inodes_percent": d["inodes_percent"],
                            "inodes_free": d["inodes_free"]}
                           for d in disks + tmpfs
                           if d.get("inodes_percent") is not None and d["inodes_percent"] >= SCRATCH_FULL_PERCENT],
            "battery": _battery_facts(),
            "temperatures": _temperature_facts(),
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("hardware/windows-hardware.json", powershell(WINDOWS_HARDWARE_SCRIPT),
                                      timeout=8)) or {}
        processors = as_list(data.get("Processor"))
        system = data.get("ComputerSystem") or {}
        disks = []
        for disk in as_list(data.get("LogicalDisks")):
            size, free = disk.get("Size"), disk.get("FreeSpace")
            if disk.get("DriveType") != 3 or not size:  # 3: a local fixed disk
                continue
            used = size - (free or 0)
            disks.append({
                "device": disk.get("DeviceID"), "mountpoint": disk.get("DeviceID"),
                "fstype": disk.get("FileSystem"), "label": disk.get("VolumeName"),
                "total": size, "used": used, "free": free, "percent": round(100.0 * used / size, 1),
            })
        batteries = as_list(data.get("Battery"))
        cpu = _cpu_facts(processors[0].get("Name").strip() if processors and processors[0].get("Name") else None)
        if processors:
            cpu["physical_cores"] = sum(p.get("NumberOfCores") or 0 for p in processors) or cpu["physical_cores"]
            cpu["logical_cores"] = sum(p.get("NumberOfLogicalProcessors") or 0 for p in processors) or cpu["logical_cores"]
            cpu["max_mhz"] = processors[0].get("MaxClockSpeed")
        return {
            "manufacturer": system.get("Manufacturer"),
            "model": system.get("Model"),
            "cpu": cpu,
            "memory": _memory_facts(),
            "disks": disks,
            "disk_full": full_mounts(disks),
            "battery": {
                "percent": batteries[0].get("EstimatedChargeRemaining"),
                # Win32_Battery.BatteryStatus 2 means "on AC power".
                "plugged": batteries[0].get("BatteryStatus") == 2,
                "minutes_left": batteries[0].get("EstimatedRunTime"),
            } if batteries else None,
            "temperatures": {},
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        profile = read_json(ctx, ctx.run("hardware/sphardware.json", ("system_profiler", "SPHardwareDataType", "-json"),
                                         timeout=8)) or {}
        hw = (as_list(profile.get("SPHardwareDataType")) or [{}])[0]
        brand = read_text(ctx, ctx.run("hardware/cpu-brand.txt", ("sysctl", "-n", "machdep.cpu.brand_string"),
                                       timeout=5))
        df_text = read_text(ctx, ctx.run("hardware/df.txt", ("df", "-kP"), timeout=5)) or ""
        battery_text = read_text(ctx, ctx.run("hardware/pmset-batt.txt", ("pmset", "-g", "batt"), timeout=5)) or ""
        disks = parse_df_kp(df_text)
        return {
            "manufacturer": "Apple",
            "model": hw.get("machine_model") or hw.get("machine_name"),
            "cpu": _cpu_facts((brand or "").strip() or hw.get("chip_type") or hw.get("cpu_type")),
            "memory": {**_memory_facts(), "installed": hw.get("physical_memory")},
            "disks": disks,
            "disk_full": full_mounts(disks),
            "battery": parse_pmset_battery(battery_text),
            "temperatures": {},
        }


def parse_df_kp(text: str) -> list[dict[str, Any]]:
    """Parse POSIX ``df -kP`` output into disk facts, keeping real devices (``/dev/...``) only."""
    disks = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6 or not fields[0].startswith("/dev/"):
            continue
        try:
            total, used, free = (int(value) * 1024 for value in fields[1:4])
        except ValueError:
            continue
        mountpoint = " ".join(fields[5:])
        # macOS keeps several read-only system volumes; /System/Volumes/* besides Data are by design full-ish.
        if mountpoint.startswith("/System/Volumes/") and mountpoint != "/System/Volumes/Data":
            continue
        disks.append({
            "device": fields[0], "mountpoint": mountpoint, "fstype": None,
            "total": total, "used": used, "free": free,
            "percent": round(100.0 * used / (used + free), 1) if used + free else 0.0,
        })
    return disks


def parse_pmset_battery(text: str) -> dict[str, Any] | None:
    """Parse ``pmset -g batt`` (``-InternalBattery-0 (id=…)	87%; discharging; 5:12 remaining``)."""
    match = re.search(r"(\d+)%;\s*([^;]+);\s*([^\s]+)", text)
    if not match:
        return None
    minutes = None
    if re.fullmatch(r"\d+:\d{2}", match.group(3)):
        hours, mins = match.group(3).split(":")
        minutes = int(hours) * 60 + int(mins)
    return {
        "percent": int(match.group(1)),
        "state": match.group(2).strip(),
        "plugged": "AC Power" in text,
        "minutes_left": minutes,
    }


def full_mounts(disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the mounts at or above :data:`DISK_FULL_PERCENT` usage."""
    return [
        {"mountpoint": disk["mountpoint"], "percent": disk["percent"], "free": disk["free"]}
        for disk in disks
        if disk.get("percent") is not None and disk["percent"] >= DISK_FULL_PERCENT
    ]


def psutil_disks() -> list[dict[str, Any]]:
    """Return usage of the mounted partitions psutil sees; a hung mount is reported, not waited for."""
    disks, seen = [], set()
    for part in psutil.disk_partitions(all=False)[:_MAX_PARTITIONS]:
        if part.fstype in _IGNORED_FSTYPES or (part.device, part.mountpoint) in seen:
            continue
        seen.add((part.device, part.mountpoint))
        usage = _disk_usage(part.mountpoint)
        entry = {"device": part.device, "mountpoint": part.mountpoint, "fstype": part.fstype,
                 "options": part.opts}
        if isinstance(usage, str):
            entry.update({"total": None, "used": None, "free": None, "percent": None, "problem": usage})
        else:
            entry.update({"total": usage.total, "used": usage.used, "free": usage.free, "percent": usage.percent})
            entry.update(inode_usage(part.mountpoint))
        disks.append(entry)
    return disks


def tmpfs_mounts() -> list[dict[str, Any]]:
    """Return space and inode use of the writable tmpfs mounts (/tmp, /dev/shm, /run/user/…), which psutil skips."""
    mounts, seen = [], set()
    for part in psutil.disk_partitions(all=True):
        if part.fstype != "tmpfs" or part.mountpoint in seen or len(mounts) >= _MAX_PARTITIONS:
            continue
        if "ro" in part.opts.split(",") or part.mountpoint.startswith(_KERNEL_TMPFS_ROOTS):
            continue
        seen.add(part.mountpoint)
        usage = _disk_usage(part.mountpoint)
        if isinstance(usage, str) or not usage.total:
            continue  # unreadable, or a tmpfs without a size limit: it cannot fill up on its own
        mounts.append({"device": part.device, "mountpoint": part.mountpoint, "fstype": "tmpfs",
                       "total": usage.total, "used": usage.used, "free": usage.free, "percent": usage.percent,
                       **inode_usage(part.mountpoint)})
    return mounts


def inode_usage(mountpoint: str) -> dict[str, Any]:
    """Return the inode counts of ``mountpoint`` (os.statvfs); None where the file system has no fixed count."""
    try:
        stats = os.statvfs(mountpoint)
    except OSError:
        return {"inodes_total": None, "inodes_free": None, "inodes_percent": None}
    if not stats.f_files:  # btrfs, vfat and friends allocate inodes on demand
        return {"inodes_total": None, "inodes_free": None, "inodes_percent": None}
    used = stats.f_files - stats.f_ffree
    return {"inodes_total": stats.f_files, "inodes_free": stats.f_ffree,
            "inodes_percent": round(used * 100.0 / stats.f_files, 1)}


def _disk_usage(mountpoint: str):
    """Return psutil's usage of ``mountpoint``, or a string saying why there is none."""
    box: dict[str, Any] = {}

    def probe() -> None:
        try:
            box["usage"] = psutil.disk_usage(mountpoint)
        except OSError as exc:
            box["error"] = exc.strerror or str(exc)

    worker = threading.Thread(target=probe, name=f"disk_usage:{mountpoint}", daemon=True)
    worker.start()
    worker.join(_DISK_USAGE_TIMEOUT)
    if worker.is_alive():
        return f"no answer within {_DISK_USAGE_TIMEOUT:.0f} s (hung network mount?)"
    return box.get("usage") or box.get("error", "unknown error")


def _cpu_facts(model: str | None) -> dict[str, Any]:
    freq = None
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, FileNotFoundError):
        pass
    load = None
    if hasattr(os, "getloadavg"):
        try:
            load = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            pass
    return {
        "model": model,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "mhz": {"current": round(freq.current), "min": round(freq.min), "max": round(freq.max)} if freq else None,
        "load_average": load,
    }


def _cpuinfo_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return None


def _memory_facts() -> dict[str, Any]:
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    return {
        "total": memory.total, "available": memory.available, "used": memory.used, "percent": memory.percent,
        "swap_total": swap.total, "swap_used": swap.used, "swap_percent": swap.percent,
    }


def _battery_facts() -> dict[str, Any] | None:
    sensor = getattr(psutil, "sensors_battery", None)
    try:
        battery = sensor() if sensor else None
    except (OSError, RuntimeError):
        battery = None
    if battery is None:
        return None
    secs = battery.secsleft
    return {
        "percent": round(battery.percent, 1),
        "plugged": battery.power_plugged,
        "minutes_left": secs // 60 if isinstance(secs, int) and secs >= 0 else None,
    }


def _temperature_facts() -> dict[str, list[dict[str, Any]]]:
    sensor = getattr(psutil, "sensors_temperatures", None)
    try:
        readings = sensor() if sensor else {}
    except (OSError, RuntimeError):
        readings = {}
    return {
        chip: [{"label": t.label or chip, "current": t.current, "high": t.high, "critical": t.critical}
               for t in entries]
        for chip, entries in readings.items()
    }
