"""Checks on the values that reach restic's argv, so a bad one fails here in one clear line, not inside restic.

A value starting with ``-`` would be read as an option, a comma splits a tag
list, and a relative path would make ``--path`` filters and restores miss.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from collections.abc import Iterable
from pathlib import PurePath

from protocol.errors import InvalidInputError

#: The tag on every snapshot Helpline makes; forget and listings never touch others.
HELPLINE_TAG = "helpline"

_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
_LOCK_ID = re.compile(r"^[0-9a-f]{64}$")
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def snapshot_ref(value: str) -> str:
    """Return ``value`` if it names a snapshot: a (short) hexadecimal id or ``latest``."""
    if value == "latest" or _SNAPSHOT_ID.match(value):
        return value
    raise InvalidInputError(f"not a snapshot id: {value!r}", hint="use a snapshot id from the list, or 'latest'")


def lock_id(value: str) -> str:
    """Return ``value`` if it is a full lock id as ``restic list locks`` prints it."""
    if _LOCK_ID.match(value):
        return value
    raise InvalidInputError(f"not a restic lock id: {value!r}")


def word(value: str, what: str) -> str:
    """Return ``value`` if it is one safe word for restic (a host name or a tag): no spaces, commas or leading '-'."""
    if _WORD.match(value):
        return value
    raise InvalidInputError(f"not a valid {what} for restic: {value!r}",
                            hint="use letters, digits and . _ : @ - only, starting with a letter or digit")


def tags(values: Iterable[str]) -> tuple[str, ...]:
    """Return the Helpline tag followed by the other ``values``, each checked, without repeats."""
    out = [HELPLINE_TAG]
    for value in values:
        if word(value, "tag") not in out:
            out.append(value)
    return tuple(out)


def absolute_path(value: str | PurePath, what: str = "path") -> str:
    """Return ``value`` as a string if it is absolute (POSIX or Windows); restic filters and restores need that."""
    text = str(value)
    if not text or "\0" in text:
        raise InvalidInputError(f"not a valid {what}: {text!r}")
    if posixpath.isabs(text) or (ntpath.isabs(text) and ntpath.splitdrive(text)[0]):
        return text
    raise InvalidInputError(f"the {what} must be absolute: {text!r}")


def pattern(value: str | PurePath, what: str = "pattern") -> str:
    """Return ``value`` if it can be an include or exclude pattern (not empty, no NUL)."""
    text = str(value)
    if not text or "\0" in text or "\n" in text:
        raise InvalidInputError(f"not a valid {what}: {text!r}")
    return text
