"""The final check: write the documents, verify the whole bundle, and fix what can be fixed —
withhold flagged values, scrub again or withhold the flagged lines of raw files (dropping a
file only when its lines cannot be told apart), replace a flagged page — until the bundle is
clean, or refuse it."""

from __future__ import annotations

import html
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.diagnostics.model import CollectionReport
from agent.redaction import Redactor
from agent.redaction.textfiles import NotText, atomic_text_writer, read_text_chunks
from agent.redaction.verify import SECOND_LOOK
from protocol.archive import sha256_file
from protocol.bundle import (
    DOCUMENTS,
    FULL_REPORT,
    MANIFEST_NAME,
    RAW_DIR,
    REPORT_NAME,
    SUMMARY_NAME,
    raw_member,
)
from protocol.errors import ExitStatus, HelplineError

from .entries import BundleEntry, drop_entry, scrub_entry
from .manifest import VERIFICATION_FOUND
from .paths import rename_flagged_paths
from .report_html import render_plain_report, render_report
from agent.regexes import rx


@dataclass(frozen=True)
class WrittenDocuments:
    """The manifest and summary as written to the bundle."""

    manifest: dict[str, Any]
    summary: dict[str, Any]


def verify_and_write(entries: list[BundleEntry], redactor: Redactor, out_dir: Path, raw_root: Path,
                     make_manifest: Callable[[], dict[str, Any]], summary: dict[str, Any],
                     clean_report: CollectionReport) -> WrittenDocuments:
    """Write the documents, verify the whole bundle, re-scrub or drop flagged raw files; repeat until clean.

    Values that the final check would flag on their own are withheld from the
    documents first (see :func:`withhold_flagged`). A raw file flagged once is
    scrubbed again from staging (the redactor may have learned a name since)
    when the detectors flagged it; flagged again, or flagged by the second look
    alone, its flagged lines are withheld (each replaced by a marker), and only a
    file whose findings name no line, or that stays flagged after
    :data:`WITHHOLD_ROUNDS` rounds, is removed and marked dropped. If report.html is still
    flagged (its fixed wording can collide with a learned name), a plain page
    replaces it. Every round changes at least one outcome, so this ends. A
    flagged manifest or summary cannot be fixed: the documents are removed and
    HelplineError raised.
    """
    facts = {result.category: result.facts for result in clean_report.results}
    plain_report: str | None = None
    kinds = redactor.kinds_checked()
    for _ in range((WITHHOLD_ROUNDS + 2) * len(entries) + 3):
        rename_flagged_paths(entries, redactor, raw_root)
        by_path = {raw_member(entry.path): entry for entry in entries if entry.bundled}
        for entry in entries:
            if entry.bundled and entry.sha256 is None:
                entry.size, entry.sha256 = sha256_file(raw_root.joinpath(*entry.path.split("/")))
        manifest_out, summary_out, facts_out, withheld = withhold_flagged(redactor, make_manifest(),
                                                                          summary, facts)
        manifest_out["verification"].update({
            "withheld_values": withheld, "report_html": plain_report or FULL_REPORT,
            "files_checked": sum(1 for entry in entries if entry.bundled) + len(DOCUMENTS), "kinds_checked": kinds,
            "withheld_lines": sum(entry.withheld_lines for entry in entries if entry.bundled)})
        written = _write_documents(out_dir, manifest_out, summary_out, facts_out,
                                   plain_report is not None)
        findings = redactor.verify_tree(out_dir)
        if not findings:
            return written
        flagged: dict[str, set[str]] = defaultdict(set)
        flagged_lines: dict[str, set[int]] = defaultdict(set)
        for finding in findings:
            flagged[finding.path].add(finding.detector)
            flagged_lines[finding.path].add(finding.line)
        if REPORT_NAME in flagged and plain_report is None:
            found = ", ".join(sorted(flagged.pop(REPORT_NAME)))
            plain_report = f"replaced by a plain page: the final check found {found}"
        unfixable = sorted(path for path in flagged if path not in by_path)
        if unfixable:
            _refuse(out_dir, unfixable[0], flagged[unfixable[0]])
        for path, detectors in sorted(flagged.items()):
            entry = by_path[path]
            first_pass = any(not detector.startswith(SECOND_LOOK) for detector in detectors)
            if first_pass and not entry.retried and entry.staged is not None:
                entry.retried = True
                scrub_entry(entry, redactor, raw_root)
                if entry.bundled:
                    continue
            lines = flagged_lines[path]
            if entry.bundled and 0 not in lines and entry.withhold_rounds < WITHHOLD_ROUNDS:
                entry.withhold_rounds += 1
                count = withhold_lines(raw_root.joinpath(*entry.path.split("/")), lines)
                if count:
                    entry.withheld_lines += count
                    entry.size = entry.sha256 = None
                    entry.reason = f"the final check withheld {entry.withheld_lines} line(s) ({', '.join(sorted(detectors))})"
                    continue
            drop_entry(entry, raw_root, f"{VERIFICATION_FOUND} {', '.join(sorted(detectors))}")
    _refuse(out_dir, f"{RAW_DIR}/", {"findings that did not go away"})
    raise AssertionError("unreachable")  # pragma: no cover - _refuse always raises


