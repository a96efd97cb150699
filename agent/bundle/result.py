"""A finished bundle as the one who asked for it sees it: where it is, its documents and its preview.

Light to import (no collector, redactor or page code): a share's command reads
the bundle a gathering process made through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.bundle import MANIFEST_NAME

from .preview import CategoryPreview


@dataclass
class BundleResult:
    """A finished bundle directory with its manifest and summary (as written) and per-category preview."""

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

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (:meth:`from_dict` reads it back)."""
        return {"out_dir": str(self.out_dir), "manifest": self.manifest, "summary": self.summary,
                "preview": [p.to_dict() for p in self.preview]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleResult:
        return cls(Path(data["out_dir"]), data["manifest"], data["summary"],
                   [CategoryPreview(**p) for p in data["preview"]])
