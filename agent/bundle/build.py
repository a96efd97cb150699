"""Turn a collection (staging directory + report) into the bundle a user is asked to send:
``raw/`` (every collected file, redacted), ``summary.json`` (triage facts),
``report.html`` (readable offline) and ``manifest.json`` (what is in it and what
became of every file).

Redaction fails closed at every step: the file list comes from the report (not from
walking the directory), every listed file goes through the redactor, anything on
disk the report does not list is named in the manifest and never bundled, the
report's facts and metadata are redacted too, and a final check over the whole
bundle removes (and names) any file in which something is still found.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.diagnostics.collectors import collector_names
from agent.diagnostics.model import CollectionReport, CollectorResult
from agent.redaction import Redactor
from agent.regexes import AGENT_CACHE
from protocol.bundle import RAW_DIR
from protocol.errors import InvalidInputError

from .entries import BundleEntry, drop_entry, entries_for, listed_entries, scrub_entry, unlisted_entries
from .final_check import verify_and_write
from .manifest import make_manifest
from .metadata import redact_metadata, with_bundle_paths
from .paths import assign_paths, safe_bundle_path, unique_path
from .preview import preview
from .result import BundleResult
from .summary import build_summary


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
    documents cannot be made to pass the final check (then nothing should be sent).
    """
    return BundleBuilder(staging, out_dir, redactor=redactor, exclude=exclude).finish(report, extra=extra)


class BundleBuilder:
    """:func:`build_bundle` in two steps, so that files are scrubbed while the collection still runs.

    :meth:`scrub_early` takes the result of each collector as it ends (the
    collection's ``on_result``) and scrubs its files into ``raw/`` while slower
    collectors still work; :meth:`finish` does everything else once the report is
    complete, exactly as for a bundle built in one go: entries in report order, paths
    assigned anew (files scrubbed early move to them), the files not scrubbed yet,
    the metadata, the documents and the final check over the whole bundle. Names the
    redactor learns later are caught there as always (the final check looks for every
    original it holds and scrubs a flagged file again from staging).
    """

    def __init__(self, staging: Path, out_dir: Path, *, redactor: Redactor,
                 exclude: Iterable[str] = frozenset()) -> None:
        self._busy = 0.0  # seconds spent scrubbing early: part of the build's time
        self.staging, self.out_dir = Path(staging), Path(out_dir)
        self.redactor = redactor
        self.exclude = set(exclude)
        self.raw_root = self.out_dir / RAW_DIR
        self._early: dict[str, BundleEntry] = {}  # staged path -> its entry, scrubbed
        self._seen: set[str] = set()
        self._taken: set[str] = set()

    def scrub_early(self, result: CollectorResult) -> None:
        """Scrub the files of one finished collector now (its collector must have returned: its files are final).

        Nothing is done when categories are excluded (which collectors an excluded
        name covers is known only from the whole report) or when the bundle
        directory is not a new one (:meth:`finish` then refuses it).
        """
        if self.exclude or not self._fresh_out_dir():
            return
        started = time.monotonic()
        for entry in entries_for(result.items, self.staging, set(), self._seen):
            if entry.staged is None or not entry.listed:
                continue
            redacted, _ = self.redactor.redact_text(entry.staged_relpath)
            entry.path = unique_path(safe_bundle_path(redacted), self._taken)
            scrub_entry(entry, self.redactor, self.raw_root)
            self._early[entry.staged_relpath] = entry
            if entry.bundled:  # the final check may read it now too: it reads every file again at the end
                self.redactor.check_early(self.raw_root.joinpath(*entry.path.split("/")),
                                          unchanged_from=None if entry.counts else entry.staged)
        self._busy += time.monotonic() - started

    def _fresh_out_dir(self) -> bool:
        if self._early:
            return True
        if not self.staging.is_dir():
            return False
        real_staging, real_out = self.staging.resolve(), self.out_dir.resolve()
        if real_out == real_staging or real_staging in real_out.parents or real_out in real_staging.parents:
            return False
        return not self.out_dir.exists() or (self.out_dir.is_dir() and not any(self.out_dir.iterdir()))

    def finish(self, report: CollectionReport, *, extra: Mapping[str, Any] | None = None) -> BundleResult:
        """Bundle the whole collection (see :func:`build_bundle`); files scrubbed early are not scrubbed again."""
        started = time.monotonic() - self._busy
        created_at = datetime.now(timezone.utc).replace(microsecond=0)
        staging, out_dir, redactor, exclude = self.staging, self.out_dir, self.redactor, self.exclude
        _check_arguments(report, staging, out_dir, exclude, extra, scrubbed_early=bool(self._early))
        # Collectors may be excluded by name too; from here on, exclusion is by category.
        exclude = {r.category for r in report.results if r.name in exclude or r.category in exclude} | (
            exclude - {r.name for r in report.results})
        raw_root = self.raw_root
        raw_root.mkdir(parents=True, exist_ok=True)

        entries = listed_entries(report, staging, exclude) + unlisted_entries(report, staging, exclude)
        done: set[int] = set()
        for index, entry in enumerate(entries):
            early = self._early.pop(entry.staged_relpath, None) if entry.staged is not None and entry.listed else None
            if early is not None:
                entries[index] = early
                done.add(index)
        for early in self._early.values():  # scrubbed, but the report does not keep it: never bundled
            drop_entry(early, raw_root, "not in the final collection report")
        self._early.clear()
        assign_paths(entries, redactor, raw_root)
        for index, entry in enumerate(entries):
            if index not in done:
                scrub_entry(entry, redactor, raw_root)
        # Metadata after the files. A name the redactor learns in it must go from the fields redacted before
        # it too: then the metadata is redacted once more, with the map that knows the name. A pass that learns
        # nothing needs no second one: with the same map the same text is redacted the same way.
        learned = redactor.pseudonyms.version
        metadata_counts: Counter[str] = Counter()
        metadata = redact_metadata(report, exclude, extra, redactor, metadata_counts)
        if redactor.pseudonyms.version != learned:
            metadata_counts = Counter()
            metadata = redact_metadata(report, exclude, extra, redactor, metadata_counts)
        assign_paths(entries, redactor, raw_root)
        clean_report = with_bundle_paths(metadata.report, entries)
        answers = metadata.extra.get("answers") if isinstance(metadata.extra, Mapping) else None
        summary = build_summary(clean_report, excluded=exclude, answers=answers)
        written = verify_and_write(
            entries, redactor, out_dir, raw_root,
            lambda: make_manifest(report, clean_report, entries, exclude, metadata.extra, metadata.hostname, created_at,
                                  metadata_counts, time.monotonic() - started),
            summary, clean_report,
        )
        return BundleResult(out_dir, written.manifest, written.summary, preview(entries))


def _check_arguments(report: CollectionReport, staging: Path, out_dir: Path, exclude: set[str],
                     extra: Mapping[str, Any] | None, *, scrubbed_early: bool = False) -> None:
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
    if not scrubbed_early and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInputError(f"the bundle directory {out_dir} is not empty", hint="use a new, empty directory")
    if extra is not None:
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the extra bundle information is not plain JSON data: {exc}") from None


AGENT_CACHE.save()  # the bundle's patterns, for the next start (see agent.regexes)
