"""Blob keys: the one spelling every store accepts, and the folders the server files blobs under.

A key is a relative POSIX path of ``[A-Za-z0-9._-]`` segments joined by ``/``;
each kind of blob lives under its own top folder (:data:`FOLDERS`), so a store
can be listed, swept or moved one kind at a time.
"""

from __future__ import annotations

import re

from protocol.errors import InvalidInputError

MAX_KEY_LENGTH = 512
#: Filesystems refuse names over 255 bytes; the local store adds up to 29 characters.
MAX_SEGMENT_LENGTH = 200

SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_KEY_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9._-]+/)*[A-Za-z0-9._-]*")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DOT_SEGMENTS = frozenset({".", ".."})
KEY_HINT = (
    "use letters, digits, '.', '_' and '-' in segments of at most 200 characters"
    " separated by '/', at most 512 characters in all"
)




def quoted(value: str) -> str:
    """Return ``value`` quoted for an error message, shortened if long."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid blob key; raise InvalidInputError otherwise.

    A key is a relative POSIX path of ``[A-Za-z0-9._-]`` segments joined by ``/``:
    no leading ``/``, no empty, ``.`` or ``..`` segment, segments of at most 200
    characters (so every store can hold them as file names), 512 characters in all.
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"blob key must be a string, not {type(key).__name__}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(f"blob key {quoted(key)} is {len(key)} characters long", hint=KEY_HINT)
    if not _KEY_RE.fullmatch(key) or not all(good_segment(s) for s in key.split("/")):
        raise InvalidInputError(f"invalid blob key {quoted(key)}", hint=KEY_HINT)
    return key


def good_segment(segment: str) -> bool:
    """Whether a segment already matched by the key pattern is neither a dot segment nor too long."""
    return segment not in _DOT_SEGMENTS and len(segment) <= MAX_SEGMENT_LENGTH


def is_key(text: str) -> bool:
    try:
        validate_key(text)
    except InvalidInputError:
        return False
    return True


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start a key (``""``, ``"a/"``, ``"a/b"``); else raise InvalidInputError.

    Every complete segment (before the last ``/``) must be a valid key segment; the
    text after the last ``/`` is matched as a plain string prefix of a name.
    """
    if not isinstance(prefix, str):
        raise InvalidInputError(f"blob key prefix must be a string, not {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_LENGTH or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidInputError(f"invalid blob key prefix {quoted(prefix)}", hint=KEY_HINT)
    if not all(good_segment(s) for s in prefix.split("/")[:-1]):
        raise InvalidInputError(f"invalid blob key prefix {quoted(prefix)}", hint=KEY_HINT)
    return prefix


# Top folders, one per kind of blob. Keys below them are made by the module that owns the kind.
BUNDLES = "bundles"  # finished diagnostics bundles, per ticket
UPLOADS = "uploads"  # chunks of uploads under way
RECORDINGS = "recordings"  # session recordings
SNAPSHOTS = "snapshots"  # workstation snapshot data
ATTACHMENTS = "attachments"  # files users send with their replies, per ticket
FOLDERS = frozenset({BUNDLES, UPLOADS, RECORDINGS, SNAPSHOTS, ATTACHMENTS})


def key_under(folder: str, *segments: str) -> str:
    """Return the key ``folder/segment/...``; raise InvalidInputError for an unknown folder or a bad segment."""
    if folder not in FOLDERS:
        raise InvalidInputError(f"unknown blob folder {quoted(folder)}", hint="use one of " + ", ".join(sorted(FOLDERS)))
    return validate_key("/".join((folder, *segments)))
