"""Read a collected file as text in bounded pieces, or refuse it; write scrubbed text atomically.

Text is UTF-8 (with or without BOM), UTF-16 with a BOM (what Windows tools write), or,
for a file that is not valid UTF-8, the Windows legacy code page cp1252 (what older
Windows programs and ANSI logs write): such a file is scrubbed and written back in
cp1252, not dropped. Anything else, a NUL byte anywhere, or a line longer than
:data:`MAX_LINE_CHARS` raises :class:`NotText`: such a file cannot be scrubbed
line by line in bounded memory, so it must be dropped, never passed through.
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_CHARS = 1 << 20
MAX_LINE_CHARS = 4 << 20
_SNIFF_BYTES = 8192
_VALIDATE_BYTES = 1 << 20
#: The code page a file that is not valid UTF-8 is read in (Western European Windows "ANSI").
LEGACY_CODEC = "cp1252"


class NotText(Exception):
    """The file is binary, in an unsupported encoding, or has a line too long to scrub safely."""


@dataclass(frozen=True)
class TextEncoding:
    """How a file's bytes become text: the codec and the byte-order mark to skip and write back."""

    codec: str
    bom: bytes = b""


def sniff(head: bytes) -> TextEncoding:
    """Return the encoding of a file starting with ``head``; raise NotText for binary data."""
    if head.startswith(codecs.BOM_UTF8):
        return TextEncoding("utf-8", codecs.BOM_UTF8)
    if head.startswith(codecs.BOM_UTF16_LE):
        return TextEncoding("utf-16-le", codecs.BOM_UTF16_LE)
    if head.startswith(codecs.BOM_UTF16_BE):
        return TextEncoding("utf-16-be", codecs.BOM_UTF16_BE)
    if b"\x00" in head:
        raise NotText("binary data (NUL bytes)")
    return TextEncoding("utf-8")


def _valid_utf8(raw: BinaryIO) -> bool:
    """Return True if the rest of ``raw`` decodes as UTF-8 (read in bounded pieces; the position is not restored)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        while True:
            data = raw.read(_VALIDATE_BYTES)
            if not data:
                decoder.decode(b"", final=True)
                return True
            decoder.decode(data)
    except UnicodeDecodeError:
        return False


def read_text_chunks(raw: BinaryIO, chunk_chars: int | None = None) -> tuple[TextEncoding, Iterator[str]]:
    """Return the encoding of the open binary file ``raw`` and an iterator of text pieces ending at line breaks.

    A file without a byte-order mark that is not valid UTF-8 is read as cp1252. Decoding is
    strict: an undecodable byte raises UnicodeDecodeError while iterating.
    """
    chunk_chars = chunk_chars or CHUNK_CHARS
    max_line = MAX_LINE_CHARS
    head = raw.read(_SNIFF_BYTES)
    encoding = sniff(head)
    raw.seek(len(encoding.bom))
    if encoding == TextEncoding("utf-8") and not _valid_utf8(raw):
        encoding = TextEncoding(LEGACY_CODEC)  # not UTF-8: a legacy Windows file (cp1252 fails strictly on its 5 holes)
    raw.seek(len(encoding.bom))

    def pieces() -> Iterator[str]:
        reader = io.TextIOWrapper(raw, encoding=encoding.codec, errors="strict", newline="")
        try:
            yield from _pieces(reader)
        finally:
            if not raw.closed:
                reader.detach()  # the caller owns (and closes) the binary file

    def _pieces(reader: io.TextIOWrapper) -> Iterator[str]:
        carry = ""
        first = True
        while True:
            data = reader.read(chunk_chars)
            if not data:
                break
            if "\x00" in data:
                raise NotText("binary data (NUL bytes)")
            data = carry + data
            # Cut after the last line break; a lone CR counts only if there is no LF (old Mac files).
            cut = data.rfind("\n") + 1 or data.rfind("\r") + 1
            if cut == 0:
                if len(data) > max_line:
                    raise NotText(f"a line is longer than {max_line} characters")
                carry = data
                continue
            if first and data.find("\n") == cut - 1 and len(data) <= max_line:
                # The first piece holds at least two lines: a scrubber must see what follows the first
                # line (an omission marker says the first line was cut short).
                carry = data
                continue
            first = False
            carry = data[cut:]
            yield data[:cut]
        if carry:
            yield carry

    return encoding, pieces()


def read_whole_text(path: Path) -> str:
    """Return the whole decoded text of a small file (for JSON checks), with the same rules as chunked reading."""
    with open(path, "rb") as raw:
        _, pieces = read_text_chunks(raw)
        return "".join(pieces)


@contextmanager
def atomic_text_writer(dst: Path, encoding: TextEncoding) -> Iterator[io.TextIOWrapper]:
    """Yield a text stream whose content replaces ``dst`` only if the block finishes without error.

    The partial file is private (0600) and removed on any failure, and so is an older ``dst``:
    after a failure no output exists at all.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(partial, flags, 0o600)
        with open(fd, "w", encoding=encoding.codec, errors="strict", newline="") as writer:
            writer.buffer.write(encoding.bom)
            yield writer
        os.replace(partial, dst)
    except BaseException:
        for leftover in (partial, dst):
            with suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
