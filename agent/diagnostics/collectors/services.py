"""Which system services have failed or should run but do not.

Linux asks systemd; a PC (or container) without systemd as PID 1 gets a clean
result that says so instead of an error. Windows lists Automatic services that
are stopped; macOS lists launchd jobs whose last exit status is not zero.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, init_process_name, iter_lines, powershell, read_json, systemd_booted

SYSTEMCTL_COMMANDS = {
    "services/systemctl-failed.txt": ("systemctl", "--failed", "--no-legend", "--plain", "--no-pager"),
    "services/systemctl-enabled.txt": ("systemctl", "list-unit-files", "--type=service", "--state=enabled",
                                       "--no-legend", "--plain", "--no-pager"),
    "services/systemctl-services.txt": ("systemctl", "list-units", "--type=service", "--all",
                                        "--no-legend", "--plain", "--no-pager"),
}

WINDOWS_SERVICES_SCRIPT = (
    "Get-Service -ErrorAction SilentlyContinue | Select-Object Name,DisplayName,"
    "@{n='Status';e={[string]$_.Status}},@{n='StartType';e={[string]$_.StartType}} | ConvertTo-Json -Depth 2"
)
# Get-Service enums when PowerShell writes them as numbers instead of names.
_WINDOWS_STATUS = {1: "Stopped", 2: "StartPending", 3: "StopPending", 4: "Running", 5: "ContinuePending",
                   6: "PausePending", 7: "Paused"}
_WINDOWS_START = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


class ServicesCollector(Collector):
    """Failed or stopped-but-expected services from systemd, the Windows SCM or launchd."""

    name = "services"
    category = "services"
    description = "Failed services and services set to start automatically that are not running."
    platforms = ALL_PLATFORMS
    timeout = 10.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        init = init_process_name()
        facts: dict[str, Any] = {"init_system": init, "systemd": False, "failed": None,
                                 "enabled_not_running": None, "service_count": None}
        if not ctx.which("systemctl"):
            for relpath, argv in SYSTEMCTL_COMMANDS.items():
                ctx.note(relpath, shlex.join(argv), ItemStatus.NOT_FOUND, "systemctl is not installed")
            facts["note"] = "systemctl is not installed; services are not managed by systemd"
            facts["checked"] = False
            return facts
        if not systemd_booted():
            for relpath, argv in SYSTEMCTL_COMMANDS.items():
                ctx.note(relpath, shlex.join(argv), ItemStatus.SKIPPED, f"systemd is not running (PID 1 is {init})")
            facts["note"] = f"systemd is not the init system (PID 1 is {init}); services were not checked"
            facts["checked"] = False
            return facts

        items = {relpath: ctx.run(relpath, argv, timeout=5) for relpath, argv in SYSTEMCTL_COMMANDS.items()}
        failed = parse_unit_list(iter_lines(ctx, items["services/systemctl-failed.txt"]))
        enabled = [line.split()[0] for line in iter_lines(ctx, items["services/systemctl-enabled.txt"])
                   if line.split() and "@." not in line.split()[0]]  # templates have no instance to run
        units = {u["unit"]: u for u in parse_unit_list(iter_lines(ctx, items["services/systemctl-services.txt"]))}
        not_running = []
        for unit in enabled:
            state = units.get(unit)
            if state is None or state["active"] != "active":
                not_running.append({"unit": unit, "active": state["active"] if state else "inactive",
                                    "sub": state["sub"] if state else "dead"})
        facts.update({
            "checked": True,
            "systemd": True,
            "failed": failed,
            "enabled_not_running": not_running,
            "service_count": len(units),
        })
        return facts

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        data = as_list(read_json(ctx, ctx.run("services/windows-services.json", powershell(WINDOWS_SERVICES_SCRIPT),
                                              timeout=8)))
        services = [
            {"name": s.get("Name"), "display_name": s.get("DisplayName"),
             "status": _WINDOWS_STATUS.get(s.get("Status"), s.get("Status")),
             "start_type": _WINDOWS_START.get(s.get("StartType"), s.get("StartType"))}
            for s in data if isinstance(s, dict)
        ]
        return {
            "service_count": len(services),
            "running": sum(1 for s in services if s["status"] == "Running"),
            "automatic_stopped": [
                {"name": s["name"], "display_name": s["display_name"], "status": s["status"]}
                for s in services if s["start_type"] == "Automatic" and s["status"] != "Running"
            ],
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        jobs = parse_launchctl_list(iter_lines(ctx, ctx.run("services/launchctl-list.txt", ("launchctl", "list"),
                                                            timeout=5)))
        return {
            "service_count": len(jobs),
            "running": sum(1 for job in jobs if job["pid"] is not None),
            "nonzero_status": [job for job in jobs if job["status"] not in (0, None)],
        }


#: The state mark systemctl puts before a unit when it writes to a terminal or without ``--plain``
#: ("●" failed or active, "*" where the terminal is not UTF-8, "○" inactive since systemd 246).
_UNIT_MARKS = ("●", "○", "*", "x", "×")


def parse_unit_list(lines) -> list[dict[str, str]]:
    """Parse ``systemctl list-units`` / ``--failed`` lines: unit, load, active, sub, description.

    Reads the plain form, the form with a state mark before the unit, the header and legend of a run
    without ``--no-legend`` (skipped), and ``--output=json`` (systemd 250+).
    """
    lines = list(lines)
    text = "\n".join(lines).strip()
    if text.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            rows = None
        if isinstance(rows, list):
            return [{"unit": str(row.get("unit")), "load": str(row.get("load") or ""),
                     "active": str(row.get("active") or ""), "sub": str(row.get("sub") or ""),
                     "description": str(row.get("description") or "")}
                    for row in rows if isinstance(row, dict) and row.get("unit")]
    units = []
    for line in lines:
        fields = line.split(None, 5)
        if fields and fields[0] in _UNIT_MARKS:
            fields = fields[1:]
        else:
            fields = line.split(None, 4)
        if len(fields) < 4 or "." not in fields[0] or fields[1] in ("=",):
            continue
        units.append({"unit": fields[0], "load": fields[1], "active": fields[2], "sub": fields[3],
                      "description": " ".join(fields[4:]) if len(fields) > 4 else ""})
    return units


def parse_launchctl_list(lines) -> list[dict[str, Any]]:
    """Parse ``launchctl list`` (``PID<TAB>Status<TAB>Label``; ``-`` for no PID)."""
    jobs = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] == "PID":
            continue
        pid, status, label = fields
        try:
            jobs.append({"label": label.strip(), "pid": int(pid) if pid.strip() != "-" else None,
                         "status": int(status) if status.strip() not in ("-", "") else None})
        except ValueError:
            continue
    return jobs
