"""Errors and warnings of the last hours from the system log, the log files the admin names,
and the most frequent error lines (numbers, hex, addresses and UUIDs normalised) so an
engineer sees at a glance what keeps failing.

Error lines are redacted *before* they are normalised: replacing digits first could
split a secret (``S3cretPass`` becomes ``S<n>cretPass``) so that no detector sees it.

Every log is capped: a command's output at the command cap, a file at
``log_max_bytes`` keeping its head and its tail (where the latest errors are).
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..context import CollectContext, expand_home
from ..model import Item, ItemKind, ItemStatus
from .base import ALL_PLATFORMS, Collector, as_list, iter_lines, powershell, produced_output, read_json, slug
from agent.regexes import rx

TOP_ERRORS = 20
MAX_LOG_FILES = 50
#: A syslog bigger than this is scanned from this many bytes before its end only.
SYSLOG_SCAN_BYTES = 64 * 1024 * 1024
WINDOWS_MAX_EVENTS = 1500

#: Words that mark a line as an error or a warning in logs without a severity field.
#: Not inside names: "libgpg-error-dev" or "error_log" is no error.
ERROR_WORDS = rx(
    r"(?<![\w-])(emerg(?:ency)?|alert|crit(?:ical)?|err(?:or|ors)?|fail(?:ed|ure|s)?|fatal|panic|segfault|oom(?:-kill(?:er)?)?|"
    r"out of memory|warn(?:ing)?|denied|traceback|exception|timed? ?out|unreachable)(?![\w-])",
    re.IGNORECASE,
)
_ISO_TS = rx(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})((?:[.,]\d+)?)(Z|[+-]\d{2}:?\d{2})?\s+")
_BSD_TS = rx(r"^([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_UUID = rx(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX_PREFIXED = rx(r"\b0x[0-9a-fA-F]+\b")
_HEX_LONG = rx(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_IPV4 = rx(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
#: A number standing on its own (a count, an id, a time, a port); digits inside a name (``EXT4-fs``,
#: ``HP_LaserJet_4000``, ``python3``, ``sda1``) belong to the name and are kept.
_NUMBER = rx(r"(?<!\w)\d+")
#: In a line that names a shared library (``libgtk-3.so.0``, ``libc.so.6``), the numbers after the dots and
#: dashes of a library or a versioned program (``python3.12``) name it too, so it is kept whole; any other
#: number standing alone is replaced.
_NAME_OR_NUMBER = rx(r"(\b[A-Za-z][\w.+-]*(?:\.so(?:\.\d+)*|\d\.\d+(?:\.\d+)*)\b)|(?<!\w)\d+")


def _number_unless_name(match: re.Match[str]) -> str:
    return match.group(1) or "<n>"
_SPACES = rx(r"\s+")

WINDOWS_EVENTS_SCRIPT = (
    "$since = (Get-Date).AddHours(-{hours}); "
    "$events = Get-WinEvent -FilterHashtable @{{LogName='System','Application'; Level=1,2,3; StartTime=$since}} "
    "-MaxEvents {max_events} -ErrorAction SilentlyContinue | Select-Object "
    "@{{n='TimeCreated';e={{$_.TimeCreated.ToUniversalTime().ToString('o')}}}},LogName,ProviderName,Id,Level,"
    "LevelDisplayName,Message; "
    "ConvertTo-Json -InputObject @($events) -Depth 3"
)


def normalise_line(line: str, *, has_host: bool = False) -> str:
    """Reduce a log line to its shape: timestamp (and host) dropped, UUIDs, hex, IPs and numbers replaced.

    Only numbers that stand alone are replaced: digits that continue a name are part of it, so
    ``EXT4-fs error`` stays readable and two printers' errors do not merge into one shape.
    """
    text = line.strip()
    match = _ISO_TS.match(text) or _BSD_TS.match(text)
    if match:
        text = text[match.end():]
        if has_host:
            text = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ""
    text = _UUID.sub("<uuid>", text)
    text = _HEX_PREFIXED.sub("<hex>", text)
    text = _HEX_LONG.sub("<hex>", text)
    text = _IPV4.sub("<ip>", text)
    # Most lines name no library: they take the faster pattern.
    text = _NAME_OR_NUMBER.sub(_number_unless_name, text) if ".so" in text else _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()[:240]


def example_of(line: str, limit: int = 300) -> str:
    """Return at most ``limit`` characters of ``line``, cut at a space: a word cut in half could be half
    a secret, which redaction cannot recognise any more."""
    text = line.strip()
    if len(text) <= limit:
        return text
    return text[: max(0, text.rfind(" ", 0, limit + 1))].rstrip()


def line_time(line: str, now: datetime) -> datetime | None:
    """Return the (aware) time a syslog line starts with, RFC 3339 or BSD style, or None."""
    match = _ISO_TS.match(line)
    if match:
        zone = match.group(3) or ""
        if zone and zone != "Z" and ":" not in zone:
            zone = zone[:3] + ":" + zone[3:]
        try:
            stamp = datetime.fromisoformat(match.group(1).replace(" ", "T") + (zone.replace("Z", "+00:00")))
        except ValueError:
            return None
        return stamp if stamp.tzinfo else stamp.astimezone()
    match = _BSD_TS.match(line)
    if match and match.group(1) in _MONTHS:
        try:
            stamp = datetime(now.year, _MONTHS[match.group(1)], int(match.group(2)), int(match.group(3)),
                             int(match.group(4)), int(match.group(5))).astimezone()
        except ValueError:
            return None
        if stamp > now + timedelta(days=1):  # a December line read in January
            stamp = stamp.replace(year=now.year - 1)
        return stamp
    return None


class ErrorCounter:
    """Count error lines by shape across sources and report the most frequent, redacted before normalised.

    Lines are grouped by the shape of the raw line, which never leaves the
    collector. What is reported is derived from each top group's first line
    *after* ``redact`` (the bundle's redactor) has replaced its secrets and
    names: the example is the redacted line, the message its normalised form.
    Redacting only the reported lines keeps the cost at :data:`TOP_ERRORS`
    redactions however long the logs are.
    """

    def __init__(self, redact: Callable[[str], str]) -> None:
        self.redact = redact
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, tuple[str, str, bool]] = {}

    def add(self, line: str, source: str, *, has_host: bool = False) -> None:
        """Count ``line`` under its normalised shape; ``has_host`` drops the host after a syslog timestamp."""
        shape = normalise_line(line, has_host=has_host)
        if not shape:
            return
        self.counts[shape] += 1
        self.examples.setdefault(shape, (line.strip(), source, has_host))

    def top(self, n: int = TOP_ERRORS) -> list[dict[str, Any]]:
        """Return the ``n`` most frequent shapes with their count, first example and where it came from.

        Example and message come from the redacted line (cut to 300 characters at a
        space after redaction, so no secret is cut out of a detector's sight); shapes
        whose redacted messages are the same are counted as one.
        """
        reported: dict[str, dict[str, Any]] = {}
        for shape, count in self.counts.most_common(n):
            line, source, has_host = self.examples[shape]
            example = self.redact(line)
            message = normalise_line(example, has_host=has_host)
            if message in reported:
                reported[message]["count"] += count
            else:
                reported[message] = {"message": message, "count": count, "example": example_of(example), "source": source}
        return sorted(reported.values(), key=lambda entry: entry["count"], reverse=True)


class LogsCollector(Collector):
    """System log errors and warnings of the last hours, admin-named log files, and the top error lines."""

    name = "logs"
    category = "logs"
    description = ("Errors and warnings of the last hours from the system log and admin-named log files, "
                   "with the most frequent error lines.")
    platforms = ALL_PLATFORMS
    timeout = 10.0
    #: Where a system without journald keeps its log, most common first.
    syslog_paths: tuple[str, ...] = ("/var/log/syslog", "/var/log/messages")

    def collect(self, ctx: CollectContext) -> dict[str, Any]:
        counter = ErrorCounter(ctx.redact_text)
        system_log = getattr(self, f"collect_{ctx.platform}")
        facts = {"since_hours": ctx.options.log_since_hours, **system_log(ctx, counter)}
        facts["log_files"] = copy_log_globs(ctx, counter)
        facts["top_errors"] = counter.top()
        return facts

    def collect_linux(self, ctx: CollectContext, counter: ErrorCounter) -> dict[str, Any]:
        since = ctx.now - timedelta(hours=ctx.options.log_since_hours)
        journal_rel = "logs/journal-warnings.txt"
        journal_argv = (
            "journalctl", "--priority=warning", "--since", since.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            "--no-pager", "-o", "short-iso", f"--lines={max(1000, ctx.options.command_max_bytes // 200)}",
        )
        if ctx.which("journalctl") and journal_available():
            item = ctx.run(journal_rel, journal_argv, kind=ItemKind.LOG)
            entries = 0
            for line in iter_lines(ctx, item):
                if line and not line.startswith("-- "):
                    entries += 1
                    counter.add(line, "journal", has_host=True)
            return {"source": "journal", "journal_entries": entries, "journal_status": item.status.value}

        reason = "journalctl is not installed" if not ctx.which("journalctl") else "no systemd journal on this PC"
        ctx.note(journal_rel, shlex.join(journal_argv), ItemStatus.SKIPPED, reason, kind=ItemKind.LOG)
        return {"source": "syslog", "journal_status": "skipped", **self._syslog(ctx, counter, since)}

    def _syslog(self, ctx: CollectContext, counter: ErrorCounter, since: datetime) -> dict[str, Any]:
        """Filter /var/log/syslog (or messages) to recent error lines, streaming, head and tail kept."""
        relpath = "logs/syslog-errors.txt"
        current = next((p for p in self.syslog_paths if os.path.exists(p)), None)
        if current is None:
            ctx.note(relpath, self.syslog_paths[0], ItemStatus.NOT_FOUND,
                     f"none of {', '.join(self.syslog_paths)} exists", kind=ItemKind.LOG)
            return {"syslog_files": [], "syslog_lines": 0}
        paths = []
        rotated = current + ".1"
        try:
            if os.path.exists(rotated) and os.path.getmtime(rotated) >= since.timestamp():
                paths.append(rotated)
        except OSError:
            pass
        paths.append(current)
        try:
            for path in paths:
                with open(path, "rb"):
                    pass
        except PermissionError as exc:
            ctx.note(relpath, ", ".join(paths), ItemStatus.DENIED, f"permission denied: {exc.filename}",
                     kind=ItemKind.LOG)
            return {"syslog_files": paths, "syslog_lines": 0}
        stats = {"lines": 0, "stopped_early": False}

        def counted() -> Iterator[str]:
            for line in recent_error_lines(paths, since, lambda: ctx.remaining() < 1.0, stats, now=ctx.now):
                stats["lines"] += 1
                counter.add(line, Path(paths[-1]).name, has_host=True)
                yield line

        ctx.write_lines(relpath, counted(), source=", ".join(paths), max_bytes=ctx.options.log_max_bytes)
        return {"syslog_files": paths, "syslog_lines": stats["lines"], "syslog_stopped_early": stats["stopped_early"]}

    def collect_windows(self, ctx: CollectContext, counter: ErrorCounter) -> dict[str, Any]:
        script = WINDOWS_EVENTS_SCRIPT.format(hours=ctx.options.log_since_hours, max_events=WINDOWS_MAX_EVENTS)
        item = ctx.run("logs/windows-events.json", powershell(script), kind=ItemKind.LOG)
        events = read_json(ctx, item)
        if events is None:
            return {"source": "eventlog", "events_status": item.status.value, "events": None,
                    "note": "the event list was not readable JSON (cut at the cap?); see the raw file"
                    if produced_output(item) else None}
        levels: Counter[str] = Counter()
        logs: Counter[str] = Counter()
        for event in as_list(events):
            if not isinstance(event, dict):
                continue
            levels[event.get("LevelDisplayName") or f"Level {event.get('Level')}"] += 1
            logs[event.get("LogName") or "?"] += 1
            message = (event.get("Message") or "").strip().splitlines()
            counter.add(f"{event.get('ProviderName')} {event.get('Id')}: {message[0] if message else ''}",
                        event.get("LogName") or "eventlog")
        return {"source": "eventlog", "events_status": item.status.value, "events": sum(levels.values()),
                "by_level": dict(levels), "by_log": dict(logs)}

    def collect_darwin(self, ctx: CollectContext, counter: ErrorCounter) -> dict[str, Any]:
        minutes = max(1, round(ctx.options.log_since_hours * 60))
        item = ctx.run("logs/unified-errors.txt",
                       ("log", "show", "--last", f"{minutes}m", "--style", "syslog",
                        "--predicate", "messageType == error"),
                       kind=ItemKind.LOG)
        entries = 0
        for line in iter_lines(ctx, item):
            if _ISO_TS.match(line):
                entries += 1
                counter.add(line, "unified log", has_host=True)
        return {"source": "unified log", "log_status": item.status.value, "log_entries": entries}


def journal_available() -> bool:
    """True when journald runs or left journal files; journalctl prints nothing useful otherwise."""
    if os.path.exists("/run/systemd/journal/socket"):
        return True
    return any(itertools.chain(glob.iglob("/var/log/journal/*/*.journal"), glob.iglob("/run/log/journal/*/*.journal")))


def recent_error_lines(paths: Iterable[str], since: datetime, out_of_time, stats: dict[str, Any], *,
                       now: datetime) -> Iterator[str]:
    """Yield error-looking lines newer than ``since`` from syslog files, read line by line.

    A line without a timestamp (a continuation) follows the fate of the line
    before it; ``now`` gives lines without a year theirs. Only the last
    :data:`SYSLOG_SCAN_BYTES` of a file are read.
    """
    now = now.astimezone()
    for path in paths:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > SYSLOG_SCAN_BYTES:
                handle.seek(size - SYSLOG_SCAN_BYTES)
                handle.readline()  # resume on a line boundary
                stats["scanned_bytes"] = SYSLOG_SCAN_BYTES
            keep = False
            for number, raw in enumerate(handle):
                if number % 5000 == 0 and out_of_time():
                    stats["stopped_early"] = True
                    return
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                stamp = line_time(line, now)
                if stamp is not None:
                    keep = stamp >= since and ERROR_WORDS.search(line) is not None
                if keep:
                    yield line


def staged_log_name(path: str, taken: set[str]) -> str:
    """Return a unique staging path under ``logs/files/`` mirroring ``path`` (drive letters kept as a folder)."""
    parts = [slug(part, 120) for part in re.split(r"[\\/]+", path.replace(":", "")) if part not in ("", ".", "..")]
    base = "logs/files/" + "/".join(parts or ["log"])
    candidate, counter = base, 2
    while candidate in taken:
        candidate = f"{base}-{counter}"
        counter += 1
    taken.add(candidate)
    return candidate


def log_glob_files(pattern: str, home: Path) -> Iterator[str]:
    """The files (not folders) a log glob matches, ``~`` being ``home``; at most twice :data:`MAX_LOG_FILES`
    paths are looked at."""
    for path in itertools.islice(glob.iglob(expand_home(pattern, home), recursive=True), MAX_LOG_FILES * 2):
        if not os.path.isdir(path):
            yield path


def copy_log_globs(ctx: CollectContext, counter: ErrorCounter) -> dict[str, list[dict[str, Any]]]:
    """Copy every file the admin's log globs match (capped, head and tail kept) and count its error lines."""
    matched: list[tuple[str, str]] = []
    seen: set[str] = set()
    patterns = []
    for pattern in ctx.options.log_globs:
        hits = 0
        for path in log_glob_files(pattern, ctx.home):
            if path in seen:
                continue
            seen.add(path)
            matched.append((pattern, path))
            hits += 1
        patterns.append({"pattern": pattern, "matches": hits})

    taken: set[str] = set()
    files = []
    for pattern, path in matched[:MAX_LOG_FILES]:
        item: Item = ctx.copy_file(staged_log_name(path, taken), path, ctx.options.log_max_bytes, kind=ItemKind.LOG)
        errors = 0
        for line in iter_lines(ctx, item):
            if ERROR_WORDS.search(line):
                errors += 1
                counter.add(line, os.path.basename(path))
        files.append({"path": path, "pattern": pattern, "staged": item.path, "status": item.status.value,
                      "size": item.size, "error_lines": errors})
    for pattern, path in matched[MAX_LOG_FILES:]:
        files.append({"path": path, "pattern": pattern, "staged": None, "status": ItemStatus.SKIPPED.value,
                      "size": 0, "error_lines": 0, "note": f"more than {MAX_LOG_FILES} log files matched"})
    return {"patterns": patterns, "files": files}
