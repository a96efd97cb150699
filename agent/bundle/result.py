"""What a finished bundle is (:class:`BundleResult`, :class:`CategoryPreview`): data only.

Apart from the code that builds a bundle, so that what a share shows of a bundle
built in another process (:mod:`agent.bundle_worker`) loads without the redactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.bundle import MANIFEST_NAME


@dataclass(frozen=True)
class CategoryPreview:
    """One category's share of the bundle: files, their size after redaction, replacements, files left out."""

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
