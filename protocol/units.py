"""How sizes read wherever Helpline shows them (CLI tables, the ticket timeline): one formatter, so a
bundle is never "0.0 MB" in one place and "43.7 KB" in another."""

from __future__ import annotations


def human_size(n: float) -> str:
    """Say a size in decimal units: ``812 B``, ``37.6 KB``, ``1.4 MB``, ``2.1 GB``."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
