"""The diagnostics bundle as a protocol: the names of its members and the strict reading of its documents.

The agent writes a bundle directory (and packs it, see :mod:`protocol.archive`);
the server and the engineer's CLI read it back. Both sides spell the member
names through the constants here; readers parse ``manifest.json`` and
``summary.json`` strictly (:func:`load_document`) and validate the manifest
against its model (:mod:`protocol.manifest`): a document that arrives from a PC
is untrusted.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from protocol.errors import InvalidInputError

#: Version of the bundle layout and manifest written today.
BUNDLE_SCHEMA_VERSION = 1
#: The folder of the bundle that holds every collected file, redacted.
RAW_DIR = "raw"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
#: The documents at the top of every bundle, in the order they are written.
DOCUMENTS = (SUMMARY_NAME, REPORT_NAME, MANIFEST_NAME)
#: Members a bundle archive must hold at its top.
REQUIRED_MEMBERS = (MANIFEST_NAME, SUMMARY_NAME, REPORT_NAME)
#: Largest manifest and summary a reader accepts.
MANIFEST_MAX_BYTES = 16 << 20
SUMMARY_MAX_BYTES = 4 << 20
#: How deeply a manifest or summary may nest, and how many values it may hold; an agent's stay far below.
DOCUMENT_MAX_DEPTH = 32
DOCUMENT_MAX_VALUES = 500_000
#: The largest integer a document may hold (exact in every JSON reader, JavaScript's included).
DOCUMENT_MAX_INT = 2**53
#: What :func:`safe_document` puts where a stored document was too deep, too large or unreadable.
WITHHELD = "[withheld: not a valid document]"
#: The largest count of items or files a manifest may claim (they are stored in 32-bit columns).
MAX_COUNT = 2**31 - 1

#: What became of an item's file: redacted into raw/, refused, unreadable, or there was no file.
RedactionStatus = Literal["scrubbed", "dropped", "not_scrubbed", "no_file"]
#: Redaction status of an item that produced no file (not found, denied, skipped).
NO_FILE = "no_file"
#: Item status of a file found in staging that the collection report does not list.
UNLISTED = "unlisted"
#: Collector status of a category the user left out.
EXCLUDED = "excluded"
#: ``verification.report_html`` when the full page was written.
FULL_REPORT = "full"


_MAX_PROBLEM_PATH = 120


def raw_member(path: str) -> str:
    """Return the bundle member name of the raw file at bundle path ``path`` (``raw/<path>``)."""
    return f"{RAW_DIR}/{path}"


def parse_summary(data: bytes | str, *, where: str = SUMMARY_NAME) -> dict[str, Any]:
    """Return ``summary.json``'s object; raise InvalidInputError if it is not a strict JSON object (:func:`load_document`)."""
    summary = load_document(data, where=where)
    if not isinstance(summary, dict):
        raise InvalidInputError(f"{where} is not a JSON object.", hint="Share the diagnostics again.")
    return summary


class _Refused(ValueError):
    """A value the JSON reader met that a document may not hold (the message says which)."""


