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
    "-ErrorAction SilentlyContinue | Where-Object {{ $_.Level -le 2 -or $_.Id -in 41,6008,7,11,51,55,153,129 }} | "
    "Select-Object @{{n='TimeCreated';e={{$_.TimeCreated.ToUniversalTime().ToString('o')}}}},Id,ProviderName,"
    "Level,@{{n='Message';e={{($_.Message -split \"`r?`n\")[0]}}}} | ConvertTo-Json -Depth 2"
)

_WINDOWS_DISK_PROVIDERS = {"disk", "ntfs", "microsoft-windows-ntfs", "volmgr", "storahci", "stornvme", "iastora",
                           "microsoft-windows-storagespaces-driver", "partmgr"}
_WINDOWS_DRIVER_PROVIDERS = {"service control manager", "microsoft-windows-kernel-pnp",
                             "microsoft-windows-whea-logger", "display", "nvlddmkm", "amdkmdag", "igfx"}

# -- Linux kernel-log patterns ------------------------------------------------------------------
_OOM = re.compile(r"(?:Out of memory|Memory cgroup out of memory): Killed process (\d+) \(([^)]+)\)"
                  r"(?:.*?anon-rss:(\d+)kB)?")
_SEGFAULT = re.compile(r"(?:^|\s)(\S+?)\[(\d+)\]: segfault at (\S+) ip \S+ sp \S+ error \S+(?: in ([^\[\s]+))?")
_TRAP = re.compile(r"traps: (\S+?)\[(\d+)\] (general protection(?: fault)?|trap [a-z ]+?)(?: ip| in |:|$)")
_FAULT_MODULE = re.compile(r" in ([^\[\s]+)\[")
_FATAL_SIGNAL = re.compile(r"(\S+?)\[(\d+)\]: potentially unexpected fatal signal (\d+)")
_IO_ERROR = re.compile(r"(?:I/O error, dev (\w+)|Buffer I/O error on dev(?:ice)? (\w+)|"
                       r"critical (?:medium|target) error, dev (\w+)|(EXT4-fs|XFS|BTRFS|F2FS)[^:]*? error \(device (\w+)\)|"
                       r"(ata\d+(?:\.\d+)?): (?:failed command|exception Emask|status: \{ DRDY ERR)|"
                       r"(nvme\d+)\S*: (?:I/O \d+ QID \d+ timeout|controller is down|Device not ready))")
_DRIVER_ERROR = re.compile(r"(Direct firmware load for \S+ failed|firmware: failed to load|probe of \S+ failed|"
                           r"\*ERROR\*|device descriptor read/\d+, error|device not accepting address|"
                           r"GPU hang|ring \S+ timeout|Hardware Error|Machine check|task \S+ blocked for more than|"
                           r"Call Trace|BUG:|Oops|kernel panic)", re.IGNORECASE)
_TRAP_SIGNALS = {"general protection": "SIGSEGV", "trap divide error": "SIGFPE", "trap invalid opcode": "SIGILL",
                 "trap int3": "SIGTRAP", "trap stack segment": "SIGBUS", "trap alignment check": "SIGBUS"}
