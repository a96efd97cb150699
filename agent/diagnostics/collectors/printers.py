"""Which printers the PC knows, which queues are stopped or failing, and what the print system last complained of.

Linux and macOS ask CUPS (``lpstat``) and read its error log; Windows lists
printers with their status and the state of the Print Spooler service.
Device URIs can carry credentials, so they stay in the raw (redacted) files
and never reach the facts.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..context import CollectContext
from ..model import ItemKind, ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, powershell, read_json, read_text
from agent.regexes import rx

LPSTAT_ALL = ("lpstat", "-t")
LPSTAT_LONG = ("lpstat", "-l", "-p")
CUPS_ERROR_LOGS = {"linux": "/var/log/cups/error_log", "darwin": "/private/var/log/cups/error_log"}
MAX_CUPS_ERRORS = 10

WINDOWS_PRINTERS_SCRIPT = (
    "$spooler = Get-Service -Name Spooler -ErrorAction SilentlyContinue; "
    "$printers = @(Get-Printer -ErrorAction SilentlyContinue | ForEach-Object { $p = $_; "
    "[pscustomobject]@{Name=$p.Name; DriverName=$p.DriverName; PortName=$p.PortName; Shared=$p.Shared; "
    "PrinterStatus=[string]$p.PrinterStatus; JobCount=$p.JobCount; "
    "ErrorJobs=@(Get-PrintJob -PrinterName $p.Name -ErrorAction SilentlyContinue | "
    "Where-Object { [string]$_.JobStatus -match 'Error|Blocked|Offline|PaperOut' }).Count} }); "
    "$default = (Get-CimInstance -ClassName Win32_Printer -Filter 'Default=TRUE' -ErrorAction SilentlyContinue).Name; "
    "[pscustomobject]@{Spooler=[pscustomobject]@{Status=[string]$spooler.Status; "
    "StartType=[string]$spooler.StartType}; Default=$default; Printers=$printers} | ConvertTo-Json -Depth 4"
)
#: Get-Printer statuses that need nobody's attention.
_WINDOWS_FINE = {"normal", "idle", "printing", "warmingup", "processing", "0", "", "none"}

_PRINTER = rx(r"^printer (\S+) (?:(is idle)|now printing (\S+?)|(disabled))\.?\s+(?:enabled )?since (.+?)(?: -)?$")
_ACCEPTING = rx(r"^(\S+) (not )?accepting requests since")
#: CUPS log levels: X emerg, A alert, C crit, E error, W warn, N notice, I info, D and d debug.
_CUPS_LINE = rx(r"^([XACEWNIDd]) \[([^\]]+)\] (.*)$")
_CUPS_ERROR_LEVELS = frozenset("XACE")
#: What CUPS says of an enabled queue whose printer cannot print ("printer-state-message"): unreachable,
#: offline, out of paper or toner, jammed. "Ready to print." or "Spooling job" are ordinary.
_QUEUE_TROUBLE = rx(r"not responding|unable to|can(?:no|')t|offline|off-line|not connected|"
                            r"become available|will retry|\berror|fail|jam|out of (?:paper|media|toner)|"
                            r"door open|cover open|busy", re.IGNORECASE)


def parse_lpstat(text: str) -> dict[str, Any]:
    """Parse ``lpstat -t`` (or ``-l -p``) output: scheduler, default, queues with state and reason, job count."""
    scheduler = None
    default = None
    printers: dict[str, dict[str, Any]] = {}
    last: dict[str, Any] | None = None
    jobs = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(("\t", " ")):
            detail = line.strip()
            if last is not None and detail and not detail.startswith(("Form mounted", "Content types", "Printer types",
                                                                      "Description", "Location", "Connection",
                                                                      "Interface", "On fault", "After fault",
                                                                      "Users allowed", "Forms allowed",
                                                                      "Banner required", "Charset sets",
                                                                      "Default pitch", "Default page size",
                                                                      "Default port settings", "(all)", "(none)")):
                if detail.startswith("Alerts:"):
                    alerts = detail.partition(":")[2].strip()
                    if alerts and alerts != "none":
                        last["alerts"] = alerts
                elif last.get("reason") is None:
                    last["reason"] = detail
            continue
        last = None
        if line.lower().startswith(("scheduler is ", "lpstat: scheduler is ")):
            scheduler = line.strip().lower().removeprefix("lpstat: ").rstrip(".") == "scheduler is running"
        elif line.startswith("system default destination:"):
            default = line.partition(":")[2].strip() or None
        elif line.startswith("no system default destination"):
            default = None
        elif match := _PRINTER.match(line.strip()):
            name = match.group(1)
            entry = printers.setdefault(name, {"name": name, "accepting": None})
            entry["state"] = "idle" if match.group(2) else "printing" if match.group(3) else "stopped"
            entry["enabled"] = not match.group(4)
            entry["since"] = match.group(5).strip()
            entry.setdefault("reason", None)
            last = entry
        elif match := _ACCEPTING.match(line.strip()):
            entry = printers.setdefault(match.group(1), {"name": match.group(1), "state": None, "enabled": None,
                                                         "reason": None})
            entry["accepting"] = not match.group(2)
            last = None  # its indented line repeats the rejection; the printer line has the real reason
        elif re.match(r"^\S+-\d+\s+\S+\s+\d+\s", line):
            jobs += 1
    return {"scheduler_running": scheduler, "default": default, "printers": list(printers.values()), "jobs": jobs}


def parse_cups_error_log(text: str) -> list[dict[str, str]]:
    """Return the error lines (``E``, and the graver ``C``, ``A``, ``X``) of a CUPS error_log as time and
    message, oldest first."""
    errors = []
    for line in text.splitlines():
        match = _CUPS_LINE.match(line)
        if match and match.group(1) in _CUPS_ERROR_LEVELS:
            errors.append({"time": match.group(2), "message": match.group(3)[:300]})
    return errors


def printer_problems(printers: list[dict[str, Any]], scheduler_running: bool | None) -> list[dict[str, str]]:
    """Name each stopped, rejecting or failing queue (and a print service that is down) with its reason."""
    problems = []
    if scheduler_running is False:
        problems.append({"printer": "*", "problem": "the print service (CUPS) is not running"})
    for printer in printers:
        reason = printer.get("reason") or printer.get("alerts")
        if printer.get("enabled") is False:
            problems.append({"printer": printer["name"], "problem": "queue stopped" + (f": {reason}" if reason else "")})
        elif printer.get("accepting") is False:
            problems.append({"printer": printer["name"],
                             "problem": "rejecting jobs" + (f": {reason}" if reason else "")})
        elif printer.get("status") and printer["status"].lower() not in _WINDOWS_FINE:
            problems.append({"printer": printer["name"], "problem": f"status {printer['status']}"})
        elif printer.get("error_jobs"):
            problems.append({"printer": printer["name"], "problem": f"{printer['error_jobs']} job(s) in error"})
        elif printer.get("reason") and _QUEUE_TROUBLE.search(printer["reason"]):
            problems.append({"printer": printer["name"], "problem": printer["reason"]})  # enabled, but cannot print
        elif printer.get("alerts") and _alert_errors(printer["alerts"]):
            problems.append({"printer": printer["name"], "problem": f"alerts {_alert_errors(printer['alerts'])}"})
    return problems


def _alert_errors(alerts: str) -> str:
    """The IPP printer-state-reasons of ``lpstat -l`` Alerts that stop printing (``media-jam-error``,
    ``offline-report``), comma-separated; warnings such as ``toner-low-warning`` are left out."""
    return ", ".join(a.strip() for a in alerts.split(",")
                     if a.strip().endswith("-error") or a.strip().startswith("offline"))


class PrintersCollector(Collector):
    """Print queues and their state, the print service, recent print-system errors."""

    name = "printers"
    category = "printers"
    description = "Printers and print queues with their state, stopped or failing queues, and recent CUPS errors."
    platforms = ALL_PLATFORMS
    timeout = 6.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        return self._cups(ctx, CUPS_ERROR_LOGS["linux"])

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        return self._cups(ctx, CUPS_ERROR_LOGS["darwin"])

    def _cups(self, ctx: CollectContext, error_log: str) -> dict[str, Any]:
        facts: dict[str, Any] = {"system": "cups", "scheduler_running": None, "default": None, "printers": [],
                                 "jobs": 0, "problems": [], "cups_errors": [], "cups_error_count": 0}
        if not ctx.available("printers/lpstat-t.txt", "lpstat"):
            ctx.note("printers/lpstat-t.txt", " ".join(LPSTAT_ALL), ItemStatus.NOT_FOUND,
                     "lpstat is not installed (no CUPS client)")
            facts["note"] = "lpstat is not installed; printers were not checked"
            return facts
        # lpstat exits 1 when it has no printers or no scheduler to ask; its output still says which.
        everything = ctx.run("printers/lpstat-t.txt", LPSTAT_ALL, timeout=3, ok_codes=(0, 1))
        long_form = ctx.run("printers/lpstat-l-p.txt", LPSTAT_LONG, timeout=3, ok_codes=(0, 1))
        parsed = parse_lpstat(read_text(ctx, everything) or "")
        for queue in parse_lpstat(read_text(ctx, long_form) or "")["printers"]:
            known = next((p for p in parsed["printers"] if p["name"] == queue["name"]), None)
            if known is not None and queue.get("alerts"):
                known["alerts"] = queue["alerts"]
        facts.update(parsed)
        if parsed["scheduler_running"] is False and not (ctx.which("cupsd") or os.path.exists("/usr/sbin/cupsd")):
            facts["scheduler_running"] = None  # a CUPS client without a local scheduler: nothing is down
            facts["note"] = "no local print service (cupsd is not installed)"
        errors: list[dict[str, str]] = []
        if ctx.recorded("printers/cups-error_log.txt") or os.path.exists(error_log):
            errors = parse_cups_error_log(read_text(ctx, ctx.copy_file(
                "printers/cups-error_log.txt", error_log, max_bytes=512 * 1024, kind=ItemKind.LOG)) or "")
        facts["cups_errors"] = errors[-MAX_CUPS_ERRORS:]
        facts["cups_error_count"] = len(errors)
        facts["problems"] = printer_problems(facts["printers"], facts["scheduler_running"])
        if not facts["printers"] and facts["scheduler_running"] is None and not facts.get("note"):
            facts["note"] = "no print queues and no answer from the print service"
        return facts

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = read_json(ctx, ctx.run("printers/windows-printers.json", powershell(WINDOWS_PRINTERS_SCRIPT),
                                      timeout=6)) or {}
        spooler = data.get("Spooler") if isinstance(data.get("Spooler"), dict) else {}
        printers = [
            {"name": p.get("Name"), "driver": p.get("DriverName"), "port": p.get("PortName"),
             "status": str(p.get("PrinterStatus") or "Normal"), "jobs": p.get("JobCount"),
             "error_jobs": p.get("ErrorJobs") or 0, "shared": p.get("Shared")}
            for p in as_list(data.get("Printers")) if isinstance(p, dict) and p.get("Name")
        ]
        running = (spooler.get("Status") == "Running") if spooler.get("Status") else None
        problems = printer_problems(printers, None)
        if running is False:
            problems.insert(0, {"printer": "*", "problem": f"the Print Spooler service is {spooler.get('Status')}"})
        return {"system": "windows-spooler", "scheduler_running": running, "default": data.get("Default"),
                "spooler": {"status": spooler.get("Status"), "start_type": spooler.get("StartType")},
                "printers": printers, "jobs": sum(p["jobs"] or 0 for p in printers), "problems": problems}
