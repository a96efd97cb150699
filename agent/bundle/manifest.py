"""The bundle's manifest, made from the entries: what the bundle holds, where it came from, and the
fate of every file (see :class:`protocol.bundle.Manifest` for the format)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

import agent
from agent.diagnostics.model import CollectionReport
from protocol.bundle import (
    BUNDLE_SCHEMA_VERSION,
    EXCLUDED,
    CollectionTimes,
    CollectorRecord,
    DetectorCount,
    DroppedFile,
    ItemRedaction,
    Manifest,
    ManifestItem,
    Totals,
    Verification,
    raw_member,
)

from .entries import BundleEntry

#: The start of an entry's reason when the final check dropped its file.
VERIFICATION_FOUND = "verification found"


def make_manifest(report: CollectionReport, clean_report: CollectionReport, entries: list[BundleEntry],
                  exclude: set[str], extra: dict | None, hostname: str | None, created_at: datetime,
                  metadata_counts: Mapping[str, int], build_seconds: float) -> Manifest:
    """Return the manifest of the bundle; ``clean_report`` is ``report`` with its words redacted."""
    clean = {result.name: result for result in clean_report.results}
    collectors = []
    for result in report.results:
        if result.category in exclude or result.name in exclude:
            collectors.append(CollectorRecord(name=result.name, category=result.category, status=EXCLUDED,
                                              duration=round(result.duration, 3), error=None, items=0))
        else:
            collectors.append(CollectorRecord(name=result.name, category=result.category,
                                              status=result.status.value, duration=round(result.duration, 3),
                                              error=clean[result.name].error, items=len(result.items)))
    file_counts: Counter[str] = Counter()
    by_redaction: Counter[str] = Counter()
    for entry in entries:
        file_counts.update(entry.counts)
        by_redaction[entry.redaction] += 1
    bundled = [entry for entry in entries if entry.bundled]
    return Manifest(
        schema_version=BUNDLE_SCHEMA_VERSION,
        created_at=created_at,
        helpline_version=agent.__version__,
        platform=report.platform,
        hostname=hostname,
        collection=CollectionTimes(started_at=report.started_at, finished_at=report.finished_at,
                                   deadline=report.deadline, duration=round(report.duration, 3)),
        build_seconds=round(build_seconds, 3),
        collectors=collectors,
        excluded=sorted(exclude),
        items=[_item_record(entry) for entry in entries],
        totals=Totals(
            items=len(entries),
            files=len(bundled),
            bytes=sum(entry.size or 0 for entry in bundled),
            left_out=sum(1 for entry in entries if entry.left_out),
            by_redaction_status=dict(sorted(by_redaction.items())),
            redactions=count_list(file_counts),
            metadata_redactions=count_list(metadata_counts),
        ),
        verification=Verification(dropped=[DroppedFile(path=entry.path, reason=entry.reason) for entry in entries
                                           if entry.reason and entry.reason.startswith(VERIFICATION_FOUND)]),
        extra=extra,
    )


def _item_record(entry: BundleEntry) -> ManifestItem:
    return ManifestItem(
        path=entry.path,
        file=raw_member(entry.path) if entry.bundled else None,
        category=entry.category,
        source=entry.source,
        kind=entry.kind,
        status=entry.status,
        listed=entry.listed,
        duration=round(entry.duration, 4),
        exit_code=entry.exit_code,
        note=entry.note,
        size=entry.size if entry.bundled else None,
        sha256=entry.sha256 if entry.bundled else None,
        redaction=ItemRedaction(status=entry.redaction, counts=count_list(entry.counts), reason=entry.reason),
    )


def count_list(counts: Mapping[str, int]) -> list[DetectorCount]:
    """Counts as ``[{detector, count}]``: a ``{"password": 2}`` object would itself look like a secret."""
    return [DetectorCount(detector=name, count=count) for name, count in sorted(counts.items()) if count]
