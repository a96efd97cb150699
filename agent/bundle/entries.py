"""The staging pass: one entry per item of the collection report (and per file in staging it does
not list), and the scrub of each listed file into ``raw/``.

The file list comes from the report, never from walking the directory: a file
on disk that the report does not list is named in the manifest and never
bundled, and an item whose path leads outside staging is never read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.diagnostics.model import CollectionReport, Item, ItemStatus
from agent.redaction import DROPPED, NOT_SCRUBBED, SCRUBBED, FileRedaction, Redactor
from protocol.bundle import NO_FILE, UNLISTED

_WITHOUT_FILE = {ItemStatus.NOT_FOUND, ItemStatus.DENIED, ItemStatus.SKIPPED}


@dataclass
class BundleEntry:
    """One listed item (or unlisted staged file) and what became of it in the bundle."""

    path: str  # under raw/, redacted and made safe
    category: str
    source: str
    kind: str | None
    status: str
    duration: float = 0.0
    exit_code: int | None = None
    note: str | None = None
    staged: Path | None = None  # what to scrub from; None when there is nothing to scrub
    staged_relpath: str = ""
    listed: bool = True
    redaction: str = NO_FILE
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    retried: bool = False
    #: Lines the final check withheld from this file, and in how many rounds.
    withheld_lines: int = 0
    withhold_rounds: int = 0

    @property
    def bundled(self) -> bool:
        """True when the entry's redacted file is in raw/."""
        return self.redaction == SCRUBBED

    @property
    def left_out(self) -> bool:
        """True when the entry had a file that is not in the bundle (dropped or unreadable)."""
        return self.redaction in (DROPPED, NOT_SCRUBBED)


def listed_entries(report: CollectionReport, staging: Path, exclude: set[str]) -> list[BundleEntry]:
    """Make one entry per report item of a kept category, in report order."""
    return entries_for(report.items, staging, exclude, set())


def entries_for(items: Iterable[Item], staging: Path, exclude: set[str], seen: set[str]) -> list[BundleEntry]:
    """Make one entry per item of a kept category, in order; ``seen`` holds the staged paths listed so far."""
    entries: list[BundleEntry] = []
    real_staging = staging.resolve()
    real_parents: dict[Path, Path] = {}  # a collector writes many files into one folder: resolved once
    for item in items:
        if item.category in exclude:
            continue
        entry = BundleEntry(path="", category=item.category or "unknown", source=item.source,
                            kind=item.kind.value, status=item.status.value, duration=item.duration,
                            exit_code=item.exit_code, note=item.note, staged_relpath=item.path)
        entries.append(entry)
        if not safe_relpath(item.path):
            entry.redaction, entry.reason = DROPPED, "unsafe path in the collection report; never read"
            continue
        if item.path in seen:
            entry.redaction, entry.reason = DROPPED, "listed twice in the collection report; bundled once"
            continue
        seen.add(item.path)
        src = staging.joinpath(*item.path.split("/"))
        parent = real_parents.get(src.parent)
        if parent is None:
            parent = real_parents[src.parent] = Path(os.path.realpath(src.parent))
        if parent != real_staging and real_staging not in parent.parents:
            entry.redaction, entry.reason = DROPPED, "its folder leads outside the staging directory; never read"
            continue
        if item.status in _WITHOUT_FILE and not os.path.lexists(src):
            continue  # nothing was gathered: listed with the collector's note
        entry.staged = src
    return entries


def unlisted_entries(report: CollectionReport, staging: Path, exclude: set[str]) -> list[BundleEntry]:
    """Name every file, link or special file in staging that the report does not list; none is bundled."""
    listed = {item.path for item in report.items}
    found: list[BundleEntry] = []

    def unlisted(relpath: str, what: str) -> None:
        category = relpath.split("/", 1)[0] if "/" in relpath else "unknown"
        if relpath not in listed and category not in exclude:
            found.append(BundleEntry(path="", category=category, source="not in the collection report", kind=None,
                                     status=UNLISTED, staged_relpath=relpath, listed=False, redaction=NOT_SCRUBBED,
                                     reason=f"{what} not listed in the collection report; not bundled"))

    def unreadable(error: OSError) -> None:
        where = Path(error.filename or staging)
        relpath = where.relative_to(staging).as_posix() if where.is_relative_to(staging) else where.name
        unlisted(relpath, "a folder that could not be listed,")

    for dirpath, dirnames, filenames in os.walk(staging, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)
        for name in sorted(filenames):
            try:
                mode = os.lstat(here / name).st_mode
                what = "a symbolic link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else "a special file"
            except OSError:
                what = "an unreadable entry"
            unlisted((here / name).relative_to(staging).as_posix(), what)
    return found


def scrub_entry(entry: BundleEntry, redactor: Redactor, raw_root: Path) -> None:
    """Redact an entry's staged file into raw/ and record the outcome; entries without a file are left alone."""
    if entry.staged is None or not entry.listed:
        return
    dst = raw_root.joinpath(*entry.path.split("/"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        result: FileRedaction = redactor.redact_file(entry.staged, dst, relpath=entry.path)
    except Exception as exc:  # noqa: BLE001 - a redactor failure must drop the file, never pass it through
        result = FileRedaction(entry.path, DROPPED, {}, f"scrubbing failed ({type(exc).__name__})")
    entry.redaction, entry.counts, entry.reason = result.status, dict(result.counts), result.reason
    entry.size = entry.sha256 = None
    if result.status != SCRUBBED:
        dst.unlink(missing_ok=True)  # belt and braces: only scrubbed files have an output


def drop_entry(entry: BundleEntry, raw_root: Path, reason: str) -> None:
    """Remove an entry's file from raw/ and record it as dropped for ``reason``."""
    raw_root.joinpath(*entry.path.split("/")).unlink(missing_ok=True)
    entry.redaction, entry.counts, entry.size, entry.sha256 = DROPPED, {}, None, None
    entry.reason = reason


def safe_relpath(relpath: str) -> bool:
    """True for a relative POSIX path with no empty, '.' or '..' component (what collectors may write)."""
    if not relpath or "\\" in relpath or ":" in relpath or "\0" in relpath:
        return False
    if PurePosixPath(relpath).is_absolute():
        return False
    return all(part not in ("", ".", "..") for part in relpath.split("/"))
