"""Small bundle archives for upload tests: valid ones, and hostile ones built by hand."""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path

from protocol.bundle import BUNDLE_SCHEMA_VERSION
from protocol.manifest import CollectionTimes, Manifest, Totals, Verification

CREATED_AT = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)


def manifest_bytes(files: int = 2) -> bytes:
    """Return a valid ``manifest.json`` of a bundle with ``files`` raw files (their records left out)."""
    manifest = Manifest(
        schema_version=BUNDLE_SCHEMA_VERSION, created_at=CREATED_AT, helpline_version="0.1.0", platform="linux",
        hostname="test-pc",
        collection=CollectionTimes(started_at=CREATED_AT, finished_at=CREATED_AT, deadline=60.0, duration=1.0),
        build_seconds=0.5, collectors=[], excluded=[], items=[],
        totals=Totals(items=files, files=files, bytes=0, left_out=0, by_redaction_status={"scrubbed": files},
                      redactions=[], metadata_redactions=[]),
        verification=Verification(dropped=[]), extra=None,
    )
    return manifest.to_json().encode()


def write_archive(path: Path, members: list[tuple[str, bytes]] | None = None, *, payload: int = 0) -> Path:
    """Write a tar.gz bundle with manifest, summary and report, plus ``payload`` random bytes."""
    if members is None:
        members = [
            ("helpline-bundle/manifest.json", manifest_bytes(files=2)),
            ("helpline-bundle/summary.json", json.dumps({"os": {"name": "Test OS"}, "hostname": "test-pc"}).encode()),
            ("helpline-bundle/report.html", b"<!doctype html><title>report</title>"),
        ]
        if payload:
            members.append(("helpline-bundle/raw/random.bin", os.urandom(payload)))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
