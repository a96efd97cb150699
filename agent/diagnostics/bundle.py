"""Turn a collection (staging directory + report) into the bundle a user is asked to send:
``raw/`` (every collected file, redacted), ``summary.json`` (triage facts),
``report.html`` (readable offline) and ``manifest.json`` (what is in it and what
became of every file).

Redaction fails closed at every step: the file list comes from the report (not from
walking the directory), every listed file goes through the redactor, anything on
disk the report does not list is named in the manifest and never bundled, the
report's facts and metadata are redacted too, and a final verification pass over
the whole bundle removes (and names) any file in which something is still found.

One known weakness of the collectors is worked around here: the logs collector
normalises error lines (digits become ``<n>``) *before* redaction, which can split
a secret such as ``S3cretPass`` into ``S<n>cretPass`` that no detector recognises.
Where an error's example line needed redaction, its normalised message is derived
again from the redacted example (see :func:`_reshape_error_messages`).
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import agent
from agent.redaction import FileRedaction, Redactor
from protocol.errors import ExitStatus, HelplineError, InvalidInputError

from protocol.archive import sha256_file
from .collectors import collector_names
from .collectors.logs import normalise_line
from .model import CollectionReport, CollectorResult, ItemStatus
from .report_html import render_plain_report, render_report
from .summary import build_summary

BUNDLE_SCHEMA_VERSION = 1
RAW_DIR = "raw"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
DOCUMENTS = (SUMMARY_NAME, REPORT_NAME, MANIFEST_NAME)

SCRUBBED, DROPPED, NOT_SCRUBBED = "scrubbed", "dropped", "not_scrubbed"
#: Redaction status of an item that produced no file (not found, denied, skipped).
NO_FILE = "no_file"
#: Item status given to files found in staging that the report does not list.
UNLISTED = "unlisted"

#: Rounds of verify → re-scrub or drop → verify before giving up on the bundle.
_VERIFY_ROUNDS = 3
_WITHOUT_FILE = {ItemStatus.NOT_FOUND, ItemStatus.DENIED, ItemStatus.SKIPPED}
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_MAX_COMPONENT_BYTES = 200


@dataclass(frozen=True)
class CategoryPreview:
    """What one category contributes to the bundle, for the "this is what will be sent" screen."""

    category: str
    files: int  # files in the bundle
    bytes: int  # their size after redaction
    redactions: int  # values replaced in them
    dropped: int  # files left out (dropped or not scrubbed)

    def to_dict(self) -> dict[str, Any]:
        """Return the preview as plain JSON types."""
        return {"category": self.category, "files": self.files, "bytes": self.bytes,
                "redactions": self.redactions, "dropped": self.dropped}


@dataclass
class BundleResult:
    """A finished bundle directory with its manifest, summary and per-category preview."""

    out_dir: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    preview: list[CategoryPreview]

    @property
    def total_bytes(self) -> int:
        """Bytes of every file in the bundle: raw files plus the three documents."""
        documents = self.manifest.get("documents", {})
        manifest_size = (self.out_dir / MANIFEST_NAME).stat().st_size
        return self.manifest["totals"]["bytes"] + manifest_size + sum(doc["size"] for doc in documents.values())


@dataclass
class _Entry:
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

    @property
    def bundled(self) -> bool:
        return self.redaction == SCRUBBED


def build_bundle(
    report: CollectionReport,
    staging: Path,
    out_dir: Path,
    *,
    redactor: Redactor,
    exclude: Iterable[str] = frozenset(),
    extra: Mapping[str, Any] | None = None,
) -> BundleResult:
    """Redact the collection in ``staging`` described by ``report`` into the bundle directory ``out_dir``.

    ``out_dir`` is created (it must be absent or empty and outside ``staging``).
    Categories in ``exclude`` are left out entirely; ``extra`` (the user's own
    words, a ticket number) is redacted and kept in the manifest. Raise
    InvalidInputError for bad arguments, and HelplineError if the bundle's own
    documents cannot be made to pass verification (then nothing should be sent).
    """
    started = time.monotonic()
    created_at = datetime.now(timezone.utc).replace(microsecond=0)
    staging, out_dir = Path(staging), Path(out_dir)
    exclude = set(exclude)
    _check_arguments(report, staging, out_dir, exclude, extra)
    # Collectors may be excluded by name too; from here on, exclusion is by category.
    exclude = {r.category for r in report.results if r.name in exclude or r.category in exclude} | (
        exclude - {r.name for r in report.results})
    raw_root = out_dir / RAW_DIR
    raw_root.mkdir(parents=True, exist_ok=True)
    metadata_counts: Counter[str] = Counter()

    with tempfile.TemporaryDirectory(prefix="helpline-bundle-") as scratch:
        logs_facts = _reshape_error_messages(report, redactor)
        entries = _list_entries(report, staging, exclude) + _unlisted_entries(report, staging, exclude)
        _assign_paths(entries, redactor, raw_root)
        overrides = _facts_overrides(report, logs_facts, Path(scratch))
        for entry in entries:
            _scrub(entry, redactor, raw_root, overrides)
        # Metadata after the files, twice, so names the redactor learned anywhere are replaced everywhere.
        clean_report, extra_clean, hostname = _redact_metadata(report, logs_facts, exclude, extra, redactor,
                                                               Counter())
        clean_report, extra_clean, hostname = _redact_metadata(report, logs_facts, exclude, extra, redactor,
                                                               metadata_counts)
        _assign_paths(entries, redactor, raw_root)
        clean_report = _with_bundle_paths(clean_report, entries)
        summary = build_summary(clean_report, excluded=exclude)
        manifest, summary = _verify_and_write(
            entries, redactor, out_dir, raw_root, overrides,
            lambda: _manifest(report, clean_report, entries, exclude, extra_clean, hostname, created_at,
                              metadata_counts, time.monotonic() - started),
            summary, clean_report,
        )
    return BundleResult(out_dir, manifest, summary, _preview(entries))


# -- arguments and entries ------------------------------------------------------------


def _check_arguments(report: CollectionReport, staging: Path, out_dir: Path, exclude: set[str],
                     extra: Mapping[str, Any] | None) -> None:
    if not staging.is_dir():
        raise InvalidInputError(f"the staging directory {staging} does not exist", hint="collect diagnostics first")
    known = collector_names() | {r.category for r in report.results} | {r.name for r in report.results}
    unknown = sorted(exclude - known)
    if unknown:
        raise InvalidInputError(f"unknown diagnostics categories to exclude: {', '.join(unknown)}",
                                hint=f"choose from {', '.join(sorted(known))}")
    real_staging, real_out = staging.resolve(), out_dir.resolve()
    if real_out == real_staging or real_staging in real_out.parents or real_out in real_staging.parents:
        raise InvalidInputError("the bundle directory and the staging directory must not contain each other")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInputError(f"the bundle directory {out_dir} is not empty", hint="use a new, empty directory")
    if extra is not None:
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the extra bundle information is not plain JSON data: {exc}") from None


def _list_entries(report: CollectionReport, staging: Path, exclude: set[str]) -> list[_Entry]:
    """Make one entry per report item of a kept category, in report order."""
    entries: list[_Entry] = []
    seen: set[str] = set()
    real_staging = staging.resolve()
    for item in report.items:
        if item.category in exclude:
            continue
        entry = _Entry(path="", category=item.category or "unknown", source=item.source, kind=item.kind.value,
                       status=item.status.value, duration=item.duration, exit_code=item.exit_code, note=item.note,
                       staged_relpath=item.path)
        entries.append(entry)
        if not _safe_relpath(item.path):
            entry.redaction, entry.reason = DROPPED, "unsafe path in the collection report; never read"
            continue
        if item.path in seen:
            entry.redaction, entry.reason = DROPPED, "listed twice in the collection report; bundled once"
            continue
        seen.add(item.path)
        src = staging.joinpath(*item.path.split("/"))
        parent = Path(os.path.realpath(src.parent))
        if parent != real_staging and real_staging not in parent.parents:
            entry.redaction, entry.reason = DROPPED, "its folder leads outside the staging directory; never read"
            continue
        if item.status in _WITHOUT_FILE and not os.path.lexists(src):
            continue  # nothing was gathered: listed with the collector's note
        entry.staged = src
    return entries


def _unlisted_entries(report: CollectionReport, staging: Path, exclude: set[str]) -> list[_Entry]:
    """Name every file, link or special file in staging that the report does not list; none is bundled."""
    listed = {item.path for item in report.items}
    found: list[_Entry] = []

    def unlisted(relpath: str, what: str) -> None:
        category = relpath.split("/", 1)[0] if "/" in relpath else "unknown"
        if relpath not in listed and category not in exclude:
            found.append(_Entry(path="", category=category, source="not in the collection report", kind=None,
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


def _scrub(entry: _Entry, redactor: Redactor, raw_root: Path, overrides: Mapping[str, Path]) -> None:
    """Redact an entry's staged file into raw/ and record the outcome; entries without a file are left alone."""
    if entry.staged is None or not entry.listed:
        return
    src = overrides.get(entry.staged_relpath, entry.staged)
    dst = raw_root.joinpath(*entry.path.split("/"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        result: FileRedaction = redactor.redact_file(src, dst, relpath=entry.path)
    except Exception as exc:  # noqa: BLE001 - a redactor failure must drop the file, never pass it through
        result = FileRedaction(entry.path, DROPPED, {}, f"scrubbing failed ({type(exc).__name__})")
    entry.redaction, entry.counts, entry.reason = result.status, dict(result.counts), result.reason
    entry.size = entry.sha256 = None
    if result.status != SCRUBBED:
        dst.unlink(missing_ok=True)  # belt and braces: only scrubbed files have an output


# -- paths ---------------------------------------------------------------------------


def _safe_relpath(relpath: str) -> bool:
    """True for a relative POSIX path with no empty, '.' or '..' component (what collectors may write)."""
    if not relpath or "\\" in relpath or ":" in relpath or "\0" in relpath:
        return False
    if PurePosixPath(relpath).is_absolute():
        return False
    return all(part not in ("", ".", "..") for part in relpath.split("/"))


def _safe_bundle_path(relpath: str) -> str:
    """Return ``relpath`` with every component made safe to unpack on any OS (letters, digits, ``._-``)."""
    parts = []
    for part in relpath.split("/"):
        clean = re.sub(r"[^\w.\-]", "_", part).strip(" .") or "_"
        if _WINDOWS_RESERVED.match(clean):
            clean = "_" + clean
        while len(clean.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            clean = clean[:-1]
        parts.append(clean)
    return "/".join(parts)


def _unique_path(path: str, taken: set[str]) -> str:
    """Return ``path``, or a numbered variant, that no taken path equals or nests with (ignoring case)."""
    candidate, number = path, 2
    stem, dot, suffix = path.rpartition(".")

    def clashes(name: str) -> bool:
        key = name.casefold()
        return key in taken or any(key.startswith(t + "/") or t.startswith(key + "/") for t in taken)

    while clashes(candidate):
        candidate = f"{stem}-{number}.{suffix}" if dot and "/" not in suffix else f"{path}-{number}"
        number += 1
    taken.add(candidate.casefold())
    return candidate


def _assign_paths(entries: list[_Entry], redactor: Redactor, raw_root: Path) -> None:
    """Give every entry its bundle path: its staging path redacted with all the redactor knows, made safe, unique.

    Called before scrubbing and again after the metadata is redacted (the
    redactor may have learned a user or host name since); bundled files whose
    path changed are moved, through temporary names so no move overwrites
    another file.
    """
    taken: set[str] = set()
    moves: list[tuple[_Entry, str]] = []
    for entry in entries:
        redacted, _ = redactor.redact_text(entry.staged_relpath)
        # Unlisted entries are only named, never written: they need no room of their own.
        new_path = _unique_path(_safe_bundle_path(redacted), taken) if entry.listed else _safe_bundle_path(redacted)
        if entry.path and entry.bundled and new_path != entry.path:
            moves.append((entry, new_path))
        else:
            entry.path = new_path
    parked = []
    for number, (entry, new_path) in enumerate(moves):
        old = raw_root.joinpath(*entry.path.split("/"))
        temporary = raw_root / f".moving-{number}"
        os.replace(old, temporary)
        _prune_empty_dirs(old.parent, raw_root)
        parked.append((entry, new_path, temporary))
    for entry, new_path, temporary in parked:
        target = raw_root.joinpath(*new_path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, target)
        entry.path = new_path


def _prune_empty_dirs(directory: Path, root: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


# -- metadata ------------------------------------------------------------------------


def _reshape_error_messages(report: CollectionReport, redactor: Redactor) -> dict[str, Any] | None:
    """Return the logs facts with top-error messages derived again from redacted examples where needed.

    The logs collector replaces digits before redaction, which can hide a
    secret from the detectors (``S3cretPass`` -> ``S<n>cretPass``). When an
    error's example line needed redaction, its message becomes the normalised
    form of the *redacted* example instead, so no fragment survives. Return
    None when nothing had to change.
    """
    try:
        result = next(r for r in report.results if r.category == "logs")
    except StopIteration:
        return None
    top = result.facts.get("top_errors") if isinstance(result.facts, dict) else None
    if not isinstance(top, list):
        return None
    changed = False
    reshaped = []
    for entry in top:
        if isinstance(entry, dict) and isinstance(entry.get("example"), str) and isinstance(entry.get("message"), str):
            redacted, counts = redactor.redact_text(entry["example"])
            if counts:
                has_host = normalise_line(entry["example"], has_host=True) == entry["message"]
                entry = {**entry, "message": normalise_line(redacted, has_host=has_host)}
                changed = True
        reshaped.append(entry)
    return {**result.facts, "top_errors": reshaped} if changed else None


def _facts_overrides(report: CollectionReport, logs_facts: dict[str, Any] | None, scratch: Path) -> dict[str, Path]:
    """Write the reshaped logs facts where the staged ``logs/facts.json`` would be scrubbed from (see above)."""
    if logs_facts is None:
        return {}
    relpath = next((item.path for item in report.items
                    if item.path.endswith("/facts.json") and item.category == "logs"
                    and item.source.startswith("python:")), None)
    if relpath is None:
        return {}
    path = scratch / "logs-facts.json"
    path.write_text(json.dumps(logs_facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {relpath: path}


def _redact_metadata(
    report: CollectionReport,
    logs_facts: dict[str, Any] | None,
    exclude: set[str],
    extra: Mapping[str, Any] | None,
    redactor: Redactor,
    counts: Counter[str],
) -> tuple[CollectionReport, dict[str, Any] | None, str | None]:
    """Return the report with facts, errors, sources and notes redacted, the redacted extra and hostname."""
    results = []
    hostname = None
    for result in report.results:
        if result.category in exclude or result.name in exclude:
            # Kept as a bare record so the summary can say "excluded"; nothing of its output remains.
            results.append(CollectorResult(result.name, result.category, result.status, result.duration))
            continue
        facts = logs_facts if logs_facts is not None and result.category == "logs" else result.facts
        clean_facts, dropped = redact_document(redactor, facts, counts)
        if dropped:
            clean_facts = {**(clean_facts or {}), "_dropped_facts": dropped}
        if result.category == "system" and isinstance(facts, dict) and isinstance(facts.get("hostname"), str):
            hostname = _redact_str(redactor, facts["hostname"], counts)
        items = [replace(item, source=_redact_str(redactor, item.source, counts) or "",
                         note=_redact_str(redactor, item.note, counts)) for item in result.items]
        results.append(CollectorResult(result.name, result.category, result.status, result.duration, items,
                                       clean_facts or {}, _redact_str(redactor, result.error, counts)))
    clean_extra = None
    if extra is not None:
        clean_extra, dropped = redact_document(redactor, dict(extra), counts)
        if dropped:
            clean_extra = {**(clean_extra or {}), "_dropped": dropped}
    clean = CollectionReport(report.started_at, report.finished_at, report.platform, report.deadline, results)
    return clean, clean_extra, hostname


def _with_bundle_paths(report: CollectionReport, entries: list[_Entry]) -> CollectionReport:
    """Return ``report`` whose items carry their bundle paths instead of staging paths.

    The entries take the redacted source and note of their items in turn, so
    the manifest never shows what the report held before redaction.
    """
    clean_items = {item.path: item for item in report.items}
    for entry in entries:
        if entry.listed and entry.staged_relpath in clean_items:
            entry.source = clean_items[entry.staged_relpath].source
            entry.note = clean_items[entry.staged_relpath].note
    by_staged = {entry.staged_relpath: entry.path for entry in entries if entry.listed}
    results = [replace(result, items=[replace(item, path=by_staged.get(item.path, item.path))
                                      for item in result.items])
               for result in report.results]
    return replace(report, results=results)


def redact_document(redactor: Redactor, document: Any, counts: Counter[str] | None = None) -> tuple[Any, list[str]]:
    """Return a JSON-able ``document`` redacted as text (so ``"password": "x"`` pairs are seen) and parsed back.

    If the redacted text is no longer JSON, each top-level key of a dict is tried
    on its own and the ones that still break are dropped; their names are
    returned (redacted) so the manifest can say so. A non-dict that breaks is
    dropped whole (None).
    """
    counts = Counter() if counts is None else counts
    text = json.dumps(document, indent=2, ensure_ascii=False)
    redacted, found = redactor.redact_text(text)
    try:
        parsed = json.loads(redacted)
        counts.update(found)
        return parsed, []
    except ValueError:
        pass
    if not isinstance(document, dict):
        return None, ["(whole value)"]
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in document.items():
        piece, found = redactor.redact_text(json.dumps({key: value}, indent=2, ensure_ascii=False))
        try:
            parsed = json.loads(piece)
        except ValueError:
            dropped.append(redactor.redact_text(str(key))[0])
            continue
        counts.update(found)
        kept.update(parsed)
    return kept, dropped


def _redact_str(redactor: Redactor, value: str | None, counts: Counter[str]) -> str | None:
    if value is None:
        return None
    text, found = redactor.redact_text(value)
    counts.update(found)
    return text


# -- verification and documents --------------------------------------------------------


def _verify_and_write(entries: list[_Entry], redactor: Redactor, out_dir: Path, raw_root: Path,
                      overrides: Mapping[str, Path], make_manifest, summary: dict[str, Any],
                      clean_report: CollectionReport) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the documents, verify the whole bundle, re-scrub or drop flagged raw files; repeat until clean.

    Return the manifest and summary as written. Values that verification
    would flag on their own are withheld from the documents first (see
    :func:`_withhold_flagged`). A raw file flagged once is scrubbed again from
    staging (the redactor may have learned a name since); flagged again, it is
    removed and marked dropped. If report.html is still flagged (its fixed
    wording can collide with a learned name), a plain page replaces it. Every
    round changes at least one outcome, so this ends. A flagged manifest or
    summary cannot be fixed: the documents are removed and HelplineError raised.
    """
    facts = {result.category: result.facts for result in clean_report.results}
    plain_report: str | None = None
    for _ in range(2 * len(entries) + 3):
        _rename_flagged_paths(entries, redactor, raw_root)
        by_path = {f"{RAW_DIR}/{entry.path}": entry for entry in entries if entry.bundled}
        for entry in entries:
            if entry.bundled and entry.sha256 is None:
                entry.size, entry.sha256 = sha256_file(raw_root.joinpath(*entry.path.split("/")))
        manifest, summary_out, facts_out, withheld = _withhold_flagged(redactor, make_manifest(), summary, facts)
        manifest["verification"].update({"withheld_values": withheld, "report_html": plain_report or "full"})
        _write_documents(out_dir, manifest, summary_out, facts_out, plain_report is not None)
        findings = redactor.verify_tree(out_dir)
        if not findings:
            return manifest, summary_out
        flagged: dict[str, set[str]] = defaultdict(set)
        for finding in findings:
            flagged[finding.path].add(finding.detector)
        if REPORT_NAME in flagged and plain_report is None:
            found = ", ".join(sorted(flagged.pop(REPORT_NAME)))
            plain_report = f"replaced by a plain page: the final check found {found}"
        unfixable = sorted(path for path in flagged if path not in by_path)
        if unfixable:
            _refuse(out_dir, unfixable[0], flagged[unfixable[0]])
        for path, detectors in sorted(flagged.items()):
            entry = by_path[path]
            if not entry.retried and entry.staged is not None:
                entry.retried = True
                _scrub(entry, redactor, raw_root, overrides)
                if entry.bundled:
                    continue
            raw_root.joinpath(*entry.path.split("/")).unlink(missing_ok=True)
            entry.redaction, entry.counts, entry.size, entry.sha256 = DROPPED, {}, None, None
            entry.reason = f"verification found {', '.join(sorted(detectors))}"
    _refuse(out_dir, f"{RAW_DIR}/", {"findings that did not go away"})
    raise AssertionError("unreachable")  # pragma: no cover - _refuse always raises


def _withhold_flagged(redactor: Redactor, manifest: dict[str, Any], summary: dict[str, Any],
                      facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """Replace every string of the documents' data that verification flags on its own with a withheld marker.

    Redaction and verification can disagree (verification also looks for every
    original the pseudonym map holds, even inside longer words); a value the
    redactor left alone but verification flags would otherwise make a document
    fail the final check. Each distinct string (and each key of the free-form
    facts and extra data) is written on its own line to a scratch directory and
    verified there; flagged ones become ``[withheld:<detector>]``. Return the
    three documents' data and how many distinct values were withheld.
    """
    strings: set[str] = set()
    for document, keys in ((manifest, False), (summary, False), (facts, True), (manifest.get("extra"), True)):
        _collect_strings(document, strings, keys)
    # The page shows values HTML-escaped, which can change what a detector sees (``<`` ends a URL, ``&lt;`` not).
    variants = {value: value for value in strings}
    variants.update({html.escape(value): value for value in strings if html.escape(value) != value})
    flagged = {variants[variant]: f"[withheld:{detector}]"
               for variant, detector in _flagged_strings(redactor, variants).items()}
    if not flagged:
        return manifest, summary, facts, 0
    manifest = _replace_strings(manifest, flagged, keys=False)
    if isinstance(manifest.get("extra"), dict):
        manifest["extra"] = _replace_strings(manifest["extra"], flagged, keys=True)
    return (manifest, _replace_strings(summary, flagged, keys=False), _replace_strings(facts, flagged, keys=True),
            len(flagged))


def _flagged_strings(redactor: Redactor, strings: Iterable[str]) -> dict[str, str]:
    """Return the strings verification flags when each stands alone, with the (first) detector that flagged it."""
    ordered = sorted(set(strings))
    if not ordered:
        return {}
    with tempfile.TemporaryDirectory(prefix="helpline-verify-") as scratch:
        # One JSON-escaped string per line, so a finding's line number names the string.
        Path(scratch, "values.txt").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in ordered),
                                               encoding="utf-8")
        findings = redactor.verify_tree(Path(scratch))
    flagged: dict[str, str] = {}
    for finding in sorted(findings, key=lambda f: (f.line, f.detector)):
        if 0 < finding.line <= len(ordered):
            flagged.setdefault(ordered[finding.line - 1], finding.detector)
    return flagged


def _rename_flagged_paths(entries: list[_Entry], redactor: Redactor, raw_root: Path) -> None:
    """Give entries whose bundle path verification flags (a name inside a longer word) a neutral path.

    File names are not scanned by verification but end up in the manifest and
    the archive, so a flagged path becomes ``<category>/withheld-<n>.<ext>``.
    """
    flagged = _flagged_strings(redactor, (entry.path for entry in entries))
    if not flagged:
        return
    taken = {entry.path.casefold() for entry in entries if entry.path not in flagged}
    for number, entry in enumerate(e for e in entries if e.path in flagged):
        suffix = PurePosixPath(entry.path).suffix
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
        new_path = _unique_path(f"{_safe_bundle_path(entry.category)}/withheld-{number + 1}{suffix}", taken)
        if entry.bundled:
            old = raw_root.joinpath(*entry.path.split("/"))
            target = raw_root.joinpath(*new_path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, target)
            _prune_empty_dirs(old.parent, raw_root)
        entry.path = new_path


def _collect_strings(value: Any, found: set[str], keys: bool) -> None:
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if keys and isinstance(key, str):
                found.add(key)
            _collect_strings(item, found, keys)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, found, keys)


def _replace_strings(value: Any, replacements: Mapping[str, str], keys: bool) -> Any:
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, dict):
        return {(replacements.get(k, k) if keys and isinstance(k, str) else k): _replace_strings(v, replacements, keys)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(item, replacements, keys) for item in value]
    return value


def _refuse(out_dir: Path, where: str, detectors: Iterable[str]) -> None:
    """Remove the documents (so nothing half-checked looks ready) and raise: the bundle must not be sent."""
    for name in DOCUMENTS:
        (out_dir / name).unlink(missing_ok=True)
    raise HelplineError(
        f"the bundle failed its final check: {where} still contains {', '.join(sorted(detectors))}; "
        "nothing should be sent",
        hint="share again with that category excluded, or report this to your Helpline admin",
        status=ExitStatus.ERROR,
    )


def _write_documents(out_dir: Path, manifest: dict[str, Any], summary: dict[str, Any], facts: dict[str, Any],
                     plain_report: bool) -> None:
    """Write summary.json and report.html (or the plain page), then manifest.json with their sizes and hashes."""
    _write_text(out_dir / SUMMARY_NAME, _json_text(summary))
    page = render_plain_report() if plain_report else render_report(manifest, summary, facts)
    _write_text(out_dir / REPORT_NAME, page)
    manifest["documents"] = {}
    for name in (SUMMARY_NAME, REPORT_NAME):
        size, digest = sha256_file(out_dir / name)
        manifest["documents"][name] = {"size": size, "sha256": digest}
    _write_text(out_dir / MANIFEST_NAME, _json_text(manifest))


def _json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- manifest and preview -------------------------------------------------------------


def _manifest(report: CollectionReport, clean_report: CollectionReport, entries: list[_Entry], exclude: set[str],
              extra: dict[str, Any] | None, hostname: str | None, created_at: datetime,
              metadata_counts: Counter[str], build_seconds: float) -> dict[str, Any]:
    """Return the manifest: what the bundle holds, where it came from, and the fate of every file."""
    clean = {result.name: result for result in clean_report.results}
    collectors = []
    for result in report.results:
        if result.category in exclude or result.name in exclude:
            collectors.append({"name": result.name, "category": result.category, "status": "excluded",
                               "duration": round(result.duration, 3), "error": None, "items": 0})
        else:
            collectors.append({"name": result.name, "category": result.category, "status": result.status.value,
                               "duration": round(result.duration, 3), "error": clean[result.name].error,
                               "items": len(result.items)})
    file_counts: Counter[str] = Counter()
    by_redaction: Counter[str] = Counter()
    for entry in entries:
        file_counts.update(entry.counts)
        by_redaction[entry.redaction] += 1
    bundled = [entry for entry in entries if entry.bundled]
    left_out = [entry for entry in entries if entry.redaction in (DROPPED, NOT_SCRUBBED)]
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "created_at": created_at.isoformat(),
        "helpline_version": agent.__version__,
        "platform": report.platform,
        "hostname": hostname,
        "collection": {
            "started_at": report.started_at.isoformat(timespec="seconds"),
            "finished_at": report.finished_at.isoformat(timespec="seconds"),
            "deadline": report.deadline,
            "duration": round(report.duration, 3),
        },
        "build_seconds": round(build_seconds, 3),
        "collectors": collectors,
        "excluded": sorted(exclude),
        "items": [_item_record(entry) for entry in entries],
        "totals": {
            "items": len(entries),
            "files": len(bundled),
            "bytes": sum(entry.size or 0 for entry in bundled),
            "left_out": len(left_out),
            "by_redaction_status": dict(sorted(by_redaction.items())),
            "redactions": _count_list(file_counts),
            "metadata_redactions": _count_list(metadata_counts),
        },
        "verification": {
            "dropped": [{"path": entry.path, "reason": entry.reason} for entry in entries
                        if entry.reason and entry.reason.startswith("verification found")],
        },
        "extra": extra,
    }


def _item_record(entry: _Entry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "file": f"{RAW_DIR}/{entry.path}" if entry.bundled else None,
        "category": entry.category,
        "source": entry.source,
        "kind": entry.kind,
        "status": entry.status,
        "listed": entry.listed,
        "duration": round(entry.duration, 4),
        "exit_code": entry.exit_code,
        "note": entry.note,
        "size": entry.size if entry.bundled else None,
        "sha256": entry.sha256 if entry.bundled else None,
        "redaction": {"status": entry.redaction, "counts": _count_list(entry.counts), "reason": entry.reason},
    }


def _count_list(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """Counts as ``[{detector, count}]``: a ``{"password": 2}`` object would itself look like a secret."""
    return [{"detector": name, "count": count} for name, count in sorted(counts.items()) if count]


def _preview(entries: list[_Entry]) -> list[CategoryPreview]:
    order: list[str] = []
    files: Counter[str] = Counter()
    size: Counter[str] = Counter()
    redactions: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for entry in entries:
        if entry.category not in order:
            order.append(entry.category)
        if entry.bundled:
            files[entry.category] += 1
            size[entry.category] += entry.size or 0
            redactions[entry.category] += sum(entry.counts.values())
        elif entry.redaction in (DROPPED, NOT_SCRUBBED):
            dropped[entry.category] += 1
    return [CategoryPreview(c, files[c], size[c], redactions[c], dropped[c]) for c in order]


__all__ = ["BundleResult", "CategoryPreview", "build_bundle", "redact_document"]
