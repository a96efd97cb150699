"""How a removed value looks in the output: ``[REDACTED:<detector>]``.

The token only contains letters, digits, ``-``, ``:`` and brackets, so no detector
can match it again (redaction is idempotent) and it never breaks a quoted string.
"""

from __future__ import annotations

from collections.abc import Callable
from agent.regexes import rx

# How a detector reports a replacement: called once per value, with the detector's name.
Hit = Callable[[str], None]

TOKEN_RE = rx(r"\[REDACTED:[a-z0-9-]+\]")
_ONLY_TOKENS = rx(r"[\s\"'`,;]*(?:\[REDACTED:[a-z0-9-]+\][\s\"'`,;]*)+")


def token(detector: str) -> str:
    """Return the replacement text for a value removed by ``detector``."""
    return f"[REDACTED:{detector}]"


def is_redacted(value: str) -> bool:
    """Return True if ``value`` is nothing but redaction tokens (so a later detector leaves it alone)."""
    return _ONLY_TOKENS.fullmatch(value) is not None
