"""The collection report's own words, redacted: every collector's facts, errors, item sources and
notes, the hostname, and the user's extra information, before any of it reaches a document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.diagnostics.model import CollectionReport, CollectorResult
from agent.redaction import Redactor

from .entries import BundleEntry


@dataclass(frozen=True)
class RedactedMetadata:
    """The report with its words redacted, the redacted extra information and hostname."""

    report: CollectionReport
    extra: dict[str, Any] | None
    hostname: str | None


def redact_metadata(report: CollectionReport, exclude: set[str], extra: Mapping[str, Any] | None,
                    redactor: Redactor, counts: Counter[str]) -> RedactedMetadata:
    """Return the report with facts, errors, sources and notes redacted, with the redacted extra and hostname.

    Excluded collectors are kept as bare records (so the summary can say
    "excluded"); nothing of their output remains. Replacements are added to
    ``counts``.
    """
    results = []
    hostname = None
    for result in report.results:
        if result.category in exclude or result.name in exclude:
            results.append(CollectorResult(result.name, result.category, result.status, result.duration))
            continue
        clean_facts = _redact_document(redactor, result.facts, counts)
        facts = result.facts
        if result.category == "system" and isinstance(facts, dict) and isinstance(facts.get("hostname"), str):
            hostname = _redact_str(redactor, facts["hostname"], counts)
        items = [replace(item, source=_redact_str(redactor, item.source, counts) or "",
                         note=_redact_str(redactor, item.note, counts)) for item in result.items]
        results.append(CollectorResult(result.name, result.category, result.status, result.duration, items,
                                       clean_facts or {}, _redact_str(redactor, result.error, counts)))
    clean_extra = _redact_document(redactor, dict(extra), counts) if extra is not None else None
    clean = CollectionReport(report.started_at, report.finished_at, report.platform, report.deadline, results)
    return RedactedMetadata(clean, clean_extra, hostname)


def with_bundle_paths(report: CollectionReport, entries: list[BundleEntry]) -> CollectionReport:
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


def _redact_document(redactor: Redactor, document: Any, counts: Counter[str]) -> Any:
    clean, found = redactor.redact_document(document)
    counts.update(found)
    return clean


def _redact_str(redactor: Redactor, value: str | None, counts: Counter[str]) -> str | None:
    if value is None:
        return None
    text, found = redactor.redact_text(value)
    counts.update(found)
    return text
