"""Reading an untrusted bundle archive without unpacking it.

A bundle is a gzip-compressed tar whose members all sit under ``helpline-bundle/``
and are regular files or directories. :func:`inspect_archive` streams through the
whole archive once, refusing anything that could escape a directory or exhaust
the machine (absolute or ``..`` paths, links, devices, duplicates, too many
members, too many bytes, compression bombs, damaged data), and only then lets
callers read small members such as the manifest.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from protocol.status import InvalidInputError

TOP = "helpline-bundle"
REQUIRED = ("manifest.json", "summary.json", "report.html")


@dataclass(frozen=True)
class Limits:
    max_members: int = 20_000
    max_total_bytes: int = 2 << 30
    max_member_bytes: int = 512 << 20
    max_ratio: float = 200.0  # decompressed bytes per compressed byte, over the whole archive


@dataclass
class ArchiveListing:
    """What a validated archive holds: member names (relative to the top dir) and sizes."""

    path: Path
    members: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0

    def read_member(self, name: str, max_bytes: int) -> bytes:
        """Return the bytes of one regular member; refuse one over ``max_bytes``."""
        if name not in self.members:
            raise InvalidInputError(f"The bundle has no {name}.")
        if self.members[name] > max_bytes:
            raise InvalidInputError(f"The bundle's {name} is over {max_bytes} bytes.")
        with tarfile.open(self.path, "r:gz") as tar:
            member = tar.getmember(f"{TOP}/{name}")
            handle = tar.extractfile(member)
            assert handle is not None  # validated as a regular file
            return handle.read(max_bytes + 1)[:max_bytes]


def _member_name(raw: str) -> str:
    """Return a member's path below the top directory, or raise if it is unsafe."""
    if "\\" in raw or "\x00" in raw:
        raise InvalidInputError(f"The bundle holds a member with a forbidden character: {raw!r}.")
    path = PurePosixPath(raw)
    if path.is_absolute():
        raise InvalidInputError(f"The bundle holds an absolute path: {raw!r}.")
    parts = [p for p in path.parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputError(f"The bundle holds a path that climbs out: {raw!r}.")
    if not parts or parts[0] != TOP:
        raise InvalidInputError(f"The bundle holds a member outside {TOP}/: {raw!r}.")
    return "/".join(parts[1:])


class _CountingReader(io.RawIOBase):
    """Count the compressed bytes read from the file, for the compression-ratio check."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def inspect_archive(path: Path, limits: Limits = Limits()) -> ArchiveListing:
    """Validate an untrusted bundle archive by streaming through it; raise InvalidInputError if unsafe."""
    listing = ArchiveListing(Path(path))
    compressed_size = max(1, Path(path).stat().st_size)
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raise InvalidInputError("The bundle is not a gzip-compressed archive.")
            raw.seek(0)
            counter = _CountingReader(raw)
            with gzip.GzipFile(fileobj=io.BufferedReader(counter, 1 << 16)) as unzipped, \
                    tarfile.open(fileobj=unzipped, mode="r|") as tar:
                seen_dirs: set[str] = set()
                for count, member in enumerate(tar, start=1):
                    if count > limits.max_members:
                        raise InvalidInputError(f"The bundle has more than {limits.max_members} members.")
                    name = _member_name(member.name)
                    if member.isdir():
                        seen_dirs.add(name)
                        continue
                    if not member.isreg():
                        raise InvalidInputError(f"The bundle holds a link or special file: {member.name!r}.")
                    if name in listing.members or name in seen_dirs:
                        raise InvalidInputError(f"The bundle holds {member.name!r} twice.")
                    if member.size > limits.max_member_bytes:
                        raise InvalidInputError(f"The bundle's {name} is over {limits.max_member_bytes} bytes.")
                    listing.total_bytes += member.size
                    if listing.total_bytes > limits.max_total_bytes:
                        raise InvalidInputError(f"The bundle unpacks to more than {limits.max_total_bytes} bytes.")
                    handle = tar.extractfile(member)
                    assert handle is not None
                    while block := handle.read(1 << 20):  # read for real: headers can lie, data cannot
                        del block
                        if unzipped.tell() > limits.max_ratio * max(counter.count, 1) and unzipped.tell() > (1 << 20):
                            raise InvalidInputError("The bundle looks like a compression bomb.")
                    listing.members[name] = member.size
                if unzipped.tell() > limits.max_ratio * compressed_size and unzipped.tell() > (1 << 20):
                    raise InvalidInputError("The bundle looks like a compression bomb.")
    except InvalidInputError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidInputError(f"The bundle archive is damaged or not a tar.gz: {exc}.") from exc
    missing = [name for name in REQUIRED if name not in listing.members]
    if missing:
        raise InvalidInputError(f"The bundle lacks {', '.join(missing)}.")
    return listing