#: How many times the final check withholds lines of one file before it drops the file.
WITHHOLD_ROUNDS = 2
#: What a withheld line becomes; it names no detector, so it cannot be mistaken for what it replaced.
WITHHELD_LINE = "[line withheld by the final check]"
_JSON_STRING = rx(r'"(?:[^"\\]|\\.)*"(\s*:)?')


def _withhold_value(match: re.Match[str]) -> str:
    """A JSON string in a withheld line: keys stay (the shape is kept), values become the marker."""
    return match.group(0) if match.group(1) else json.dumps(WITHHELD_LINE)


def withhold_lines(path: Path, lines: set[int]) -> int:
    """Replace lines ``lines`` (1-based) of the text file at ``path`` with a marker; return how many were replaced.

    The file keeps its encoding and line endings. In a JSON file only the flagged
    lines' string values become the marker, so the file stays valid JSON; if it
    would not, nothing is replaced and 0 returned (the caller drops the file).
    """
    json_file = path.suffix.lower() == ".json"
    replaced = 0
    try:
        with open(path, "rb") as raw:
            encoding, pieces = read_text_chunks(raw)
            text_parts: list[str] = []
            lines_before = 0
            for piece in pieces:
                # Numbered as the check numbers them: by "\n" alone, a piece cut mid-line continuing it.
                parts = piece.split("\n")
                for index, part in enumerate(parts):
                    if lines_before + index + 1 in lines and part.strip("\r"):
                        body = part.rstrip("\r")
                        body = _JSON_STRING.sub(_withhold_value, body) if json_file else WITHHELD_LINE
                        part = body + part[len(part.rstrip("\r")):]
                        replaced += 1
                    text_parts.append(part if index == len(parts) - 1 else part + "\n")
                lines_before += piece.count("\n")
    except (OSError, NotText, UnicodeError):
        return 0
    text = "".join(text_parts)
    if json_file:
        try:
            json.loads(text)
        except ValueError:
            return 0
    with atomic_text_writer(path, encoding) as out:
        out.write(text)
    return replaced


def withhold_flagged(redactor: Redactor, manifest: dict[str, Any], summary: dict[str, Any],
                     facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """Replace every string of the documents' data that the final check flags on its own with a withheld marker.

    Redaction and the final check can disagree (the check also looks for every
    original the pseudonym map holds, even inside longer words); a value the
    redactor left alone but the check flags would otherwise make a document
    fail. Each distinct string (and each key of the free-form facts and extra
    data) is judged as the documents show it, a JSON string or HTML-escaped on
    the page; flagged ones become ``[withheld:<detector>]``. Return the three
    documents' data and how many distinct values were withheld.
    """
    strings: set[str] = set()
    for document, keys in ((manifest, False), (summary, False), (facts, True), (manifest.get("extra"), True)):
        _collect_strings(document, strings, keys)
    # The page shows values HTML-escaped, which can change what a detector sees (``<`` ends a URL, ``&lt;`` not).
    variants = {value: value for value in strings}
    variants.update({html.escape(value): value for value in strings if html.escape(value) != value})
    as_json = {json.dumps(variant, ensure_ascii=False): value for variant, value in variants.items()}
    flagged: dict[str, str] = {}
    for text, detector in sorted(redactor.flags(as_json).items()):
        flagged.setdefault(as_json[text], f"[withheld:{detector}]")
    if not flagged:
        return manifest, summary, facts, 0
    manifest = _replace_strings(manifest, flagged, keys=False)
    if isinstance(manifest.get("extra"), dict):
        manifest["extra"] = _replace_strings(manifest["extra"], flagged, keys=True)
    return (manifest, _replace_strings(summary, flagged, keys=False), _replace_strings(facts, flagged, keys=True),
            len(flagged))


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
                     plain_report: bool) -> WrittenDocuments:
    """Write summary.json and report.html (or the plain page), then manifest.json with their sizes and hashes."""
    _write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    manifest["documents"] = {}
    page = render_plain_report() if plain_report else render_report(manifest, summary, facts)
    _write_text(out_dir / REPORT_NAME, page)
    for name in (SUMMARY_NAME, REPORT_NAME):
        size, digest = sha256_file(out_dir / name)
        manifest["documents"][name] = {"size": size, "sha256": digest}
    _write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return WrittenDocuments(manifest, summary)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
