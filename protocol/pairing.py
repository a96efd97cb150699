"""Pairing codes: short enough to read aloud over the phone, at least 40 bits.

A code is 8 characters of Crockford base32 (5 bits each), shown as ``ABCD-EFGH``.
Reading it back is typo-tolerant: case, spaces and dashes are ignored, and the
letters people confuse with digits (I, L -> 1; O -> 0) are mapped the Crockford way.
"""

from __future__ import annotations

import secrets

from protocol.errors import InvalidInputError
from protocol.untrusted import shown

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
CODE_BITS = CODE_LENGTH * 5

_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def new_pairing_code() -> str:
    """Return a fresh random code in display form (``ABCD-EFGH``)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return display(raw)


def normalize(code: str) -> str:
    """Return the canonical 8-character form of a code a person typed.

    Raise InvalidInputError if it cannot be a pairing code at all, so that a
    typo is caught here and never spends one of the user's rate-limited attempts.
    """
    cleaned = "".join(ch for ch in code.upper() if ch not in " -_.").translate(_CONFUSABLE)
    if len(cleaned) != CODE_LENGTH or any(ch not in ALPHABET for ch in cleaned):
        raise InvalidInputError(
            f"{shown(code)} is not a pairing code.",
            hint="A pairing code has 8 letters and digits, like 7KQ2-M9XD; ask your engineer to read it again.",
        )
    return cleaned


def display(code: str) -> str:
    """Return the canonical code split in two groups of four for reading aloud."""
    return f"{code[:4]}-{code[4:]}"
