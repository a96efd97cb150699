"""What was installed, upgraded or removed lately, and which packages are held back or broken.

"It stopped working after the update" is one of the commonest tickets; this
answers "which update?". Linux reads apt's history and dpkg's log (or
``dnf history``), ``apt-mark showhold`` and ``dpkg --audit``; Windows the
Windows Update history; macOS ``softwareupdate --history``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..context import CollectContext
from ..model import ItemKind, ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, parse_timestamp, powershell, read_json, read_text
from agent.regexes import rx

RECENT_TRANSACTIONS = 10
HISTORY_BYTES = 512 * 1024
APT_HISTORY = "/var/log/apt/history.log"
DPKG_LOG = "/var/log/dpkg.log"
#: What ``apt-mark showhold`` answers, in a hundredth of its time (it loads the whole apt cache).
DPKG_STATUS = ("dpkg-query", "-W", "-f", "${Status}\t${Package}\n")
DPKG_AUDIT = ("dpkg", "--audit")
DNF_HISTORY = ("dnf", "history", "list")
MAC_HISTORY = ("softwareupdate", "--history")

WINDOWS_UPDATE_SCRIPT = (
    "$searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher(); "
    "$count = $searcher.GetTotalHistoryCount(); "
    "$searcher.QueryHistory(0, [Math]::Min($count, 40)) | Where-Object { $_.Title } | "
    "Select-Object @{n='Date';e={$_.Date.ToUniversalTime().ToString('o')}},Title,ResultCode,HResult,Operation | "
    "ConvertTo-Json -Depth 2"
)
#: IUpdateHistoryEntry.ResultCode (OperationResultCode).
_RESULT_CODES = {0: "not started", 1: "in progress", 2: "succeeded", 3: "succeeded with errors", 4: "failed",
                 5: "aborted"}
_APT_ACTIONS = ("Install", "Upgrade", "Remove", "Purge", "Downgrade", "Reinstall")


def parse_apt_history(text: str) -> list[dict[str, Any]]:
    """Parse apt's history.log into transactions (newest last): time, command, packages per action, error."""
    transactions: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "Start-Date":
            current = {"time": re.sub(r"\s+", " ", value.strip()), "command": None, "actions": {}, "error": None}
            transactions.append(current)
        elif current is None:
            continue
        elif key == "Commandline":
            current["command"] = value.strip()[:200]
        elif key in _APT_ACTIONS:
            names = re.findall(r"(?:^|\), )([^\s:(]+)(?::\w+)? \(", value)
            current["actions"][key.lower()] = len(names)
            current.setdefault("packages", []).extend(names[:10])
        elif key == "Error":
            current["error"] = value.strip()[:300]
    for transaction in transactions:
        transaction["packages"] = transaction.get("packages", [])[:10]
    return transactions


_DPKG_STATUS = rx(r"^\S+ \S+ status (\S+) (\S+) ")


def half_installed(dpkg_log: str) -> list[str]:
    """Return packages dpkg.log last left half-installed or half-configured (a broken upgrade)."""
    state: dict[str, str] = {}
    for line in dpkg_log.splitlines():
        if " status " in line and (match := _DPKG_STATUS.match(line)):
            state[match.group(2).split(":")[0]] = match.group(1)
    return sorted(name for name, status in state.items() if status in ("half-installed", "half-configured",
                                                                      "unpacked", "triggers-awaited"))


#: The states dpkg leaves a package in when all went well.
_SETTLED = frozenset({"installed", "not-installed", "config-files"})


def without_routine_status(dpkg_log: str) -> tuple[str, int]:
    """dpkg.log without its routine ``status`` lines, and how many lines went.

    dpkg logs every step of an install or upgrade as a status (half-installed,
    unpacked, half-configured, installed): about three lines in four of the file,
    each saying again what the ``install``, ``upgrade`` and ``configure`` lines
    say. Kept: every other line (startup, install, upgrade, remove, purge,
    configure, trigproc, conffile) and the last status of each package that did
    not end settled (what a broken upgrade left it in).
    """
    lines = dpkg_log.splitlines(keepends=True)
    statuses: dict[int, str] = {}
    last: dict[str, int] = {}
    for index, line in enumerate(lines):
        if " status " in line and (match := _DPKG_STATUS.match(line)):
            statuses[index] = match.group(1)
            last[match.group(2)] = index
    unsettled = {index for index in last.values() if statuses[index] not in _SETTLED}
    kept = [line for index, line in enumerate(lines) if index not in statuses or index in unsettled]
    return "".join(kept), len(lines) - len(kept)


def held_packages(text: str) -> list[str]:
    """Return the packages ``dpkg-query -W -f '${Status}\\t${Package}'`` marks ``hold`` (apt upgrades skip them)."""
    return sorted(line.split("\t", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("hold ") and "\t" in line)


#: What ``dpkg-query -W -f '${Status}'`` says of a package installed as asked, with nothing wrong.
_INSTALLED_AS_ASKED = "install ok installed"


def without_settled_packages(status_text: str) -> tuple[str, int]:
    """dpkg-query's status list without the packages installed as asked, and how many lines went.

    Kept: every package held, marked for removal or purge, left half-installed,
    unpacked or half-configured, or removed with its configuration files kept:
    the ones an engineer looks for in this list.
    """
    lines = status_text.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(_INSTALLED_AS_ASKED + "\t")]
    return "".join(kept), len(lines) - len(kept)


def parse_dpkg_audit(text: str) -> list[str]:
    """Return the package names ``dpkg --audit`` lists (indented ``name  description`` lines)."""
    return sorted({line.split()[0] for line in text.splitlines() if line.startswith(" ") and line.strip()})


