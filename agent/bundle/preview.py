"""What each category contributes to the bundle, for the "this is what will be sent" screen."""

from __future__ import annotations

from collections import Counter

from .entries import BundleEntry
from .result import CategoryPreview


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