def _bounded_int(text: str) -> int:
    value = int(text) if len(text) <= 20 else DOCUMENT_MAX_INT + 1  # never convert a huge number just to refuse it
    if abs(value) > DOCUMENT_MAX_INT:
        raise _Refused(f"holds a number larger than {DOCUMENT_MAX_INT}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("holds a number too large to represent")
    return value


def _no_constant(text: str) -> Any:
    raise _Refused(f"holds {text}, which is not JSON")


def load_document(data: bytes | str, *, where: str) -> Any:
    """Parse an untrusted JSON document (a bundle's manifest or summary) strictly and return it.

    Bytes must be UTF-8 (no other encoding is guessed). Raise InvalidInputError
    naming ``where`` if the text is not JSON, holds NaN or Infinity, a number out
    of range, a NUL character or a lone surrogate, nests deeper than
    :data:`DOCUMENT_MAX_DEPTH` or holds more than :data:`DOCUMENT_MAX_VALUES` values.
    """
    hint = "Share the diagnostics again with a current Helpline agent."
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{where} is not UTF-8 text.", hint=hint) from None
    try:
        value = json.loads(data, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except _Refused as exc:
        raise InvalidInputError(f"{where} {exc}.", hint=hint) from None
    except RecursionError:
        raise InvalidInputError(f"{where} nests deeper than {DOCUMENT_MAX_DEPTH} levels.", hint=hint) from None
    except ValueError:
        raise InvalidInputError(f"{where} is not valid JSON.", hint=hint) from None
    check_document(value, where=where)
    return value


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def check_document(value: Any, *, where: str) -> None:
    """Raise InvalidInputError naming ``where`` if parsed JSON ``value`` is not safe to store and show.

    Every string (keys too) must be free of NUL characters and lone surrogates,
    nesting at most :data:`DOCUMENT_MAX_DEPTH` levels, at most
    :data:`DOCUMENT_MAX_VALUES` values, numbers finite and within
    ±:data:`DOCUMENT_MAX_INT`. The walk is iterative: no depth can exhaust the stack.
    """
    hint = "Share the diagnostics again with a current Helpline agent."
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > DOCUMENT_MAX_VALUES:
            raise InvalidInputError(f"{where} holds more than {DOCUMENT_MAX_VALUES} values.", hint=hint)
        if isinstance(item, dict):
            if depth > DOCUMENT_MAX_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than {DOCUMENT_MAX_DEPTH} levels.", hint=hint)
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{where} has a key that is not text.", hint=hint)
                _check_text(key, where, hint)
                stack.append((child, depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth > DOCUMENT_MAX_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than {DOCUMENT_MAX_DEPTH} levels.", hint=hint)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item, where, hint)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > DOCUMENT_MAX_INT:
                raise InvalidInputError(f"{where} holds a number larger than {DOCUMENT_MAX_INT}.", hint=hint)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInputError(f"{where} holds a number too large to represent.", hint=hint)
        else:
            raise InvalidInputError(f"{where} holds a value that is not JSON.", hint=hint)


def _check_text(text: str, where: str, hint: str) -> None:
    found = _BAD_TEXT.search(text)
    if found is None:
        return
    what = "a NUL character" if found.group() == "\x00" else "a lone surrogate (text that is not Unicode)"
    raise InvalidInputError(f"{where} holds {what}.", hint=hint)


def _clean_text(text: str) -> str:
    return _BAD_TEXT.sub("\ufffd", text)


def safe_document(value: Any) -> Any:
    """Return a copy of JSON data ``value`` that any JSON writer can render, whatever it holds.

    For data stored before it was checked on arrival: NUL characters and lone
    surrogates become U+FFFD, non-finite or out-of-range numbers become null,
    anything nested deeper than :data:`DOCUMENT_MAX_DEPTH` or past
    :data:`DOCUMENT_MAX_VALUES` values becomes :data:`WITHHELD`. Iterative, so it
    never exhausts the stack.
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, int, Any, Any]] = [(value, 1, root, 0)]
    seen = 0
    while stack:
        item, depth, target, slot = stack.pop()
        seen += 1
        if seen > DOCUMENT_MAX_VALUES:
            target[slot] = WITHHELD
        elif isinstance(item, dict):
            if depth > DOCUMENT_MAX_DEPTH:
                target[slot] = WITHHELD
                continue
            copy: dict[str, Any] = {}
            target[slot] = copy
            for key, child in item.items():
                name = _clean_text(key if isinstance(key, str) else str(key))
                copy[name] = None
                stack.append((child, depth + 1, copy, name))
        elif isinstance(item, (list, tuple)):
            if depth > DOCUMENT_MAX_DEPTH:
                target[slot] = WITHHELD
                continue
            items: list[Any] = [None] * len(item)
            target[slot] = items
            stack.extend((child, depth + 1, items, index) for index, child in enumerate(item))
        elif isinstance(item, str):
            target[slot] = _clean_text(item)
        elif isinstance(item, bool) or item is None:
            target[slot] = item
        elif isinstance(item, int):
            target[slot] = item if abs(item) <= DOCUMENT_MAX_INT else None
        elif isinstance(item, float):
            target[slot] = item if math.isfinite(item) else None
        else:
            target[slot] = None
    return root[0]


def read_stored_document(text: str | None) -> dict[str, Any]:
    """Return the JSON object stored as ``text``, made safe (:func:`safe_document`); never raises.

    A stored document that cannot be read at all (too deep for the JSON reader,
    damaged) comes back as ``{"withheld": WITHHELD}``.
    """
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (RecursionError, ValueError):
        return {"withheld": WITHHELD}
    value = safe_document(value)
    return value if isinstance(value, dict) else {"withheld": WITHHELD}
