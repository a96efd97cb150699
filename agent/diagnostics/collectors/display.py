"""Display and login: what the graphical session logged, which monitors are connected, and whether
the PC went down without shutting down.

"The screen went black", "I get logged out", "the second monitor is not
detected" are helpdesk calls whose evidence sits in the graphical session's
logs. Linux reads the Xorg log, the display manager's and the compositor's
journal (``journalctl -b -p warning``), asks ``xrandr`` for the monitors when
a display is there (a share started from a console or over SSH has none: the
item is skipped and says so) and ``last -x`` for reboots without a shutdown
and sessions that ended in a crash. Windows asks CIM for the graphics adapters
and monitors and the System log for Winlogon and unexpected-shutdown events;
macOS asks ``system_profiler SPDisplaysDataType`` and ``last``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..context import CollectContext
from ..model import ItemKind, ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, powershell, read_json, read_text
from agent.regexes import rx

#: How many error lines of one log are kept in the facts (the staged log keeps them all).
MAX_LINES = 10
XORG_LOG_MAX_BYTES = 1024 * 1024

DISPLAY_MANAGER_JOURNAL = ("journalctl", "-b", "-p", "warning", "--no-pager", "-o", "short-iso", "-n", "400",
                           "-u", "display-manager.service", "-u", "gdm.service", "-u", "gdm3.service",
                           "-u", "sddm.service", "-u", "lightdm.service")
#: Several matches of one field are ORed by journalctl: any of these programs.
COMPOSITOR_JOURNAL = ("journalctl", "-b", "-p", "warning", "--no-pager", "-o", "short-iso", "-n", "400",
                      "_COMM=gnome-shell", "_COMM=kwin_wayland", "_COMM=kwin_x11", "_COMM=Xwayland",
                      "_COMM=Xorg", "_COMM=mutter", "_COMM=sway", "_COMM=weston")
XRANDR = ("xrandr", "--query")
LAST = ("last", "-x", "-n", "60", "--time-format", "iso")
MAC_LAST = ("last", "-n", "60")
MAC_DISPLAYS = ("system_profiler", "-json", "SPDisplaysDataType")

WINDOWS_DISPLAY_SCRIPT = (
    "$since = (Get-Date).AddDays(-14); "
    "$video = Get-CimInstance Win32_VideoController -ErrorAction SilentlyContinue | Select-Object Name,Status,"
    "DriverVersion,CurrentHorizontalResolution,CurrentVerticalResolution; "
    "$monitors = Get-CimInstance -Namespace root\\wmi -ClassName WmiMonitorID -ErrorAction SilentlyContinue | "
    "Select-Object Active,@{n='Name';e={-join [char[]]($_.UserFriendlyName | Where-Object { $_ })}}; "
    "$events = Get-WinEvent -FilterHashtable @{LogName='System'; Id=41,1074,6005,6006,6008,7001,7002; "
    "StartTime=$since} -MaxEvents 200 -ErrorAction SilentlyContinue | Select-Object "
    "@{n='TimeCreated';e={$_.TimeCreated.ToUniversalTime().ToString('o')}},Id,ProviderName; "
    "ConvertTo-Json -Depth 3 -InputObject @{VideoControllers=@($video); Monitors=@($monitors); Events=@($events)}"
)

#: "[    14.460] (EE) message"; Xorg before 1.13 wrote no uptime in front.
_XORG_LINE = rx(r"^(?:\[\s*[\d.]+\]\s*)?\((EE|WW)\)\s*(.*)$")
_XORG_UPTIME = rx(r"^\[\s*[\d.]+\]\s*")
_XRANDR_OUTPUT = rx(r"^(\S+) (connected|disconnected)( primary)?(?: (\d+x\d+)\+\d+\+\d+)?")
_LAST_SYSTEM = rx(r"^(reboot|shutdown)\s+(?:system (?:boot|down)|~)\s+(?:(\d[\w.+~-]*)\s+)?(.*?)\s*$")
_ISO_TIME = rx(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:?\d\d|Z)?")
_BSD_TIME = rx(r"[A-Z][a-z]{2} [A-Z][a-z]{2}\s+\d+ \d\d:\d\d")


def session_type(env: dict[str, str] | Any) -> dict[str, Any]:
    """Say what graphical session the share runs in, from the variables a session sets."""
    kind = env.get("XDG_SESSION_TYPE") or ("wayland" if env.get("WAYLAND_DISPLAY") else
                                           "x11" if env.get("DISPLAY") else None)
    return {"type": kind, "desktop": env.get("XDG_CURRENT_DESKTOP") or env.get("DESKTOP_SESSION"),
            "display": bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))}


def parse_xorg_log(text: str) -> dict[str, Any]:
    """Count an Xorg log's errors (EE) and warnings (WW), keep the first errors, and spot a fatal server error."""
    errors, warnings = [], 0
    fatal = None
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if "Fatal server error" in line:
            # The reason follows on the same line or the next ones, marked (EE) or (older servers) bare.
            candidates = [line.split("Fatal server error", 1)[1].lstrip(":")] + lines[index + 1:index + 3]
            details = (_XORG_UPTIME.sub("", rest).replace("(EE)", "").strip() for rest in candidates)
            fatal = next((detail for detail in details if detail), "")[:300] or "Fatal server error"
            break  # what follows is the server's standard farewell ("Please consult …")
        match = _XORG_LINE.match(line)
        if match:
            if match.group(1) == "WW":
                warnings += 1
            elif match.group(2).strip():
                errors.append(match.group(2).strip()[:300])
    return {"error_count": len(errors), "warning_count": warnings, "errors": errors[:MAX_LINES], "fatal": fatal}


