"""Untrusted text made safe: names from a PC or a server turned into one harmless path
component, and strings made printable before they reach a terminal.

Everything a PC sends (its hostname, a ticket title, a note) and everything a server
answers is chosen by someone else. A name never becomes a path on this machine
without :func:`safe_component` and :func:`contained`; a string never reaches a
terminal without :func:`printable`. Only the standard library and
:mod:`protocol.errors` are used, so the agent, the CLI and the server share it.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path

from protocol.errors import InvalidInputError

#: A component longer than this many UTF-8 bytes is cut; file systems stop at 255.
DEFAULT_MAX_BYTES = 120
# The smallest limit a caller may ask for: a Windows device name and its "_" must fit.
_MIN_BYTES = 16

# ASCII a component may keep as is; any other ASCII character becomes "_".
_ASCII_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+@=,")
# Beyond ASCII, letters, combining marks and digits are kept (a hostname such as
# "пк-бухгалтерия" stays readable); symbols and punctuation, which include look-alike
# slashes and dots, are replaced.
_KEPT_CATEGORIES = ("L", "M", "N")
# Device names Windows opens instead of a file, whatever the extension (COM¹ too).
_WINDOWS_DEVICE = re.compile(r"^(con|prn|aux|nul|conin\$|conout\$|clock\$|(com|lpt)[0-9¹²³])$", re.IGNORECASE)
# Stripped from the start: hidden files, option-like names, home-directory shorthand.
_LEADING = "._-~+=@,"
# Stripped from the end: Windows drops trailing dots and spaces, so "a." would be "a".
_TRAILING = ". "

# Joiners shape Arabic, Indic and emoji text: visible output needs them, and alone they
# move nothing on the screen.
_JOINERS = frozenset("\u200c\u200d")


def safe_component(name: object, *, fallback: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Return ``name`` as ONE safe path component, or ``fallback`` if nothing safe is left.

    Separators, drive and stream colons, controls, NUL, format and bidi characters
    and other punctuation become ``_``; ``..`` runs become ``_``; leading dots,
    dashes and tildes and trailing dots and spaces go; Windows device names (CON,
    NUL, COM1…) get a ``_``; the result is cut to ``max_bytes`` UTF-8 bytes.
    Letters of any script stay. ``fallback`` must itself be safe (ValueError if not):
    it is chosen by the caller, never by the sender.
    """
    if max_bytes < _MIN_BYTES:
        raise ValueError(f"max_bytes must be at least {_MIN_BYTES}")
    cleaned = _clean_component(str(name), max_bytes)
    if cleaned:
        return cleaned
    if _clean_component(fallback, max_bytes) != fallback:
        raise ValueError(f"the fallback {fallback!r} is not a safe path component")
    return fallback


def _clean_component(name: str, max_bytes: int) -> str:
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch if _kept(ch) else "_" for ch in text)
    text = re.sub(r"\.{2,}", "_", text)
    text = re.sub(r"_{2,}", "_", text)
    text = text.lstrip(_LEADING).rstrip(_TRAILING)
    text = _cut(text, max_bytes)
    stem, dot, rest = text.partition(".")
    if _WINDOWS_DEVICE.match(stem):
        text = _cut(f"{stem}_{dot}{rest}", max_bytes)  # the stem is short: the cut only shortens the rest
    return text


def _cut(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes on a character boundary, then drop trailing dots and spaces."""
    if len(text.encode("utf-8")) > max_bytes:
        text = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    return text.rstrip(_TRAILING)


def _kept(ch: str) -> bool:
    if ch.isascii():
        return ch in _ASCII_KEPT
    return unicodedata.category(ch).startswith(_KEPT_CATEGORIES)


def contained(parent: Path | str, child: Path | str) -> Path:
    """Return ``child`` resolved, after checking it lies strictly inside ``parent``.

    ``child`` may be relative to ``parent``. Raise InvalidInputError if it leaves
    ``parent`` (``..``, an absolute path, a link pointing elsewhere), if it is
    ``parent`` itself, or if any part of it below ``parent`` that already exists
    is a symbolic link or a Windows junction: Helpline never writes through one.
    """
    parent, child = Path(parent), Path(child)
    if not child.is_absolute():
        child = parent / child
    try:
        relative = child.relative_to(parent)
    except ValueError:
        raise InvalidInputError(f"{printable(child)} is not inside {printable(parent)}") from None
    if not relative.parts or any(part in ("", ".", "..") for part in relative.parts):
        raise InvalidInputError(f"{printable(child)} is not a place inside {printable(parent)}")
    step = parent
    for part in relative.parts:
        step = step / part
        if _is_link(step):
            raise InvalidInputError(f"{printable(step)} is a link; Helpline never writes through one",
                                    hint="remove it or choose another folder")
    base, resolved = parent.resolve(), child.resolve()
    if resolved == base or base not in resolved.parents:
        raise InvalidInputError(f"{printable(child)} resolves outside {printable(parent)}")
    return resolved


def _is_link(path: Path) -> bool:
    """True if ``path`` exists and is a symbolic link or a Windows reparse point (junction)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: treat as unsafe
    reparse = getattr(info, "st_file_attributes", 0) & getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0)
    return stat.S_ISLNK(info.st_mode) or bool(reparse)


def printable(text: object, *, multiline: bool = True) -> str:
    """Return ``text`` with everything a terminal would act on shown as a visible escape.

    C0 and C1 controls, ESC, DEL, bidi overrides and isolates, zero-width and
    other format characters, line/paragraph separators and lone surrogates become
    ``\\x1b``, ``\\u202e``-style escapes, so no colour, cursor move, screen clear,
    window title or hyperlink can come from untrusted text. Newline and tab stay
    when ``multiline`` is true (they only break lines), else they are escaped too.
    """
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(ch, multiline) for ch in text)


def _escape(ch: str, multiline: bool) -> str:
    if ch in "\n\t":
        return ch if multiline else ("\\n" if ch == "\n" else "\\t")
    if not is_control(ch):
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def is_control(ch: str) -> bool:
    """True if a terminal may act on the character ``ch`` or it hides or reorders text.

    C0 and C1 controls (newline and tab included), DEL, format characters such as
    bidi overrides and zero-width spaces (not the joiners that shape scripts and
    emoji), line and paragraph separators, and lone surrogates.
    """
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    if code < 0x7F or ch in _JOINERS:
        return False
    return unicodedata.category(ch) in ("Cf", "Cs", "Zl", "Zp")


#: Characters of a refused value an error message quotes back.
SHOWN_CHARS = 40


def shown(value: object, *, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error message may quote it: on one line, printable, cut to ``limit`` characters, in quotes.

    Refusals name what they refused without echoing raw input: no control
    character, no new line and no megabyte of text goes back to the sender or
    into a log.
    """
    text = str(value)
    cut = text if len(text) <= limit else text[:limit] + "…"
    return f"'{printable(cut, multiline=False)}'"
