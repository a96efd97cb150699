"""Small bundle archives for upload tests: valid ones, and hostile ones built by hand."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path


def write_archive(path: Path, members: list[tuple[str, bytes]] | None = None, *, payload: int = 0) -> Path:
    """Write a tar.gz bundle with manifest, summary and report, plus ``payload`` random bytes."""
    if members is None:
        members = [
            ("helpline-bundle/manifest.json", json.dumps({"schema_version": 1, "totals": {"files": 2}}).encode()),
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
