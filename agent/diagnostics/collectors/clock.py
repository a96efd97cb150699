"""Whether the PC's clock is synchronised, and who is logged in.

A clock that drifts breaks sign-ins (Kerberos, TLS, one-time codes) in ways
that look like anything but the clock. Linux asks ``timedatectl show`` (or
``chronyc tracking``), Windows ``w32tm /query /status``, macOS
``systemsetup``; login sessions come from ``loginctl``, ``who`` or
``query user``.
"""

from __future__ import annotations

import re
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import ALL_PLATFORMS, Collector, parse_colon_pairs, read_text, systemd_booted

TIMEDATECTL = ("timedatectl", "show")
CHRONY = ("chronyc", "tracking")
LOGINCTL = ("loginctl", "list-sessions", "--no-legend", "--no-pager")
WHO = ("who",)
W32TM = ("w32tm", "/query", "/status")
QUERY_USER = ("query", "user")
MAC_NETWORK_TIME = ("systemsetup", "-getusingnetworktime")


#: ``timedatectl`` (status) keys across systemd versions, to the ``timedatectl show`` key they mean:
#: 219-238 "NTP synchronized" / "NTP enabled" (232-238 "Network time on"), 239-244 "System clock
#: synchronized" / "systemd-timesyncd.service active", 245+ "NTP service: active|inactive|n/a".
_STATUS_KEYS = {"ntp synchronized": "NTPSynchronized", "system clock synchronized": "NTPSynchronized",
                "ntp enabled": "NTP", "network time on": "NTP", "systemd-timesyncd.service active": "NTP",
                "ntp service": "NTP", "rtc in local tz": "LocalRTC", "time zone": "Timezone",
                "universal time": "TimeUSec", "rtc time": "RTCTimeUSec"}
_YES_NO = {"yes": True, "active": True, "no": False, "inactive": False}


