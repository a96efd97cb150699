"""What every blob store offers (:class:`BlobStore`) and the checks and streaming they share."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from protocol.errors import DamagedError, InvalidInputError, NotFoundError, UnavailableError
from server.blobs.keys import validate_key

MiB = 1024 * 1024
#: read_range() returns bytes in memory; larger spans are read with open().
MAX_RANGE_LENGTH = 64 * MiB
CHUNK_SIZE = 1 * MiB


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows about one blob; ``sha256`` is lowercase hex, None if unknown."""

    key: str
    size: int
    sha256: str | None
    modified: datetime


def check_size_hint(size_hint: int | None) -> None:
    if size_hint is not None and (not isinstance(size_hint, int) or size_hint < 0):
        raise InvalidInputError(f"size hint must be a non-negative integer, not {size_hint!r}")


def check_digest(key: str, expected: str | None, actual: str) -> None:
    """Raise DamagedError if ``expected`` is given and is not ``actual``."""
    if expected is not None and expected != actual:
        raise DamagedError(f"the bytes for blob {key!r} do not hash to the expected SHA-256; nothing was stored")


def check_range(start: int, length: int) -> None:
    if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length < 0:
        raise InvalidInputError(f"invalid byte range: start {start!r}, length {length!r}")
    if length > MAX_RANGE_LENGTH:
        raise InvalidInputError(
            f"byte range of {length} bytes is larger than {MAX_RANGE_LENGTH}",
            hint="stream large spans with open() instead",
        )


def chunks_of(data: BinaryIO | bytes) -> Iterator[bytes | memoryview]:
    """Yield ``data`` (bytes-like or a binary file object) in chunks of at most CHUNK_SIZE."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for offset in range(0, len(view), CHUNK_SIZE):
            yield view[offset : offset + CHUNK_SIZE]
        return
    read = getattr(data, "read", None)
    if read is None:
        raise TypeError(f"blob data must be bytes or a binary file object, not {type(data).__name__}")
    while True:
        chunk = read(CHUNK_SIZE)
        if chunk is None:
            raise ValueError("blob data stream is non-blocking and has no data ready")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError("blob data stream returned text; open it in binary mode")
        if not chunk:
            return
        yield chunk


class BlobStore(abc.ABC):
    """Named, immutable-on-write byte blobs with streaming reads and writes.

    ``put`` replaces a blob atomically; ``delete`` of a missing key does nothing;
    reads of a missing key raise NotFoundError; invalid keys raise InvalidInputError.
    """

    @abc.abstractmethod
    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None,
            expected_sha256: str | None = None) -> BlobInfo:
        """Store ``data`` (bytes or a binary stream read to its end) under ``key`` and return its info.

        ``size_hint`` is the expected size if known; a store may refuse early when
        it cannot hold that much, and never trusts it as the real size. With
        ``expected_sha256`` the blob is committed only if its bytes hash to it;
        otherwise DamagedError is raised and what was stored before stays (the
        store hashes what it writes anyway, so the check costs no second pass).
        """

    def put_file(self, key: str, path: str | os.PathLike[str]) -> BlobInfo:
        """Store the file at ``path`` under ``key``; raise NotFoundError if it does not exist."""
        validate_key(key)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFoundError(f"file to store not found: {os.fspath(path)}") from None
        except OSError as exc:
            raise UnavailableError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
        with source:
            return self.put(key, source, size_hint=os.fstat(source.fileno()).st_size)

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Return a binary file object streaming the blob; the caller closes it."""

    def open_range(self, key: str, start: int, *, length: int | None = None) -> BinaryIO:
        """Return a binary file object streaming the blob from offset ``start`` to its end; the caller closes it.

        Unlike :meth:`read_range` nothing is held in memory, whatever the span. A
        ``length`` says how much of it the caller means to read: a store may fetch
        just that, or start fetching it at once (the stream may end after it).
        This default skips ``start`` bytes of :meth:`open`; stores override it
        with a seek.
        """
        check_range(start, 0)
        stream = self.open(key)
        remaining = start
        try:
            while remaining > 0:
                skipped = stream.read(min(remaining, CHUNK_SIZE))
                if not skipped:
                    break
                remaining -= len(skipped)
        except BaseException:
            stream.close()
            raise
        return stream

    @abc.abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Return up to ``length`` bytes from offset ``start``; fewer (or none) past the end."""

    @abc.abstractmethod
    def stat(self, key: str) -> BlobInfo:
        """Return size, sha256 (if known) and modification time of the blob."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether a blob is stored under ``key``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob if it exists; deleting a missing key is not an error."""

    @abc.abstractmethod
    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in lexicographic order."""

    def free_bytes(self) -> int | None:
        """Bytes still free where the store writes, or None where that is not known (object storage)."""
        return None

    @abc.abstractmethod
    def check(self) -> None:
        """Readiness probe: return if the store can be written, else raise UnavailableError."""
