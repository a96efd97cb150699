"""Moments and durations worded for people, the same in the CLI and in the server's hints.

A moment names its day unless it is today ("today 09:16 CET", "tomorrow 08:00 CET",
"Tue 2 Dec 09:16 UTC", with the year when it is another year) and always its zone,
since an engineer and a user may sit in different ones. A duration reads as one:
"43 s", "14 min 43 s", "3 h 5 min", "2 days 4 h"; or, rounded for promises and
waits, "about 15 minutes", "about 3 hours". How long ago something happened reads
"40 minutes ago", "yesterday", "9 days ago" (a PC's protection in plain words).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo

_DAY_WORDS = {0: "today", 1: "tomorrow", -1: "yesterday"}


def _zone_name(local: datetime) -> str:
    """The zone's short name (CET, UTC), or its offset (+0530) where the zone has no name."""
    name = local.tzname() or ""
    if not name or name[0] in "+-":
        offset = local.strftime("%z")
        return "UTC" if offset in ("+0000", "-0000") else f"UTC{offset[:3]}:{offset[3:]}"
    return name


def moment(when: datetime, *, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    """Say ``when`` in ``zone`` (default: this computer's): "today 09:16 CET", "Tue 2 Dec 09:16 UTC".

    A naive ``when`` is read as UTC (the server stores UTC). ``now`` decides what
    "today" is (default: the current time).
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(zone)
    today = (now or datetime.now(UTC)).astimezone(local.tzinfo).date()
    days = (local.date() - today).days
    clock = f"{local:%H:%M} {_zone_name(local)}"
    if days in _DAY_WORDS:
        return f"{_DAY_WORDS[days]} {clock}"
    day = f"{local:%a} {local.day} {local:%b}"
    if local.year != today.year:
        day += f" {local.year}"
    return f"{day} {clock}"


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def duration(length: float | timedelta) -> str:
    """Say an exact length of time (seconds or a timedelta): "43 s", "14 min 43 s", "3 h 5 min", "2 days 4 h"."""
    seconds = length.total_seconds() if isinstance(length, timedelta) else float(length)
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    minutes = round(total / 60)
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {mins} min" if mins else "")
    days, hrs = divmod(round(minutes / 60), 24)
    return _plural(days, "day") + (f" {hrs} h" if hrs else "")


def about(length: float | timedelta) -> str:
    """Say a length of time rounded the way people round it: "about 15 minutes", "about 3 hours", "less than a minute"."""
    seconds = length.total_seconds() if isinstance(length, timedelta) else float(length)
    if seconds < 60:
        return "less than a minute"
    minutes = math.ceil(seconds / 60) if seconds < 600 else round(seconds / 60)
    if minutes < 60:
        return "about " + _plural(minutes, "minute")
    hours = round(seconds / 3600)
    if hours < 48:
        return "about " + _plural(hours, "hour")
    return "about " + _plural(round(seconds / 86400), "day")


def ago(when: datetime, *, now: datetime) -> str:
    """Say how long ago ``when`` was, as people say it: "just now", "40 minutes ago", "3 hours ago", "yesterday", "9 days ago".

    "yesterday" means 24 to 48 hours ago, so the words do not depend on anyone's zone;
    a moment ahead of ``now`` (a clock a little fast) is "just now". A naive ``when`` is read as UTC.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return _plural(int(seconds // 60), "minute") + " ago"
    if seconds < 86400:
        return _plural(int(seconds // 3600), "hour") + " ago"
    if seconds < 2 * 86400:
        return "yesterday"
    return _plural(int(seconds // 86400), "day") + " ago"
