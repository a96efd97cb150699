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
import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

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


#: Words for the units of a length of time (``3h``, ``90 min``, ``2 days``, ``1 week 2 days ago``), in seconds.
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
#: How often, in one word.
_EVERY = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DURATION_TEXT = re.compile(r"(?:\d+(?:\.\d+)?\s*[a-z]+\s*,?\s*(?:and\s+)?)+")
_AGO = re.compile(r"(.+?)\s*\bago")
_CLOCK = re.compile(r"(?:(today|yesterday)\s+(?:at\s+)?)?(\d{1,2}):(\d{2})(?::(\d{2}))?")
MOMENT_HINT = ("Write a date and time like 2026-12-01 14:00 (a date alone means the end of that day), a time "
               "today like 14:00, yesterday, or how long ago: 3h, 90 min, 2 days.")


def parse_duration(text: str) -> float:
    """Seconds in a length of time a person wrote: ``90m``, ``1.5h``, ``3d``, ``2w``, ``1h30m``,
    ``1 hour 30 minutes``, ``2 days``, or ``hourly``, ``daily``, ``weekly``. ValueError for anything else."""
    words = " ".join(str(text).strip().lower().split())
    if words in _EVERY:
        return float(_EVERY[words])
    if not _DURATION_TEXT.fullmatch(words):
        raise ValueError("not a length of time")
    seconds = 0.0
    for count, unit in _DURATION_PART.findall(words):
        if unit not in _UNITS:
            raise ValueError(f"{unit!r} is not a unit")
        seconds += float(count) * _UNITS[unit]
    return seconds


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """Read a moment a person typed, as "at or before" means it; aware, in this computer's zone unless given.

    An ISO date and time (``2026-12-01 14:00``, ``2026-12-01T14:00+01:00``); a date alone, meaning the end of
    that day; ``now`` or ``today`` (now); ``yesterday`` (its end); a time of day (``14:00``, ``today 14:00``,
    ``yesterday 9:30``; a time still to come today means yesterday's); or how long ago (``3h``, ``90 min``,
    ``2 days``, ``1w 2d ago``). Raise InvalidInputError for anything else, or a moment out of range.
    """
    from protocol.errors import InvalidInputError

    now = (now or datetime.now()).astimezone()
    words = " ".join(text.strip().lower().split())
    try:
        if words in ("now", "today"):
            return now
        if words == "yesterday":
            return _end_of_day(now - timedelta(days=1))
        clock = _CLOCK.fullmatch(words)
        if clock:
            day, hour, minute, second = clock[1], int(clock[2]), int(clock[3]), int(clock[4] or 0)
            when = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
            if day == "yesterday" or (day is None and when > now):
                when -= timedelta(days=1)
            return when
        ago = _AGO.fullmatch(words)
        if ago or _DURATION_TEXT.fullmatch(words):
            try:
                seconds = parse_duration(ago[1] if ago else words)
            except ValueError as exc:
                raise InvalidInputError(f"{text.strip()!r} is not a time: {exc}.", hint=MOMENT_HINT) from None
            return now - timedelta(seconds=seconds)
        try:  # a date alone means the end of that day, in this computer's zone
            return _end_of_day(datetime.combine(date.fromisoformat(text.strip()), time()).astimezone())
        except ValueError:
            when = datetime.fromisoformat(text.strip())
        return when if when.tzinfo is not None else when.astimezone()  # read in this computer's zone
    except (ValueError, OverflowError):
        raise InvalidInputError(f"{text.strip()!r} is not a time, or none this computer can count back to.",
                                hint=MOMENT_HINT) from None


def _end_of_day(when: datetime) -> datetime:
    return when.replace(hour=23, minute=59, second=59, microsecond=0)
