"""What the kernel and the last boot say went wrong: OOM kills, segfaults, I/O and driver errors,
and whether the previous shutdown was clean.

Linux reads the kernel log of this boot from journald (``journalctl -k``)
where journald runs, else from ``dmesg``, and the previous boot's errors from
``journalctl -b -1``. Windows reads the System event log (disk, driver and
unexpected-shutdown events: Kernel-Power 41, EventLog 6008); macOS lists
kernel panic reports and the previous shutdown cause.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from ..context import CollectContext
from ..model import ItemKind, ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, listing, parse_timestamp, powershell, read_json, read_text
from agent.regexes import rx

#: How many events of one kind are kept in the facts (the log file keeps them all).
MAX_EVENTS = 20
PANIC_PATTERNS = ("*.panic", "Kernel-*.ips", "panic-full-*.ips")
MAX_PANICS = 5

JOURNAL_KERNEL = ("journalctl", "-k", "-b", "--no-pager", "-o", "short-iso")
DMESG = ("dmesg", "--time-format", "iso")
PREVIOUS_BOOT_ERRORS = ("journalctl", "-b", "-1", "-p", "err", "--no-pager", "-o", "short-iso")
PREVIOUS_BOOT_END = ("journalctl", "-b", "-1", "-n", "40", "--no-pager", "-o", "short-iso")
MAC_SHUTDOWN_PREDICATE = 'eventMessage CONTAINS "Previous shutdown cause"'
#: The kernel logs the cause within seconds of boot; reading only that window keeps ``log show`` fast.
MAC_BOOT_WINDOW = (-60, 600)

#: Windows System-log events that matter to a helpdesk, by provider: disks, drivers, power.
WINDOWS_SYSTEM_SCRIPT = (
    "$since = (Get-Date).AddHours(-{hours}); "
    "Get-WinEvent -FilterHashtable @{{LogName='System'; Level=1,2,3; StartTime=$since}} -MaxEvents 400 "
    "-ErrorAction SilentlyContinue | Where-Object {{ $_.Level -le 2 -or $_.Id -in 41,6008,7,11,51,55,98,153,129,19,47 }} | "
    "Select-Object @{{n='TimeCreated';e={{$_.TimeCreated.ToUniversalTime().ToString('o')}}}},Id,ProviderName,"
    "Level,@{{n='Message';e={{($_.Message -split \"`r?`n\")[0]}}}} | ConvertTo-Json -Depth 2"
)

_WINDOWS_DISK_PROVIDERS = {"disk", "ntfs", "microsoft-windows-ntfs", "volmgr", "storahci", "stornvme", "iastora",
                           "iastorac", "iastorv", "iastoravc", "atapi", "microsoft-windows-storagespaces-driver",
                           "partmgr", "microsoft-windows-storport", "microsoft-windows-stornvme", "refs",
                           "microsoft-windows-refs", "volsnap", "chkdsk"}
#: A blue screen: the "rebooted from a bugcheck" event (1001) written at the next boot.
_WINDOWS_BUGCHECK_PROVIDERS = {"microsoft-windows-wer-systemerrorreporting", "bugcheck", "save dump"}
#: Which disk or volume a Windows disk event names: \Device\Harddisk1\DR1, "Disk 1", "volume C:".
_WINDOWS_DEVICE = rx(r"\\Device\\(Harddisk\d+)|\b(Disk \d+)\b|\b[Vv]olume ([A-Z]:)|"
                             r"\\Device\\(HarddiskVolume\d+)")
#: The Service Control Manager's wording of a service that failed, by event id.
_SCM_SERVICE = rx(r"^(?:The |A timeout was reached \(\d+ milliseconds\) while waiting for the )"
                          r"(.+?) service (?:to connect|terminated|failed|hung|did not|depends)")
_SCM_PROBLEMS = {7000: "failed to start", 7001: "failed to start (a service it depends on failed)",
                 7009: "did not start in time", 7011: "did not answer in time", 7022: "hung on starting",
                 7023: "stopped with an error", 7024: "stopped with an error", 7031: "crashed (restarted)",
                 7034: "crashed", 7043: "did not shut down properly"}
_WINDOWS_DRIVER_PROVIDERS = {"service control manager", "microsoft-windows-kernel-pnp",
                             "microsoft-windows-whea-logger", "display", "nvlddmkm", "amdkmdag", "igfx"}

# -- Linux kernel-log patterns ------------------------------------------------------------------
# Every spelling below is one a kernel from 3.x to 6.x prints (the OOM killer, the fault handlers
# and the block layer reworded their lines several times); the tests name which is which.
#: A kill: "Out of memory: Kill process" (< 5.0), "Out of memory: Killed process" and "Memory cgroup
#: out of memory: Killed process" (5.0+), the bare second line "Killed process N (x) total-vm" of
#: 3.x-4.x, and "oom_reaper: reaped process" (4.6+), which repeats the kill it follows.
_OOM = rx(r"(?:^|out of memory(?: \([^)]*\))?: )Kill(?:ed)? process (\d+) \(([^)]*)\)|"
                  r"^oom_reaper: reaped process (\d+) \(([^)]*)\)", re.IGNORECASE)
#: The one-line summary of a kill since 4.19: "oom-kill:constraint=…,task=<comm>,pid=N,uid=N".
_OOM_TASK = rx(r"^oom-kill:.*?\btask=([^,]*),pid=(\d+)")
_ANON_RSS = rx(r"anon-rss:(\d+)kB")
#: A process name (``comm``) may hold spaces ("Web Content") but never brackets or colons.
_COMM = r"(\S(?:[^\[\]:]*?\S)?)"
_SEGFAULT = rx(r"(?:^|\s)" + _COMM + r"\[(\d+)\]: segfault at (\S+)")
_TRAP = rx(r"traps: " + _COMM + r"\[(\d+)\] (general protection(?: fault)?|trap [A-Za-z0-9 ]+?)"
                   r"(?: ip| in |:|$)")
#: arm64: "x[123]: unhandled level 2 translation fault (11) at 0x0, esr …".
_UNHANDLED = rx(r"(?:^|\s)" + _COMM + r"\[(\d+)\]: unhandled [\w ]*?fault \((\d+)\)")
_FAULT_MODULE = rx(r" in ([^\[\s]+)\[")
_FATAL_SIGNAL = rx(r"(?:^|\s)" + _COMM + r"\[(\d+)\]: potentially unexpected fatal signal (\d+)")
_DEVICE = r"([\w-]+)"
#: Every capturing group is a device name; file-system names stay out of the groups.
_IO_ERROR = rx(r"I/O error,? dev " + _DEVICE + r"|Buffer I/O error on dev(?:ice)? " + _DEVICE + r"|"
                       r"critical (?:medium|target|space allocation|nexus|protection) error, dev " + _DEVICE + r"|"
                       r"(?:EXT[234]-fs|BTRFS|F2FS|JFS|NILFS)[^:(]*? error \(device " + _DEVICE + r"|"
                       r"XFS \(" + _DEVICE + r"\): (?:metadata I/O error|.*?[Cc]orruption|Log I/O Error|"
                       r"xfs_do_force_shutdown)|"
                       r"\[(sd[a-z]+)\] (?:tag#\d+ )?(?:Sense Key : (?:Medium|Hardware) Error|"
                       r"Add\. Sense: Unrecovered read error)|"
                       r"(ata\d+(?:\.\d+)?): (?:failed command|exception Emask|status: \{[^}]*\bERR\b|error: \{)|"
                       r"(nvme\d+)\S*: (?:I/O .*?QID \d+ timeout|controller is down|Device not ready|"
                       r"Removing after probe failure)|"
                       r"(nvme\d+n\d+): I/O Cmd.*?I/O Error|"
                       r"(mmcblk\d+): error -\d+ (?:transferring|sending)")
_DRIVER_ERROR = rx(r"(Direct firmware load for \S+ failed|firmware: failed to load|probe of \S+ failed|"
                           r"\*ERROR\*|device descriptor read/\d+, error|device not accepting address|"
                           r"unable to enumerate USB device|"
                           r"GPU hang|GPU reset|GPU fault|GPU has fallen off the bus|NVRM: Xid|ring \S+ timeout|"
                           r"(?:Microcode|Firmware) (?:SW )?error|Failed to (?:start|load) \S+ ucode|"
                           r"nouveau \S+: \S+: (?:fault|error|TRAP|SCHED_ERROR)|"
                           r"Hardware Error|Machine check|task \S+ blocked for more than|"
                           r"Call Trace|BUG:|Oops|kernel panic)", re.IGNORECASE)
#: Which driver a kernel error line comes from: "[drm:… [amdgpu]]", "usb 1-1:", "i915 0000:00:02.0:", "NVRM:".
_DRIVER_BRACKET = rx(r"^\[drm:\S*? \[(\w+)\]\]")
_DRIVER_PREFIX = rx(r"^(usb \d+-[\d.]+|[A-Za-z][\w-]*)(?: [\da-f]{4}:[\da-f]{2}:[\da-f]{2}\.\d)?(?: \S+)?: ")
#: The signal each x86 trap sends (the kernel's do_error_trap and friends).
_TRAP_SIGNALS = {"general protection": "SIGSEGV", "trap divide error": "SIGFPE", "trap invalid opcode": "SIGILL",
                 "trap int3": "SIGTRAP", "trap stack segment": "SIGBUS", "trap alignment check": "SIGBUS",
                 "trap segment not present": "SIGBUS", "trap overflow": "SIGSEGV", "trap bounds": "SIGSEGV",
                 "trap invalid TSS": "SIGSEGV", "trap coprocessor segment overrun": "SIGFPE",
                 "trap control protection": "SIGSEGV"}

# -- kernel-log line prefixes: dmesg (plain, -T, --time-format iso, -x, -r), journalctl (-o short,
# short-iso, short-iso-precise, short-precise, short-full, short-monotonic) and a syslog file.
_ISO_PREFIX = rx(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:[.,]\d+)?([+-]\d\d:?\d\d|Z)?\s+(.*)$")
_FULL_PREFIX = rx(r"^[A-Z][a-z]{2} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)? ([A-Za-z][\w/+-]*)\s+(.*)$")
_CTIME_PREFIX = rx(r"^\[(?:[A-Z][a-z]{2} )?([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d:\d\d:\d\d)(?:[.,]\d+)? "
                           r"(\d{4})\]\s*(.*)$")
_BSD_PREFIX = rx(r"^[A-Z][a-z]{2}\s+\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?\s+(.*)$")
#: Seconds since boot "[  12.345678]", dmesg -d deltas "[  +0.000123]" and "<    0.000123>", reltime "[Dec 1 10:00]".
_UPTIME_PREFIX = rx(r"^(?:\[\s*\+?\d+\.\d+\]|<\s*\d+\.\d+>|\[[A-Z][a-z]{2} ?\d{1,2} \d\d:\d\d\])\s*")
#: dmesg -r "<3>" and dmesg -x "kern  :err   : " put the facility and level first.
_LEVEL_PREFIX = rx(r"^(?:<\d{1,3}>|[a-z]{2,8}\s*:[a-z]{2,6}\s*: )")
#: "<host> kernel: " of a journal or syslog line (a journal may also give "kernel[-]:").
_HOST_KERNEL = rx(r"^(?:\S+ )?kernel(?:\[\S*\])?: ")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_UTC_NAMES = {"UTC", "GMT", "Z", "Etc/UTC"}
#: The zone of a time printed in the PC's local time without an offset (dmesg -T, a named zone such as CET).
_LOCAL = "local"
_CLEAN_SHUTDOWN = rx(r"Journal stopped|systemd-shutdown|Reached target (?:System )?(?:Power-Off|Power Off|"
                             r"Reboot|Halt|Shutdown|Final Step)|reboot: (?:Power down|Restarting system)")
#: macOS ``Previous shutdown cause`` codes a helpdesk meets; 5 and 3 are the ordinary ones.
MAC_SHUTDOWN_CAUSES = {
    5: "normal shutdown", 3: "hard shutdown (power button held)", 0: "power lost",
    -3: "overheating (multiple temperature sensors)", -60: "battery empty", -62: "watchdog: system hung",
    -64: "kernel panic", -74: "battery overheated", -86: "overheating", -95: "overheating (CPU)",
    -104: "battery failure", -128: "unknown (often a power problem)",
}


def signal_name(number: Any) -> str | None:
    """Return the name of signal ``number`` (11 -> ``SIGSEGV``), or None for something that is not one."""
    try:
        return signal.Signals(int(number)).name
    except (TypeError, ValueError):
        return None


def split_kernel_line(line: str) -> tuple[str | None, str]:
    """Split a kernel-log line of dmesg, journalctl or a syslog file into (ISO time or None, message)."""
    stamp, message = _stamp_and_message(line)
    return _iso_time(stamp), message


def _stamp_and_message(line: str) -> tuple[tuple[str, str | None] | None, str]:
    """The (time, zone) a kernel-log line starts with, unparsed (None: none, or one without a year), and
    its message without the time, the host, ``kernel:`` and the seconds since boot.

    Parsing the time is left to :func:`_iso_time`: a kernel log has hundreds of lines and
    only the few that report something need their time.
    """
    text = line.strip()
    stamp: tuple[str, str | None] | None = None
    if match := _LEVEL_PREFIX.match(text):
        text = text[match.end():]
    if text[:1].isdigit():
        if match := _ISO_PREFIX.match(text):
            time_text, zone, text = match.groups()
            stamp = (time_text.replace(" ", "T"), zone)
    elif text[:1] == "[":
        if match := _CTIME_PREFIX.match(text):  # dmesg -T: local time, with a year
            month, day, clock, year, text = match.groups()
            if month in _MONTHS:
                stamp = (f"{year}-{_MONTHS[month]:02d}-{int(day):02d}T{clock}", _LOCAL)
    elif match := _FULL_PREFIX.match(text):  # journalctl -o short-full: "Tue 2026-12-01 10:00:00 CET"
        time_text, zone, text = match.groups()
        stamp = (time_text.replace(" ", "T"), "Z" if zone in _UTC_NAMES else _LOCAL)
    elif match := _BSD_PREFIX.match(text):  # journalctl -o short / short-precise, syslog: no year, no time
        text = match.group(1)
    if match := _UPTIME_PREFIX.match(text):
        text = text[match.end():]
    if match := _HOST_KERNEL.match(text):
        text = text[match.end():]
        if match := _UPTIME_PREFIX.match(text):  # a syslog daemon keeps the kernel's own "[ 12.3]"
            text = text[match.end():]
    return stamp, text


def _iso_time(stamp: tuple[str, str | None] | None) -> str | None:
    """The ISO 8601 UTC time of a (time, zone) from :func:`_stamp_and_message`, or None."""
    if stamp is None:
        return None
    text, zone = stamp
    if zone == _LOCAL:  # the PC's local time, zone unnamed: said as it is rather than guessed
        return text if parse_timestamp(text) else None
    if zone and zone != "Z" and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    when = parse_timestamp(text + (zone or ""))
    return when.isoformat(timespec="seconds") if when else None


#: Substrings one of which is in every message :data:`_IO_ERROR` matches (one per alternative).
_IO_ERROR_HINTS = ("I/O error", "I/O Error", "critical ", " error (device ", "XFS", "Sense", "ata", "nvme", "mmcblk")
#: The same for :data:`_DRIVER_ERROR`, lower-case: in a message that is ASCII, the pattern (case-insensitive)
#: can match only where one of them is in the lower-cased message. Other messages go to the pattern itself.
_DRIVER_ERROR_HINTS = ("firmware", "probe of ", "*error*", "device ", "enumerate", "gpu ", "xid", "ring ",
                       "microcode", "ucode", "nouveau", "hardware error", "machine check", "task ", "call trace",
                       "bug:", "oops", "kernel panic")


def _io_error(message: str) -> re.Match[str] | None:
    return _IO_ERROR.search(message) if any(hint in message for hint in _IO_ERROR_HINTS) else None


def _driver_error(message: str) -> re.Match[str] | None:
    if message.isascii():
        lowered = message.lower()
        if not any(hint in lowered for hint in _DRIVER_ERROR_HINTS):
            return None
    return _DRIVER_ERROR.search(message)


def driver_of(message: str) -> str | None:
    """Name the driver or bus a kernel error line comes from (``i915``, ``amdgpu``, ``usb 1-1``), or None."""
    if match := _DRIVER_BRACKET.match(message):
        return match.group(1)
    if match := _DRIVER_PREFIX.match(message):
        name = match.group(1)
        return None if name.lower() in ("kernel", "bug", "oops", "info", "warning") else name
    return None


def _oom_kill(message: str) -> tuple[int, str] | None:
    """The (pid, process) of an OOM-kill line in any of its spellings, or None."""
    if "ill" not in message and "oom" not in message:
        return None
    if match := _OOM.search(message):
        pid, process = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        return int(pid), process
    if match := _OOM_TASK.search(message):
        return int(match.group(2)), match.group(1)
    return None


def parse_kernel_log(lines: Iterable[str]) -> dict[str, Any]:
    """Find OOM kills, segfaults and fatal traps, I/O errors and driver errors in kernel-log lines.

    One kill the kernel reports on several lines (the ``oom-kill:`` summary, "Killed process",
    the reaper) counts once: a line naming the pid of one of the last kills adds to that kill.
    """
    oom: list[dict[str, Any]] = []
    crashes, io, driver = [], [], []
    io_devices: Counter[str] = Counter()
    driver_kinds: Counter[str] = Counter()
    drivers: Counter[str] = Counter()
    total = 0
    for raw in lines:
        if not raw.strip():
            continue
        total += 1
        stamp, message = _stamp_and_message(raw)
        if kill := _oom_kill(message):
            pid, process = kill
            rss = _ANON_RSS.search(message)
            cgroup = message.lower().startswith("memory cgroup") or "CONSTRAINT_MEMCG" in message
            known = next((k for k in oom[-3:] if k["pid"] == pid), None)
            if known is None:
                oom.append({"time": _iso_time(stamp), "pid": pid, "process": process,
                            "rss_kb": int(rss.group(1)) if rss else None, "cgroup": cgroup})
            else:
                if known["rss_kb"] is None and rss and not message.startswith("oom_reaper"):
                    known["rss_kb"] = int(rss.group(1))
                known["cgroup"] = known["cgroup"] or cgroup
            continue
        if "[" not in message:
            pass
        elif match := _SEGFAULT.search(message):
            crashes.append({"time": _iso_time(stamp), "process": match.group(1), "pid": int(match.group(2)),
                            "signal": "SIGSEGV", "kind": "segfault", "address": match.group(3),
                            "module": module.group(1) if (module := _FAULT_MODULE.search(message)) else None})
            continue
        elif match := _TRAP.search(message):
            trap = match.group(3).replace(" fault", "")
            crashes.append({"time": _iso_time(stamp), "process": match.group(1), "pid": int(match.group(2)),
                            "signal": _TRAP_SIGNALS.get(trap, "SIGSEGV" if "protection" in trap else None),
                            "kind": trap, "address": None,
                            "module": module.group(1) if (module := _FAULT_MODULE.search(message)) else None})
            continue
        elif match := _UNHANDLED.search(message):
            crashes.append({"time": _iso_time(stamp), "process": match.group(1), "pid": int(match.group(2)),
                            "signal": signal_name(match.group(3)) or f"signal {match.group(3)}",
                            "kind": "unhandled fault", "address": None,
                            "module": module.group(1) if (module := _FAULT_MODULE.search(message)) else None})
            continue
        elif match := _FATAL_SIGNAL.search(message):
            if not any(c["pid"] == int(match.group(2)) for c in crashes):
                crashes.append({"time": _iso_time(stamp), "process": match.group(1), "pid": int(match.group(2)),
                                "signal": signal_name(match.group(3)) or f"signal {match.group(3)}",
                                "kind": "fatal signal", "address": None, "module": None})
            continue
        if match := _io_error(message):
            device = next((group for group in match.groups() if group), None)
            io_devices[device or "?"] += 1
            if len(io) < MAX_EVENTS:
                io.append({"time": _iso_time(stamp), "device": device, "message": message[:300]})
            continue
        if match := _driver_error(message):
            driver_kinds[match.group(1)] += 1
            source = driver_of(message)
            if source:
                drivers[source] += 1
            if len(driver) < MAX_EVENTS:
                driver.append({"time": _iso_time(stamp), "driver": source, "message": message[:300]})
    return {
        "lines": total,
        "oom_kills": oom[-MAX_EVENTS:],
        "oom_kill_count": len(oom),
        "segfaults": crashes[-MAX_EVENTS:],
        "segfault_count": len(crashes),
        "io_errors": io,
        "io_error_count": sum(io_devices.values()),
        "io_error_devices": dict(io_devices),
        "driver_errors": driver,
        "driver_error_count": sum(driver_kinds.values()),
        "driver_error_sources": dict(drivers.most_common()),
    }


def previous_shutdown_linux(end_lines: list[str]) -> dict[str, Any]:
    """Judge from the last lines of the previous boot whether it shut down cleanly (None: no journal of it)."""
    messages = [split_kernel_line(line)[1] for line in end_lines if line.strip() and not line.startswith("--")]
    if not messages:
        return {"clean": None, "reason": "no journal of the previous boot"}
    if any(_CLEAN_SHUTDOWN.search(message) for message in messages):
        return {"clean": True, "reason": "the previous boot ended with an orderly shutdown"}
    return {"clean": False, "reason": "the previous boot's journal ends without a shutdown "
                                      "(power loss, hard reset, freeze or kernel panic)",
            "last_message": messages[-1][:300]}


def parse_windows_system_events(events: list[Any]) -> dict[str, Any]:
    """Sort Windows System-log events into unexpected shutdowns (Kernel-Power 41, EventLog 6008, a bugcheck),
    disk errors with the disk or volume they name, driver errors (with the services that failed, by name)
    and other errors."""
    shutdowns, disk, driver, other, services = [], [], [], [], []
    devices: Counter[str] = Counter()
    for event in events:
        if not isinstance(event, dict):
            continue
        provider = str(event.get("ProviderName") or "")
        event_id = _int_or_none(event.get("Id"))
        when = parse_timestamp(event.get("TimeCreated"))
        entry = {"time": when.isoformat(timespec="seconds") if when else None, "id": event_id, "provider": provider,
                 "message": str(event.get("Message") or "")[:300]}
        lowered = provider.lower()
        if ((event_id == 41 and "kernel-power" in lowered) or (event_id == 6008 and lowered == "eventlog")
                or (event_id == 1001 and lowered in _WINDOWS_BUGCHECK_PROVIDERS)):
            shutdowns.append(entry)
        elif lowered in _WINDOWS_DISK_PROVIDERS:
            match = _WINDOWS_DEVICE.search(entry["message"])
            device = next((group for group in match.groups() if group), None) if match else None
            entry["device"] = device
            devices[device or "?"] += 1
            disk.append(entry)
        elif lowered in _WINDOWS_DRIVER_PROVIDERS or "driver" in entry["message"].lower():
            driver.append(entry)
            if lowered == "service control manager" and (match := _SCM_SERVICE.search(entry["message"])):
                services.append({"time": entry["time"], "id": event_id, "service": match.group(1),
                                 "problem": _SCM_PROBLEMS.get(event_id, "failed")})
        elif _int_or_none(event.get("Level")) in (1, 2):
            other.append(entry)
    return {"unexpected_shutdowns": shutdowns[:MAX_EVENTS], "unexpected_shutdown_count": len(shutdowns),
            "disk_errors": disk[:MAX_EVENTS], "io_error_count": len(disk),
            "io_error_devices": {device: n for device, n in devices.items() if device != "?"},
            "driver_errors": driver[:MAX_EVENTS], "driver_error_count": len(driver),
            "service_errors": services[:MAX_EVENTS],
            "other_errors": other[:MAX_EVENTS], "other_error_count": len(other)}


def _int_or_none(value: Any) -> int | None:
    """An event's id or level as a number, whether PowerShell wrote it as one or as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