def parse_dnf_history(text: str) -> list[dict[str, Any]]:
    """Parse ``dnf history list`` rows (``ID | Command line | Date and time | Action(s) | Altered``), newest first."""
    rows = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        count, *flags = fields[4].split() or [""]
        # Flags after the count: E (errors), EE (errors and output), * (aborted), < > (rpmdb changed outside dnf).
        rows.append({"id": int(fields[0]), "command": fields[1], "time": fields[2], "action": fields[3],
                     "packages": int(count) if count.isdigit() else None,
                     "error": any("E" in flag or "*" in flag for flag in flags)})
    return rows


def parse_softwareupdate_history(text: str) -> list[dict[str, Any]]:
    """Parse ``softwareupdate --history`` (name, version, ``MM/DD/YYYY, HH:MM:SS`` columns)."""
    rows = []
    for line in text.splitlines():
        match = re.match(r"^(.+?)\s{2,}(\S+)\s{2,}(\d\d/\d\d/\d{4}, \d\d:\d\d:\d\d)\s*$", line)
        if match:
            rows.append({"title": match.group(1).strip(), "version": match.group(2), "time": match.group(3)})
    return rows


class UpdatesCollector(Collector):
    """Recent package and system updates, held and broken packages."""

    name = "updates"
    category = "updates"
    description = "Recent updates and package changes (apt, dnf, Windows Update, softwareupdate), held and broken packages."
    platforms = ALL_PLATFORMS
    timeout = 8.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        facts: dict[str, Any] = {"manager": None, "recent": [], "held": [], "broken": [], "failed": []}
        if ctx.recorded("updates/apt-history.log") or os.path.exists(APT_HISTORY):
            facts["manager"] = "apt"
            history = read_text(ctx, ctx.copy_file("updates/apt-history.log", APT_HISTORY, max_bytes=HISTORY_BYTES,
                                                   kind=ItemKind.LOG)) or ""
            transactions = parse_apt_history(history)
            facts["recent"] = transactions[-RECENT_TRANSACTIONS:][::-1]
            facts["failed"] = [t for t in transactions[-RECENT_TRANSACTIONS:] if t["error"]]
        if ctx.recorded("updates/dpkg.log") or os.path.exists(DPKG_LOG):
            copied = ctx.copy_file("updates/dpkg.log", DPKG_LOG, max_bytes=HISTORY_BYTES, kind=ItemKind.LOG)
            dpkg_log = read_text(ctx, copied) or ""
            facts["broken"] = half_installed(dpkg_log)
            kept, dropped = without_routine_status(dpkg_log)
            if dropped:  # the engineer reads the changes, not each step towards them (and the bundle scrubs less)
                ctx.keep_only(copied, kept, f"{dropped} routine status lines left out (packages that ended "
                                            "installed or removed); the last status of any other package is kept")
        if ctx.available("updates/dpkg-status.txt", "dpkg-query"):
            status_item = ctx.run("updates/dpkg-status.txt", DPKG_STATUS, timeout=4)
            status_text = read_text(ctx, status_item) or ""
            facts["held"] = held_packages(status_text)
            kept, settled = without_settled_packages(status_text)
            if settled:  # the software category lists every package and its version; here only the odd ones out
                ctx.keep_only(status_item, kept, f"{settled} packages installed as asked left out (the software "
                                                 "category lists them); held, half-installed and removed ones are kept")
        if ctx.available("updates/dpkg-audit.txt", "dpkg"):
            audit = parse_dpkg_audit(read_text(ctx, ctx.run("updates/dpkg-audit.txt", DPKG_AUDIT, timeout=4,
                                                            ok_codes=(0, 1))) or "")
            facts["broken"] = sorted(set(facts["broken"]) | set(audit))
        if facts["manager"] is None and ctx.available("updates/dnf-history.txt", "dnf"):
            facts["manager"] = "dnf"
            rows = parse_dnf_history(read_text(ctx, ctx.run("updates/dnf-history.txt", DNF_HISTORY, timeout=6)) or "")
            facts["recent"] = rows[:RECENT_TRANSACTIONS]
            facts["failed"] = [row for row in rows[:RECENT_TRANSACTIONS] if row["error"]]
        if facts["manager"] is None:
            ctx.note("updates/apt-history.log", APT_HISTORY, ItemStatus.NOT_FOUND,
                     "no apt history and no dnf: package history is not known")
        return facts

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        entries = as_list(read_json(ctx, ctx.run("updates/windows-update-history.json",
                                                 powershell(WINDOWS_UPDATE_SCRIPT), timeout=8)))
        recent = []
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            when = parse_timestamp(entry.get("Date"))
            code = entry.get("ResultCode")
            recent.append({"time": when.isoformat(timespec="seconds") if when else None,
                           "title": str(entry.get("Title") or "")[:200],
                           "result": _RESULT_CODES.get(code, str(code)),
                           "hresult": f"0x{entry['HResult'] & 0xFFFFFFFF:08X}" if isinstance(entry.get("HResult"), int)
                           and entry["HResult"] else None})
        recent.sort(key=lambda e: e["time"] or "", reverse=True)
        return {"manager": "windows-update", "recent": recent[:RECENT_TRANSACTIONS * 2], "held": [], "broken": [],
                "failed": [e for e in recent[:RECENT_TRANSACTIONS * 2] if e["result"] in ("failed", "aborted")]}

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        rows = parse_softwareupdate_history(read_text(ctx, ctx.run("updates/softwareupdate-history.txt", MAC_HISTORY,
                                                                   timeout=6)) or "")
        return {"manager": "softwareupdate", "recent": rows[-RECENT_TRANSACTIONS:][::-1], "held": [], "broken": [],
                "failed": []}