def parse_timedatectl(text: str) -> dict[str, Any]:
    """Parse ``timedatectl show`` (``Key=value``) or plain ``timedatectl`` of any systemd version into the
    synchronisation facts."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            values[key] = value.strip()
            continue
        key, sep, value = line.partition(": ")
        name = _STATUS_KEYS.get(key.strip().lower())
        if sep and name:
            values.setdefault(name, value.strip().split(" (")[0] if name == "Timezone" else value.strip())

    def yes(key: str) -> bool | None:
        return _YES_NO.get(values.get(key, "").strip().lower())

    return {"source": "timedatectl", "synchronized": yes("NTPSynchronized"), "ntp_enabled": yes("NTP"),
            "can_ntp": yes("CanNTP"), "rtc_in_local_time": yes("LocalRTC"), "timezone": values.get("Timezone"),
            "time": values.get("TimeUSec"), "rtc_time": values.get("RTCTimeUSec")}


def parse_chrony_tracking(text: str) -> dict[str, Any]:
    """Parse ``chronyc tracking``: synchronised unless the leap status says "Not synchronised" (a pending
    leap second, "Insert second" or "Delete second", is a synchronised clock); the offset in seconds."""
    values = parse_colon_pairs(text)
    leap = values.get("Leap status")
    offset = re.match(r"([\d.]+) seconds (fast|slow)", values.get("System time", ""))
    return {"source": "chrony", "synchronized": None if leap is None else "not synchron" not in leap.lower(),
            "ntp_enabled": True, "server": values.get("Reference ID"),
            "offset_seconds": (float(offset.group(1)) * (1 if offset.group(2) == "fast" else -1)) if offset else None}


def parse_w32tm(text: str) -> dict[str, Any]:
    """Parse ``w32tm /query /status``: unsynchronised when the leap indicator is 3 or the source is the local clock."""
    if "0x80070426" in text or "has not been started" in text:  # w32time is stopped: nothing keeps the time
        return {"source": "w32time", "synchronized": False, "server": None, "last_sync": None,
                "ntp_enabled": False}
    values = parse_colon_pairs(text)
    leap = values.get("Leap Indicator", "")
    source = values.get("Source")
    local = bool(source) and ("Local CMOS Clock" in source or "Free-running" in source)
    synchronized = None
    if leap or source:
        synchronized = not (leap.startswith("3") or local)
    return {"source": "w32time", "synchronized": synchronized, "server": None if local else source,
            "last_sync": values.get("Last Successful Sync Time"), "ntp_enabled": None if not source else not local}


def parse_mac_network_time(text: str) -> dict[str, Any]:
    """Parse ``systemsetup -getusingnetworktime`` (``Network Time: On``); macOS keeps no sync status to read."""
    match = re.search(r"Network Time:\s*(On|Off)", text, re.IGNORECASE)
    enabled = None if not match else match.group(1).lower() == "on"
    return {"source": "systemsetup", "ntp_enabled": enabled, "synchronized": False if enabled is False else None}


def parse_loginctl(text: str) -> list[dict[str, Any]]:
    """Parse ``loginctl list-sessions --no-legend``: session, uid, user, seat, tty (columns vary by version)."""
    sessions = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[1].isdigit():
            continue
        sessions.append({"session": fields[0], "user": fields[2],
                         "seat": next((f for f in fields[3:] if f.startswith("seat")), None),
                         "tty": next((f for f in fields[3:] if f.startswith(("tty", "pts"))), None)})
    return sessions


def parse_who(text: str) -> list[dict[str, Any]]:
    """Parse ``who``: user, terminal, login time and the remote host in parentheses."""
    sessions = []
    for line in text.splitlines():
        match = re.match(r"^(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d|\w{3}\s+\d+ \d\d:\d\d)\s*(?:\((.*)\))?", line)
        if match:
            sessions.append({"user": match.group(1), "tty": match.group(2), "since": match.group(3),
                             "from": match.group(4) or None})
    return sessions


def parse_query_user(text: str) -> list[dict[str, Any]]:
    """Parse Windows ``query user``: user, session name, id, state (Active/Disc), logon time."""
    sessions = []
    for line in text.splitlines()[1:]:
        match = re.match(r"^[ >](\S+)\s+(\S+)?\s+(\d+)\s+(Active|Disc|Aktiv|Getr\.)\s+(\S+)\s+(.+?)\s*$", line)
        if match:
            sessions.append({"user": match.group(1), "session": match.group(2), "id": int(match.group(3)),
                             "state": "active" if match.group(4) in ("Active", "Aktiv") else "disconnected",
                             "idle": match.group(5), "since": match.group(6)})
    return sessions


class ClockCollector(Collector):
    """Clock synchronisation and login sessions."""

    name = "clock"
    category = "clock"
    description = "Whether the clock is synchronised by NTP (and with what), and the login sessions on the PC."
    platforms = ALL_PLATFORMS
    timeout = 6.0

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        sync: dict[str, Any] = {"source": None, "synchronized": None}
        if ctx.available("clock/timedatectl.txt", "timedatectl") and (
                systemd_booted() or ctx.recorded("clock/timedatectl.txt")):
            sync = parse_timedatectl(read_text(ctx, ctx.run("clock/timedatectl.txt", TIMEDATECTL, timeout=3)) or "")
        elif ctx.available("clock/chronyc-tracking.txt", "chronyc"):
            sync = parse_chrony_tracking(read_text(ctx, ctx.run("clock/chronyc-tracking.txt", CHRONY, timeout=3))
                                         or "")
        else:
            ctx.note("clock/timedatectl.txt", " ".join(TIMEDATECTL), ItemStatus.SKIPPED,
                     "systemd is not running and chrony is not installed; nothing to ask about time sync")
            sync["note"] = "no time synchronisation service to ask (no systemd, no chrony)"
        if ctx.available("clock/loginctl-sessions.txt", "loginctl") and (
                systemd_booted() or ctx.recorded("clock/loginctl-sessions.txt")):
            sessions = parse_loginctl(read_text(ctx, ctx.run("clock/loginctl-sessions.txt", LOGINCTL, timeout=3))
                                      or "")
        else:
            sessions = parse_who(read_text(ctx, ctx.run("clock/who.txt", WHO, timeout=3)) or "")
        return {"sync": sync, "sessions": sessions, "session_count": len(sessions)}

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        sync = parse_w32tm(read_text(ctx, ctx.run("clock/w32tm-status.txt", W32TM, timeout=4)) or "")
        # query user exits 1 when nobody is logged in.
        sessions = parse_query_user(read_text(ctx, ctx.run("clock/query-user.txt", QUERY_USER, timeout=3,
                                                           ok_codes=(0, 1))) or "")
        return {"sync": sync, "sessions": sessions, "session_count": len(sessions)}

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        sync = parse_mac_network_time(read_text(ctx, ctx.run("clock/network-time.txt", MAC_NETWORK_TIME,
                                                             timeout=3)) or "")
        sessions = parse_who(read_text(ctx, ctx.run("clock/who.txt", WHO, timeout=3)) or "")
        return {"sync": sync, "sessions": sessions, "session_count": len(sessions)}