#: Where a kernel .ips report keeps the panic: macOS's own, then (T2 Macs) the bridge chip's when macOS
#: has none ("no macOS panic log available").
_PANIC_KEYS = ("panicString", "macOSPanicString", "bridgeOSPanicString")


def _first_panic_line(text: str) -> str | None:
    line = text.strip().splitlines()[0][:300] if text.strip() else ""
    return None if not line or "no macOS panic log" in line else line


def parse_panic_report(text: str) -> str | None:
    """Return the panic string of a macOS ``.panic`` or kernel ``.ips`` report (its first panic line).

    Reads the one-line and the pretty-printed JSON bodies of ``.ips`` reports and the old text
    report ("*** Panic Report ***" then ``panic(cpu …)``).
    """
    lines = text.splitlines()[:400]
    body_start = 1 if lines and lines[0].lstrip().startswith("{") and "bug_type" in lines[0] else 0
    if len(lines) > body_start and lines[body_start].strip().startswith("{"):
        try:
            body = json.loads("\n".join(text.splitlines()[body_start:]))
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            for key in _PANIC_KEYS:
                if isinstance(body.get(key), str) and (line := _first_panic_line(body[key])):
                    return line
    for line in lines:
        stripped = line.strip()
        for key in _PANIC_KEYS:
            if f'"{key}"' in stripped:
                match = re.search(rf'"{key}"\s*:\s*"((?:[^"\\]|\\.)*)', stripped)
                if match and (found := _first_panic_line(match.group(1).split("\\n")[0])):
                    return found
        if stripped.lower().startswith("panic("):
            return stripped[:300]
    return None


