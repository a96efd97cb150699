"""What each category contributes to the bundle, for the "this is what will be sent" screen."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the preview module stays light: a share's command reads previews without the bundling code
    from .entries import BundleEntry


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


def preview(entries: list[BundleEntry]) -> list[CategoryPreview]:
    """Return one preview per category, in the order the categories first appear among ``entries``."""
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
        elif entry.left_out:
            dropped[entry.category] += 1
    return [CategoryPreview(c, files[c], size[c], redactions[c], dropped[c]) for c in order]
