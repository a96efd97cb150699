"""The bundle's manifest, made from the entries: what the bundle holds, where it came from, and the
fate of every file.

Written as plain JSON data in exactly the form of :class:`protocol.manifest.Manifest`
(schema version 1: the same fields in the same order), which readers validate it
against; the tests hold the two together. Plain data, because building the model
cost a share a tenth of its start-up in loading the model library alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import agent
from agent.diagnostics.model import CollectionReport
from protocol.bundle import BUNDLE_SCHEMA_VERSION, EXCLUDED, FULL_REPORT, raw_member

from .entries import BundleEntry

#: The start of an entry's reason when the final check dropped its file.
VERIFICATION_FOUND = "verification found"


def make_manifest(report: CollectionReport, clean_report: CollectionReport, entries: list[BundleEntry],
                  exclude: set[str], extra: dict | None, hostname: str | None, created_at: datetime,
                  metadata_counts: Mapping[str, int], build_seconds: float) -> dict[str, Any]:
    """Return the manifest of the bundle as JSON data; ``clean_report`` is ``report`` with its words redacted."""
    clean = {result.name: result for result in clean_report.results}
    collectors = []
    for result in report.results:
        excluded = result.category in exclude or result.name in exclude
        collectors.append({
            "name": result.name,
            "category": result.category,
            "status": EXCLUDED if excluded else result.status.value,
            "duration": round(float(result.duration), 3),
            "error": None if excluded else clean[result.name].error,
            "items": 0 if excluded else len(result.items),
        })
    file_counts: Counter[str] = Counter()
    by_redaction: Counter[str] = Counter()
    for entry in entries:
        file_counts.update(entry.counts)
        by_redaction[entry.redaction] += 1
    bundled = [entry for entry in entries if entry.bundled]
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "created_at": created_at.isoformat(),
        "helpline_version": agent.__version__,
        "platform": report.platform,
        "hostname": hostname,
        "collection": {
            "started_at": report.started_at.isoformat(timespec="seconds"),
            "finished_at": report.finished_at.isoformat(timespec="seconds"),
            "deadline": float(report.deadline),
            "duration": round(float(report.duration), 3),
        },
        "build_seconds": round(float(build_seconds), 3),
        "collectors": collectors,
        "excluded": sorted(exclude),
        "items": [_item_record(entry) for entry in entries],
        "totals": {
            "items": len(entries),
            "files": len(bundled),
            "bytes": sum(entry.size or 0 for entry in bundled),
            "left_out": sum(1 for entry in entries if entry.left_out),
            "by_redaction_status": dict(sorted(by_redaction.items())),
            "redactions": count_list(file_counts),
            "metadata_redactions": count_list(metadata_counts),
        },
        # The counts of what was checked are added by the final check (protocol.manifest.Verification).
        "verification": {
            "dropped": [{"path": entry.path, "reason": entry.reason} for entry in entries
                        if entry.reason and entry.reason.startswith(VERIFICATION_FOUND)],
            "withheld_values": 0,
            "report_html": FULL_REPORT,
        },
        "extra": None if extra is None else json.loads(json.dumps(extra)),  # a copy, as plain as it is written
        "documents": {},
    }


def _item_record(entry: BundleEntry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "file": raw_member(entry.path) if entry.bundled else None,
        "category": entry.category,
        "source": entry.source,
        "kind": entry.kind,
        "status": entry.status,
        "listed": entry.listed,
        "duration": round(float(entry.duration), 4),
        "exit_code": entry.exit_code,
        "note": entry.note,
        "size": entry.size if entry.bundled else None,
        "sha256": entry.sha256 if entry.bundled else None,
        "redaction": {"status": entry.redaction, "counts": count_list(entry.counts), "reason": entry.reason},
    }


def count_list(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """Counts as ``[{detector, count}]``: a ``{"password": 2}`` object would itself look like a secret."""
    return [{"detector": name, "count": count} for name, count in sorted(counts.items()) if count]