def parse_mac_shutdown_cause(text: str) -> dict[str, Any] | None:
    """Return the last ``Previous shutdown cause: N`` of ``log show`` output, with what N means."""
    causes = re.findall(r"Previous shutdown cause:\s*(-?\d+)", text, re.IGNORECASE)
    if not causes:
        return None
    code = int(causes[-1])
    return {"code": code, "clean": code == 5, "reason": MAC_SHUTDOWN_CAUSES.get(code, "unknown cause")}


class KernelCollector(Collector):
    """The kernel log, the previous boot's errors and how the last shutdown went."""

    name = "kernel"
    category = "kernel"
    description = ("Kernel log of this boot (OOM kills, segfaults, I/O and driver errors), the previous boot's "
                   "errors and whether the last shutdown was clean; kernel panics on macOS.")
    platforms = ALL_PLATFORMS
    timeout = 8.0

    def __init__(self, panic_dirs: tuple[Path, ...] = (Path("/Library/Logs/DiagnosticReports"),)):
        #: Where macOS writes kernel panic reports (replaceable for recorded reports).
        self.panic_dirs = panic_dirs

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        journald = os.path.isdir("/run/systemd/journal")
        if ctx.available("kernel/journal-kernel.txt", "journalctl") and (
                journald or ctx.recorded("kernel/journal-kernel.txt")):
            source, item = "journald", ctx.run("kernel/journal-kernel.txt", JOURNAL_KERNEL, timeout=5, kind=ItemKind.LOG)
        elif ctx.available("kernel/dmesg.txt", "dmesg"):
            source, item = "dmesg", ctx.run("kernel/dmesg.txt", DMESG, timeout=5, kind=ItemKind.LOG)
        else:
            source, item = None, ctx.note("kernel/dmesg.txt", " ".join(DMESG), ItemStatus.NOT_FOUND,
                                          "neither journalctl nor dmesg is installed", kind=ItemKind.LOG)
        readable = item.status in (ItemStatus.OK, ItemStatus.TRUNCATED) and item.size > 0
        facts: dict[str, Any] = {"source": source if readable else None}
        if readable:
            facts.update(parse_kernel_log((read_text(ctx, item) or "").splitlines()))
        else:
            facts["note"] = f"the kernel log could not be read ({item.status.value}: {item.note or 'empty'})"

        if ctx.available("kernel/previous-boot-errors.txt", "journalctl") and (
                journald or ctx.recorded("kernel/previous-boot-errors.txt")):
            errors = ctx.run("kernel/previous-boot-errors.txt", PREVIOUS_BOOT_ERRORS, timeout=5, kind=ItemKind.LOG)
            end = ctx.run("kernel/previous-boot-end.txt", PREVIOUS_BOOT_END, timeout=5, kind=ItemKind.LOG)
            error_lines = [line for line in (read_text(ctx, errors) or "").splitlines()
                           if line.strip() and not line.startswith("--")]
            messages = Counter(_shape(split_kernel_line(line)[1]) for line in error_lines)
            facts["previous_boot"] = {
                "error_count": len(error_lines),
                "top_errors": [{"message": m, "count": n} for m, n in messages.most_common(10)],
                **previous_shutdown_linux((read_text(ctx, end) or "").splitlines()),
            }
        else:
            reason = "journald is not running" if ctx.which("journalctl") else "journalctl is not installed"
            ctx.note("kernel/previous-boot-errors.txt", " ".join(PREVIOUS_BOOT_ERRORS), ItemStatus.SKIPPED,
                     f"{reason}; the previous boot's log is not kept", kind=ItemKind.LOG)
            facts["previous_boot"] = None
        return facts

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        hours = max(24, int(ctx.options.log_since_hours))
        item = ctx.run("kernel/windows-system-events.json", powershell(WINDOWS_SYSTEM_SCRIPT.format(hours=hours)),
                       timeout=8, kind=ItemKind.LOG)
        facts = parse_windows_system_events(as_list(read_json(ctx, item)))
        last = facts["unexpected_shutdowns"][0] if facts["unexpected_shutdowns"] else None
        facts["source"] = "windows-system-log"
        facts["since_hours"] = hours
        facts["previous_boot"] = {
            "clean": last is None,
            "reason": "no unexpected shutdown in the System log" if last is None else
            f"{last['provider']} event {last['id']}: {last['message']}",
        }
        return facts

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        since = (ctx.now - timedelta(days=30)).timestamp()
        panics = []
        for directory in self.panic_dirs:
            for entry in listing(directory, PANIC_PATTERNS):
                if entry["mtime"] < since or len(panics) >= MAX_PANICS:
                    continue
                staged = ctx.copy_file(f"kernel/panics/{entry['name']}", entry["path"], max_bytes=512 * 1024)
                panics.append({"name": entry["name"], "time": entry["modified"],
                               "panic": parse_panic_report(read_text(ctx, staged) or "")})
        boot = psutil.boot_time()
        start, end = (datetime.fromtimestamp(boot + offset).strftime("%Y-%m-%d %H:%M:%S") for offset in MAC_BOOT_WINDOW)
        cause_item = ctx.run("kernel/shutdown-cause.txt", ("log", "show", "--style", "syslog", "--start", start,
                                                           "--end", end, "--predicate", MAC_SHUTDOWN_PREDICATE),
                             timeout=6, kind=ItemKind.LOG)
        cause = parse_mac_shutdown_cause(read_text(ctx, cause_item) or "")
        return {
            "source": "diagnostic-reports",
            "kernel_panics": panics,
            "kernel_panic_count": len(panics),
            "previous_boot": None if cause is None else
            {"clean": cause["clean"], "reason": cause["reason"], "shutdown_cause": cause["code"]},
        }


def _shape(message: str) -> str:
    """Strip a journal message's process id so repeats of one error count together."""
    return re.sub(r"\[\d+\]", "", message)[:200]
