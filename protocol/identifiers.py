"""Short ids, as git and gh show them: the start of a UUID, long enough to be unique among its neighbours.

Tables show :func:`short_ids`; the server accepts any unique start of at least
:data:`MIN_PREFIX` characters back (server/identifiers.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MIN_PREFIX = 4  # fewer characters match too much to be worth a lookup
SHORT_ID = 8  # what tables show, longer where two ids share their first 8 characters

_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{%d,35}" % (MIN_PREFIX - 1))


def id_prefix(reference: str) -> str | None:
    """``reference`` in lower case if it can be the start of a UUID (4 to 36 hex digits and dashes), else None."""
    text = reference.strip().lower()
    return text if _PREFIX.fullmatch(text) else None


def short_ids(ids: Iterable[str], *, length: int = SHORT_ID) -> dict[str, str]:
    """Each id cut to the shortest start of at least ``length`` characters that no other of ``ids`` shares
    and that is not digits alone (which name a ticket where both are accepted)."""
    unique = sorted(set(ids))
    shown: dict[str, str] = {}
    for i, full in enumerate(unique):
        need = length
        for other in (unique[i - 1] if i else None, unique[i + 1] if i + 1 < len(unique) else None):
            if other is not None:
                common = 0
                while common < min(len(full), len(other)) and full[common] == other[common]:
                    common += 1
                need = max(need, common + 1)
        while need < len(full) and full[:need].isdigit():
            need += 1  # digits alone would be read back as a ticket number
        shown[full] = full[:need]
    return shown


def short_id(full: str) -> str:
    """One id cut to :data:`SHORT_ID` characters, or more if those are digits alone (see :func:`short_ids`)."""
    return short_ids([full])[full]


def describe_candidates(candidates: Sequence[tuple[str, str]], shown: int) -> str:
    """``1a2b3c4d (laptop-7), 1a2b9f00 (desk-2) and 3 more``: what an ambiguous reference matched, on one line."""
    ids = short_ids([c[0] for c in candidates]) if candidates else {}
    listed = ", ".join(f"{ids.get(c, c)} ({label})" for c, label in candidates[:shown])
    rest = len(candidates) - shown
    return listed + (f" and {rest} more" if rest > 0 else "")
