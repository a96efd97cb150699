"""How sizes read wherever Helpline shows them (CLI tables, the ticket timeline): one formatter, so a
bundle is never "0.0 MB" in one place and "43.7 KB" in another; and one reading of the sizes people
write (an agent's [snapshots] settings, a group policy)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30,
               "ti": 2**40}


def parse_size(text: str) -> int:
    """``500M``, ``20G``, ``1.5TiB``, ``512 kB`` as a whole number of bytes; ValueError for anything else."""
    found = _SIZE.fullmatch(text)
    if not found:
        raise ValueError("must be a size like 500M, 20G or 1T")
    return int(float(found[1]) * _SIZE_UNITS[(found[2] or "").lower()])


def human_size(n: float) -> str:
    """Say a size in decimal units: ``812 B``, ``37.6 KB``, ``1.4 MB``, ``2.1 GB``."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
