"""Recent crashes: which programs crashed, when and how, from the crash reports the OS keeps.

Small text reports (apport, Windows Error Reporting, macOS .ips/.crash) of the
last hours are copied, the newest few and capped; core and minidump files are
only listed with their size and time, never copied — they hold whole memory
images.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from ..context import CollectContext
from ..model import ItemStatus
from .base import (
    ALL_PLATFORMS, COMMON_FORBIDDEN_PATHS, Collector, iso_utc, listing, read_json, read_text, slug, systemd_booted,
)

COPY_NEWEST = 5
REPORT_MAX_BYTES = 256 * 1024
_FILETIME_EPOCH_OFFSET = 11_644_473_600  # seconds between 1601-01-01 and 1970-01-01
MAC_REPORT_PATTERNS = ("*.ips", "*.crash", "*.panic", "*.spin", "*.hang", "*.diag")


class CrashesCollector(Collector):
    """Crash reports of the last hours; dump files listed only."""

    name = "crashes"
    category = "crashes"
    description = ("Recent crash reports (apport, systemd-coredump, Windows Error Reporting, macOS diagnostic "
                   "reports); dump files are listed, never copied.")
    platforms = ALL_PLATFORMS
    timeout = 8.0
    # Memory images: listed by name, size and time only.
    forbidden_paths = COMMON_FORBIDDEN_PATHS + (
        "/var/lib/systemd/coredump/*", "*.dmp", "*.core", "core", "core.[0-9]*", "*/CrashDumps/*",
    )

    def collect_linux(self, ctx: CollectContext) -> dict[str, Any]:
        since = ctx.now.timestamp() - ctx.options.log_since_hours * 3600
        reports = _mark_recent(listing(Path("/var/crash")), since)
        copied = []
        for entry in [r for r in reports if r["recent"] and r["name"].endswith(".crash")][:COPY_NEWEST]:
            item = ctx.copy_file(f"crashes/var-crash/{slug(entry['name'])}", entry["path"], REPORT_MAX_BYTES)
            copied.append({**_public(entry), **parse_apport(read_text(ctx, item, 64 * 1024) or ""),
                           "staged": item.path, "status": item.status.value})
        cores = _mark_recent(listing(Path("/var/lib/systemd/coredump")), since)

        relpath = "crashes/coredumpctl.json"
        since_text = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S")
        argv = ("coredumpctl", "list", "--since", since_text, "--json=short", "--no-pager")
        coredumps = None
        if not ctx.which("coredumpctl"):
            ctx.note(relpath, shlex.join(argv), ItemStatus.NOT_FOUND, "systemd-coredump is not installed")
        elif not systemd_booted():
            ctx.note(relpath, shlex.join(argv), ItemStatus.SKIPPED, "systemd is not running")
        else:
            # coredumpctl exits 1 when it found nothing: that is an answer, not a failure.
            coredumps = parse_coredumpctl(read_json(ctx, ctx.run(relpath, argv, timeout=5, ok_codes=(0, 1))))
        return {
            "crash_reports": [_public(r) for r in reports],
            "copied_reports": copied,
            "core_files": [_public(c) for c in cores],
            "coredumps": coredumps,
            "recent_count": sum(r["recent"] for r in reports) + sum(c["recent"] for c in cores)
            + len(coredumps or []),
        }

    def collect_windows(self, ctx: CollectContext) -> dict[str, Any]:
        since = ctx.now.timestamp() - ctx.options.log_since_hours * 3600
        local = ctx.env.get("LOCALAPPDATA")
        program_data = ctx.env.get("PROGRAMDATA") or ctx.env.get("ProgramData")
        dumps = _mark_recent(listing(Path(local, "CrashDumps"), ("*.dmp",)), since) if local else []
        roots = []
        for base in (program_data, local):
            if base:
                roots += [Path(base, "Microsoft", "Windows", "WER", kind) for kind in ("ReportArchive", "ReportQueue")]
        reports = _mark_recent(wer_reports(roots), since)
        copied = []
        for entry in [r for r in reports if r["recent"]][:COPY_NEWEST]:
            item = ctx.copy_file(f"crashes/wer/{slug(entry['name'])}.wer", entry["path"], REPORT_MAX_BYTES)
            details = parse_wer(ctx.path(item.path).read_bytes()) if item.status in (ItemStatus.OK,
                                                                                       ItemStatus.TRUNCATED) else {}
            copied.append({**_public(entry), **details, "staged": item.path, "status": item.status.value})
        return {
            "crash_dumps": [_public(d) for d in dumps],
            "wer_reports": [_public(r) for r in reports],
            "copied_reports": copied,
            "recent_count": sum(r["recent"] for r in reports) + sum(d["recent"] for d in dumps),
        }

    def collect_darwin(self, ctx: CollectContext) -> dict[str, Any]:
        since = ctx.now.timestamp() - ctx.options.log_since_hours * 3600
        reports = []
        for directory in (ctx.home / "Library/Logs/DiagnosticReports", Path("/Library/Logs/DiagnosticReports")):
            reports += listing(directory, MAC_REPORT_PATTERNS)
        reports = _mark_recent(sorted(reports, key=lambda r: r["mtime"], reverse=True), since)
        copied = []
        for entry in [r for r in reports if r["recent"]][:COPY_NEWEST]:
            item = ctx.copy_file(f"crashes/diagnostic-reports/{slug(entry['name'])}", entry["path"], REPORT_MAX_BYTES)
            text = read_text(ctx, item, 64 * 1024) or ""
            details = parse_ips_header(text) if entry["name"].endswith(".ips") else parse_legacy_crash(text)
            copied.append({**_public(entry), **details, "staged": item.path, "status": item.status.value})
        return {
            "diagnostic_reports": [_public(r) for r in reports],
            "copied_reports": copied,
            "recent_count": sum(r["recent"] for r in reports),
        }


def wer_reports(roots: list[Path]) -> list[dict[str, Any]]:
    """List the Report.wer files in Windows Error Reporting folders, newest first."""
    found = []
    for root in roots:
        try:
            folders = list(os.scandir(root))
        except OSError:
            continue
        for folder in folders:
            report = Path(folder.path, "Report.wer")
            try:
                info = report.stat()
            except OSError:
                continue
            found.append({"name": folder.name, "path": str(report), "size": info.st_size,
                          "modified": iso_utc(info.st_mtime), "mtime": info.st_mtime, "folder": root.name})
    return sorted(found, key=lambda r: r["mtime"], reverse=True)


def parse_wer(data: bytes) -> dict[str, Any]:
    """Parse a Report.wer (UTF-16 ``Key=Value`` lines) into the event, application, version and fault module."""
    text = data.decode("utf-16", errors="replace") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data.decode("utf-8", "replace")
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    signature = {}
    for key, value in values.items():
        match = re.fullmatch(r"Sig\[(\d+)\]\.Name", key)
        if match:
            signature[value] = values.get(f"Sig[{match.group(1)}].Value")
    event_time = None
    if values.get("EventTime", "").isdigit():
        event_time = iso_utc(int(values["EventTime"]) / 10_000_000 - _FILETIME_EPOCH_OFFSET)
    return {
        "event_type": values.get("EventType"),
        "friendly_name": values.get("FriendlyEventName"),
        "time": event_time,
        "application": signature.get("Application Name") or values.get("AppName"),
        "app_version": signature.get("Application Version"),
        "fault_module": signature.get("Fault Module Name"),
        "exception_code": signature.get("Exception Code"),
        "app_path": values.get("AppPath"),
    }


def parse_apport(text: str) -> dict[str, Any]:
    """Parse the header fields of an apport .crash report (``Key: value`` lines)."""
    values = {}
    for line in text.splitlines()[:200]:
        match = re.match(r"^([A-Za-z][A-Za-z0-9]*): (.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return {
        "problem_type": values.get("ProblemType"),
        "title": values.get("Title"),
        "executable": values.get("ExecutablePath"),
        "package": values.get("Package"),
        "signal": values.get("Signal") or values.get("SignalName"),
        "date": values.get("Date"),
    }


def parse_coredumpctl(data: Any) -> list[dict[str, Any]]:
    """Normalise ``coredumpctl list --json=short`` entries (time in microseconds since the epoch)."""
    dumps = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        stamp = entry.get("time")
        dumps.append({
            "time": iso_utc(stamp / 1_000_000) if isinstance(stamp, (int, float)) else None,
            "pid": entry.get("pid"), "uid": entry.get("uid"), "signal": entry.get("sig"),
            "executable": entry.get("exe"), "core": entry.get("corefile"), "size": entry.get("size"),
        })
    return dumps


def parse_ips_header(text: str) -> dict[str, Any]:
    """Parse a macOS .ips report: its one-line JSON header, and from the body (when it is whole) the
    process id and the exception with its signal (``EXC_BAD_ACCESS``, ``SIGSEGV``)."""
    first, _, rest = text.partition("\n")
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        return {}
    if not isinstance(header, dict):
        return {}
    try:
        body = json.loads(rest) if rest.strip() else {}
    except json.JSONDecodeError:
        body = {}  # cut at the copy limit: the header alone still says which program
    body = body if isinstance(body, dict) else {}
    exception = body.get("exception") if isinstance(body.get("exception"), dict) else {}
    return {
        "application": header.get("app_name") or header.get("name") or body.get("procName"),
        "app_version": header.get("app_version"),
        "bug_type": header.get("bug_type"),
        "time": header.get("timestamp"),
        "os_version": header.get("os_version"),
        "pid": body.get("pid") if isinstance(body.get("pid"), int) else None,
        "exception": exception.get("type"),
        "signal": exception.get("signal"),
    }


def parse_legacy_crash(text: str) -> dict[str, Any]:
    """Parse the header of an older macOS .crash report (``Process:``, ``Version:``, ``Exception Type:``),
    with the signal from "EXC_BAD_ACCESS (SIGSEGV)" or "Termination Signal: Segmentation fault: 11"."""
    values = {}
    for line in text.splitlines()[:60]:
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith(" "):
            values.setdefault(key.strip(), value.strip())
    process = values.get("Process", "")
    pid = re.search(r"\[(\d+)\]", process)
    exception = values.get("Exception Type")
    signal = re.search(r"\((SIG[A-Z]+)\)", exception or "")
    termination = re.search(r":\s*(\d+)\s*$", values.get("Termination Signal", ""))
    return {
        "application": process.split(" [")[0] or None,
        "app_version": values.get("Version"),
        "exception": exception,
        "signal": signal.group(1) if signal else termination.group(1) if termination else None,
        "pid": int(pid.group(1)) if pid else None,
        "time": values.get("Date/Time"),
        "os_version": values.get("OS Version"),
    }


def _mark_recent(entries: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    for entry in entries:
        entry["recent"] = entry["mtime"] >= since
    return entries


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop the raw mtime (the ISO ``modified`` says the same) from a listing entry."""
    return {key: value for key, value in entry.items() if key != "mtime"}