def parse_journal_warnings(text: str) -> dict[str, Any]:
    """Count the lines of a ``journalctl -o short-iso`` excerpt and keep the last few messages."""
    messages = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("--"):
            continue
        parts = line.split(None, 2)
        messages.append(parts[2][:300] if len(parts) == 3 and _ISO_TIME.match(parts[0]) else line.strip()[:300])
    return {"count": len(messages), "last": messages[-MAX_LINES:]}


def parse_xrandr(text: str) -> list[dict[str, Any]]:
    """Parse ``xrandr --query``: each output, whether a monitor is connected, and its mode when it is on."""
    outputs = []
    for line in text.splitlines():
        match = _XRANDR_OUTPUT.match(line)
        if match:
            outputs.append({"output": match.group(1), "connected": match.group(2) == "connected",
                            "primary": bool(match.group(3)), "mode": match.group(4),
                            "on": match.group(4) is not None})
    return outputs


def parse_last(text: str) -> dict[str, Any]:
    """Read ``last -x`` (Linux) or ``last`` (macOS): reboots without a shutdown before them, and sessions
    that ended in a crash, which is how an unclean shutdown shows from the login records.

    ``last`` lists the newest first; walked oldest first, a reboot that follows
    another reboot with no shutdown between means the earlier boot ended uncleanly.
    """
    system: list[tuple[str, str | None]] = []
    crashed_sessions = 0
    for line in text.splitlines():
        match = _LAST_SYSTEM.match(line)
        if match:
            when = _ISO_TIME.search(match.group(3)) or _BSD_TIME.search(match.group(3))
            system.append((match.group(1), when.group(0) if when else None))
        elif re.search(r"\s-\s+crash\b", line):
            crashed_sessions += 1
    unclean = []
    previous: tuple[str, str | None] | None = None
    for kind, when in reversed(system):
        if kind == "reboot" and previous is not None and previous[0] == "reboot":
            unclean.append({"boot": previous[1], "next_boot": when})
        previous = (kind, when)
    return {"reboots": sum(1 for kind, _ in system if kind == "reboot"),
            "shutdowns": sum(1 for kind, _ in system if kind == "shutdown"),
            "unclean_shutdowns": unclean[-MAX_LINES:], "unclean_shutdown_count": len(unclean),
            "crashed_sessions": crashed_sessions}


def parse_windows_display(document: Any) -> dict[str, Any]:
    """Read the Windows display script's JSON: adapters, monitors, logons and unexpected shutdowns."""
    document = document if isinstance(document, dict) else {}
    adapters = [{"name": a.get("Name"), "status": a.get("Status"), "driver": a.get("DriverVersion"),
                 "mode": (f"{a['CurrentHorizontalResolution']}x{a['CurrentVerticalResolution']}"
                          if a.get("CurrentHorizontalResolution") else None)}
                for a in as_list(document.get("VideoControllers")) if isinstance(a, dict)]
    monitors = [{"name": m.get("Name") or None, "connected": bool(m.get("Active", True))}
                for m in as_list(document.get("Monitors")) if isinstance(m, dict)]
    events = [e for e in as_list(document.get("Events")) if isinstance(e, dict)]
    unexpected = [e.get("TimeCreated") for e in events if e.get("Id") in (41, 6008)]
    return {"adapters": adapters, "adapter_problems": [a["name"] for a in adapters if a["status"] not in (None, "OK")],
            "monitors": monitors,
            "login": {"logons": sum(1 for e in events if e.get("Id") == 7001),
                      "logoffs": sum(1 for e in events if e.get("Id") == 7002),
                      "unclean_shutdown_count": len(unexpected),
                      "unclean_shutdowns": [{"boot": None, "next_boot": when} for when in unexpected[:MAX_LINES]],
                      "crashed_sessions": 0}}