_ISO_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,]\d+)?([+-]\d\d:?\d\d|Z)?\s+(.*)$")
_CLEAN_SHUTDOWN = re.compile(r"Journal stopped|systemd-shutdown|Reached target (?:System )?(?:Power-Off|Power Off|"
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
    """Split a ``dmesg --time-format iso`` or ``journalctl -o short-iso`` line into (ISO time, message)."""
    stamp, message = _stamp_and_message(line)
    return _iso_time(stamp), message


def _stamp_and_message(line: str) -> tuple[tuple[str, str | None] | None, str]:
    """The (time, zone) a kernel-log line starts with, unparsed (None: it has none), and its message.

    Parsing the time is left to :func:`_iso_time`: a kernel log has hundreds of lines and
    only the few that report something need their time.
    """
    match = _ISO_PREFIX.match(line.strip())
    if not match:
        bracket = re.match(r"^\[\s*[\d.]+\]\s*(.*)$", line.strip())  # plain dmesg: seconds since boot
        return None, bracket.group(1) if bracket else line.strip()
    stamp, zone, rest = match.groups()
    if " kernel: " in rest[:80]:  # journal lines: "<host> kernel: <message>"
        rest = rest.split(" kernel: ", 1)[1]
    return (stamp, zone), rest


def _iso_time(stamp: tuple[str, str | None] | None) -> str | None:
    """The ISO 8601 UTC time of a (time, zone) from :func:`_stamp_and_message`, or None."""
    if stamp is None:
        return None
    text, zone = stamp
    if zone and zone != "Z" and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    when = parse_timestamp(text + (zone or ""))
    return when.isoformat(timespec="seconds") if when else None


#: Substrings one of which is in every message :data:`_IO_ERROR` matches (one per alternative).
_IO_ERROR_HINTS = ("I/O error", "critical ", " error (device ", "ata", "nvme")
#: The same for :data:`_DRIVER_ERROR`, lower-case: in a message that is ASCII, the pattern (case-insensitive)
#: can match only where one of them is in the lower-cased message. Other messages go to the pattern itself.
_DRIVER_ERROR_HINTS = ("firmware", "probe of ", "*error*", "device ", "gpu hang", "ring ", "hardware error",
                       "machine check", "task ", "call trace", "bug:", "oops", "kernel panic")


def _io_error(message: str) -> re.Match[str] | None:
    return _IO_ERROR.search(message) if any(hint in message for hint in _IO_ERROR_HINTS) else None


def _driver_error(message: str) -> re.Match[str] | None:
    if message.isascii():
        lowered = message.lower()
        if not any(hint in lowered for hint in _DRIVER_ERROR_HINTS):
            return None
    return _DRIVER_ERROR.search(message)


def parse_kernel_log(lines: Iterable[str]) -> dict[str, Any]:
    """Find OOM kills, segfaults and fatal traps, I/O errors and driver errors in kernel-log lines."""
    oom, crashes, io, driver = [], [], [], []
    io_devices: Counter[str] = Counter()
    driver_kinds: Counter[str] = Counter()
    total = 0
    for raw in lines:
        if not raw.strip():
            continue
        total += 1
        stamp, message = _stamp_and_message(raw)
        if match := _OOM.search(message):
            when = _iso_time(stamp)
            rss = match.group(3)
            oom.append({"time": when, "pid": int(match.group(1)), "process": match.group(2),
                        "rss_kb": int(rss) if rss else None,
                        "cgroup": message.startswith("Memory cgroup")})
            continue
        if match := _SEGFAULT.search(message):
            when = _iso_time(stamp)
            crashes.append({"time": when, "process": match.group(1), "pid": int(match.group(2)),
                            "signal": "SIGSEGV", "kind": "segfault", "address": match.group(3),
                            "module": match.group(4)})
            continue
        if match := _TRAP.search(message):
            when = _iso_time(stamp)
            trap = match.group(3).replace(" fault", "")
            crashes.append({"time": when, "process": match.group(1), "pid": int(match.group(2)),
                            "signal": _TRAP_SIGNALS.get(trap, "SIGSEGV" if "protection" in trap else None),
                            "kind": trap, "address": None,
                            "module": module.group(1) if (module := _FAULT_MODULE.search(message)) else None})
            continue
        if match := _FATAL_SIGNAL.search(message):
            when = _iso_time(stamp)
            if not any(c["pid"] == int(match.group(2)) for c in crashes):
                crashes.append({"time": when, "process": match.group(1), "pid": int(match.group(2)),
                                "signal": signal_name(match.group(3)) or f"signal {match.group(3)}",
                                "kind": "fatal signal", "address": None, "module": None})
            continue
        if match := _io_error(message):
            when = _iso_time(stamp)
            groups = match.groups()
            device = next((groups[i] for i in (0, 1, 2, 4, 5, 6) if groups[i]), None)
            io_devices[device or "?"] += 1
            if len(io) < MAX_EVENTS:
                io.append({"time": when, "device": device, "message": message[:300]})
            continue
        if match := _driver_error(message):
            when = _iso_time(stamp)
            driver_kinds[match.group(1)] += 1
            if len(driver) < MAX_EVENTS:
                driver.append({"time": when, "message": message[:300]})
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
    """Sort Windows System-log events into unexpected shutdowns, disk errors, driver errors and other errors."""
    shutdowns, disk, driver, other = [], [], [], []
    for event in events:
        if not isinstance(event, dict):
            continue
        provider = str(event.get("ProviderName") or "")
        event_id = event.get("Id")
        when = parse_timestamp(event.get("TimeCreated"))
        entry = {"time": when.isoformat(timespec="seconds") if when else None, "id": event_id, "provider": provider,
                 "message": str(event.get("Message") or "")[:300]}
        lowered = provider.lower()
        if (event_id == 41 and "kernel-power" in lowered) or (event_id == 6008 and lowered == "eventlog"):
            shutdowns.append(entry)
        elif lowered in _WINDOWS_DISK_PROVIDERS:
            disk.append(entry)
        elif lowered in _WINDOWS_DRIVER_PROVIDERS or "driver" in entry["message"].lower():
            driver.append(entry)
        elif event.get("Level") in (1, 2):
            other.append(entry)
    return {"unexpected_shutdowns": shutdowns[:MAX_EVENTS], "unexpected_shutdown_count": len(shutdowns),
            "disk_errors": disk[:MAX_EVENTS], "io_error_count": len(disk),
            "driver_errors": driver[:MAX_EVENTS], "driver_error_count": len(driver),
            "other_errors": other[:MAX_EVENTS], "other_error_count": len(other)}


def parse_panic_report(text: str) -> str | None:
    """Return the panic string of a macOS ``.panic`` or kernel ``.ips`` report (its first panic line)."""
    for line in text.splitlines()[:400]:
        stripped = line.strip()
        if stripped.startswith("{") and "panicString" in stripped:
            try:
                return str(json.loads(stripped).get("panicString", "")).splitlines()[0][:300] or None
            except (json.JSONDecodeError, IndexError):
                pass
        if '"panicString"' in stripped:
            match = re.search(r'"panicString"\s*:\s*"((?:[^"\\]|\\.)*)', stripped)
            if match:
                return match.group(1).split("\\n")[0][:300]
        if stripped.startswith("panic("):
            return stripped[:300]
    return None


def parse_mac_shutdown_cause(text: str) -> dict[str, Any] | None:
    """Return the last ``Previous shutdown cause: N`` of ``log show`` output, with what N means."""
    causes = re.findall(r"Previous shutdown cause:\s*(-?\d+)", text)
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