def parse_mac_displays(document: Any) -> dict[str, Any]:
    """Read ``system_profiler -json SPDisplaysDataType``: graphics chips and the displays attached to each."""
    adapters, monitors = [], []
    for gpu in as_list((document or {}).get("SPDisplaysDataType") if isinstance(document, dict) else None):
        if not isinstance(gpu, dict):
            continue
        adapters.append({"name": gpu.get("sppci_model") or gpu.get("_name"), "status": None, "driver": None,
                         "mode": None})
        for screen in as_list(gpu.get("spdisplays_ndrvs")):
            if isinstance(screen, dict):
                monitors.append({"name": screen.get("_name"), "connected": True,
                                 "mode": screen.get("_spdisplays_resolution") or screen.get("spdisplays_resolution"),
                                 "primary": screen.get("spdisplays_main") == "spdisplays_yes"})
    return {"adapters": adapters, "adapter_problems": [], "monitors": monitors}


class DisplayCollector(Collector):
    """The graphical session's logs, the monitors, and unclean shutdowns seen from the login records."""

    name = "display"
    category = "display"
    description = ("Display and login: the Xorg log, the display manager's and compositor's warnings, connected "
                   "monitors (when a display is available), and reboots without a shutdown from the login records.")
    platforms = ALL_PLATFORMS
    timeout = 6.0

    def __init__(self, xorg_logs: tuple[str, ...] = ("/var/log/Xorg.0.log", "~/.local/share/xorg/Xorg.0.log")):
        #: Where Xorg writes its log: the system one (root Xorg) and the user one (rootless Xorg).
        self.xorg_logs = xorg_logs

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        facts: dict[str, Any] = {"session": session_type(ctx.env)}
        xorg = None
        for candidate in self.xorg_logs:
            path = Path(ctx.expand_user(candidate))
            if path.is_file():
                item = ctx.copy_file(f"display/{path.name}", path, max_bytes=XORG_LOG_MAX_BYTES)
                xorg = {"path": candidate, **parse_xorg_log(read_text(ctx, item) or "")}
                break
        facts["xorg"] = xorg
        journald = os.path.isdir("/run/systemd/journal")
        for key, relpath, argv in (("display_manager", "display/journal-display-manager.txt", DISPLAY_MANAGER_JOURNAL),
                                   ("compositor", "display/journal-compositor.txt", COMPOSITOR_JOURNAL)):
            if ctx.available(relpath, "journalctl") and (journald or ctx.recorded(relpath)):
                item = ctx.run(relpath, argv, timeout=4, kind=ItemKind.LOG)
                facts[key] = parse_journal_warnings(read_text(ctx, item) or "")
            else:
                ctx.note(relpath, " ".join(argv), ItemStatus.SKIPPED, "journald is not running; no journal to read",
                         kind=ItemKind.LOG)
                facts[key] = None
        facts["monitors"] = self._xrandr(ctx)
        facts["login"] = self._last(ctx, LAST)
        return facts

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        item = ctx.run("display/windows-display.json", powershell(WINDOWS_DISPLAY_SCRIPT), timeout=6)
        return {"session": {"type": "windows", "desktop": None, "display": True},
                **parse_windows_display(read_json(ctx, item))}

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        item = ctx.run("display/displays.json", MAC_DISPLAYS, timeout=5)
        facts = {"session": {"type": "quartz", "desktop": None, "display": True},
                 **parse_mac_displays(read_json(ctx, item))}
        facts["login"] = self._last(ctx, MAC_LAST)
        return facts

    def _xrandr(self, ctx: CollectContext) -> list[dict[str, Any]] | None:
        relpath = "display/xrandr.txt"
        if not ctx.recorded(relpath):
            if not ctx.env.get("DISPLAY"):
                ctx.note(relpath, " ".join(XRANDR), ItemStatus.SKIPPED,
                         "no display to ask (DISPLAY is not set: started from a console or over SSH)")
                return None
            if not ctx.which("xrandr"):
                ctx.note(relpath, " ".join(XRANDR), ItemStatus.NOT_FOUND, "xrandr is not installed (x11-xserver-utils)")
                return None
        return parse_xrandr(read_text(ctx, ctx.run(relpath, XRANDR, timeout=3)) or "")

    def _last(self, ctx: CollectContext, argv: tuple[str, ...]) -> dict[str, Any] | None:
        relpath = "display/last.txt"
        if not ctx.available(relpath, "last"):
            ctx.note(relpath, " ".join(argv), ItemStatus.NOT_FOUND, "last is not installed")
            return None
        item = ctx.run(relpath, argv, timeout=3)
        text = read_text(ctx, item)
        return None if text is None else parse_last(text)
