"""Bundle archives: pack a bundle directory into a deterministic ``.tar.gz``, and read an
UNTRUSTED one safely — validate it without extracting, read small members, extract it
without ever writing outside the destination.

The reader does not use :mod:`tarfile`: tarfile reads pax and GNU long-name headers
whole into memory and follows whatever member types it finds, while this module
must refuse hostile input (traversal, links, devices, duplicates, bombs) in bounded
memory and time. It parses the ustar/pax/GNU headers itself and counts the bytes it
actually decompresses. It imports only the standard library, :mod:`protocol.bundle`,
:mod:`protocol.errors` and :mod:`protocol.untrusted`, so the server can share it without
pulling in the agent.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from protocol.bundle import MANIFEST_MAX_BYTES, MANIFEST_NAME, REQUIRED_MEMBERS
from protocol.errors import InvalidInputError, NotFoundError
from protocol.untrusted import contained, printable

#: Every member of a bundle archive lives under this one directory.
TOP_DIR = "helpline-bundle"

GIB = 1 << 30
MIB = 1 << 20
DEFAULT_MAX_MEMBERS = 20_000
DEFAULT_MAX_TOTAL_BYTES = 2 * GIB
DEFAULT_MAX_MEMBER_BYTES = 512 * MIB
DEFAULT_MAX_RATIO = 200

_BLOCK = 512
_CHUNK = 1 * MIB
#: Decompressed bytes allowed before the compression ratio is judged (headers compress very well).
_RATIO_GRACE = 4 * MIB
_MAX_PAX_BYTES = 64 * 1024
_MAX_NAME_CHARS = 4096
_MAX_COMPONENT_BYTES = 255
#: Zero bytes tolerated after the end-of-archive marker (tar pads to 10 KiB records; be generous).
_MAX_TRAILING_ZEROS = 1 * MIB
_GZIP_HEADER_MAX = 64 * 1024
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)

_REGULAR_TYPES = {b"0", b"\0"}
_REFUSED_TYPES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"6": "a FIFO", b"7": "a contiguous file", b"K": "a GNU long link name", b"S": "a sparse file",
    b"g": "a global pax header", b"V": "a volume label", b"M": "a multi-volume continuation",
}


# -- packing -------------------------------------------------------------------------


def pack(out_dir: Path, dest: Path) -> tuple[int, str]:
    """Write the bundle directory ``out_dir`` as a deterministic ``.tar.gz`` at ``dest``; return (size, sha256).

    Entries are sorted, under ``helpline-bundle/``, regular files and directories
    only, owned by 0:0 with modes 0644/0755 and the manifest's ``created_at`` as
    mtime (in the gzip header too), so the same bundle always packs to the same
    bytes. Files are streamed; memory stays bounded. ``dest`` appears atomically.
    Raise InvalidInputError if ``out_dir`` has no valid manifest or holds a link
    or special file.
    """
    out_dir, dest = Path(out_dir), Path(dest)
    mtime = _manifest_mtime(out_dir)
    entries = _pack_entries(out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as raw:
            sink = _HashingWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=mtime, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    tar.addfile(_tar_info(TOP_DIR, mtime, None))
                    for relpath, path, is_dir in entries:
                        name = f"{TOP_DIR}/{relpath}"
                        if is_dir:
                            tar.addfile(_tar_info(name, mtime, None))
                            continue
                        with open(path, "rb") as source:
                            size = os.fstat(source.fileno()).st_size
                            tar.addfile(_tar_info(name, mtime, size), source)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return sink.size, sink.sha256.hexdigest()


def _manifest_mtime(out_dir: Path) -> int:
    """Return the bundle's ``created_at`` as a POSIX timestamp; it fixes every mtime in the archive."""
    path = out_dir / MANIFEST_NAME
    try:
        with open(path, "rb") as handle:
            data = handle.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"{out_dir} has no {MANIFEST_NAME}", hint="build the bundle before packing it") from None
    try:
        created = datetime.fromisoformat(json.loads(data)["created_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path} has no valid created_at", hint="rebuild the bundle") from exc
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return max(0, int(created.timestamp()))


def _pack_entries(out_dir: Path) -> list[tuple[str, Path, bool]]:
    """Return (relpath, path, is_dir) for everything under ``out_dir``, sorted by path; refuse links and specials."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(out_dir, followlinks=False):
        here = Path(dirpath)
        for name in dirnames + filenames:
            path = here / name
            relpath = path.relative_to(out_dir).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise InvalidInputError(f"the bundle holds a symbolic link, {relpath}; links are never packed")
            if stat.S_ISDIR(mode):
                entries.append((relpath, path, True))
            elif stat.S_ISREG(mode):
                entries.append((relpath, path, False))
            else:
                raise InvalidInputError(f"the bundle holds a special file, {relpath}; only regular files are packed")
    # A directory sorts before its content: its path is a prefix of theirs.
    return sorted(entries, key=lambda entry: entry[0])


def _tar_info(name: str, mtime: int, size: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = size
    return info


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO):
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.target.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)


# -- reading untrusted archives ---------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How much an untrusted archive may hold before it is refused."""

    max_members: int = DEFAULT_MAX_MEMBERS
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    max_ratio: float = DEFAULT_MAX_RATIO


@dataclass(frozen=True)
class ArchiveMember:
    """One validated member: its name relative to ``helpline-bundle/`` (POSIX), size, and whether it is a directory."""

    name: str
    size: int
    is_dir: bool


@dataclass
class ArchiveListing:
    """What :func:`inspect_archive` found in a valid archive; read small members with :meth:`read_member`."""

    path: Path
    members: list[ArchiveMember]
    total_bytes: int  # sum of the member sizes
    compressed_bytes: int
    decompressed_bytes: int  # the whole tar stream, headers and padding included
    limits: Limits = field(default_factory=Limits)

    def names(self) -> list[str]:
        """Return the names of the regular files, in archive order."""
        return [member.name for member in self.members if not member.is_dir]

    def member(self, name: str) -> ArchiveMember:
        """Return the file member called ``name``; raise NotFoundError if there is none."""
        for member in self.members:
            if member.name == name and not member.is_dir:
                return member
        raise NotFoundError(f"the bundle archive has no {name}")

    def __contains__(self, name: object) -> bool:
        return any(member.name == name and not member.is_dir for member in self.members)

    def read_member(self, name: str, max_bytes: int) -> bytes:
        """Return the content of file member ``name`` (relative to the top directory), at most ``max_bytes``.

        The archive is streamed again (and validated again up to the member).
        Raise InvalidInputError if the member is larger than ``max_bytes``,
        NotFoundError if it is absent.
        """
        return self.read_members([name], max_bytes)[name]

    def read_members(self, names: Iterable[str], max_bytes: int) -> dict[str, bytes]:
        """Return several file members in one pass (see :meth:`read_member`); each is capped at ``max_bytes``."""
        wanted = set(names)
        for name in wanted:
            member = self.member(name)
            if member.size > max_bytes:
                raise InvalidInputError(f"{name} in the bundle archive is {member.size} bytes, "
                                        f"more than the {max_bytes} allowed")
        found: dict[str, bytes] = {}
        with _open_archive(self.path, self.limits) as reader:
            for member in reader.members():
                if member.name in wanted and not member.is_dir:
                    if member.size > max_bytes:
                        raise InvalidInputError(f"{member.name} in the bundle archive changed size while being read")
                    found[member.name] = b"".join(reader.data_chunks())
                    if len(found) == len(wanted):
                        break
        missing = wanted - set(found)
        if missing:
            raise InvalidInputError(f"the bundle archive changed while being read: {sorted(missing)[0]} is gone")
        return found


def inspect_archive(
    path: Path,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> ArchiveListing:
    """Validate an untrusted bundle archive without extracting anything and return its listing.

    The whole gzip stream is read (its CRC checked) in bounded memory. Raise
    InvalidInputError, with a one-line reason, for anything but a complete
    gzip-compressed tar of regular files and directories under
    ``helpline-bundle/`` with safe, unique names, within the member, size and
    compression-ratio limits, holding manifest.json, summary.json and report.html.
    """
    limits = Limits(max_members, max_total_bytes, max_member_bytes, max_ratio)
    path = Path(path)
    with _open_archive(path, limits) as reader:
        members = list(reader.members())
        reader.finish()
        listing = ArchiveListing(path, members, reader.declared_bytes, reader.compressed_bytes,
                                 reader.decompressed_bytes, limits)
    present = {member.name for member in members if not member.is_dir}
    for required in REQUIRED_MEMBERS:
        if required not in present:
            raise InvalidInputError(f"the bundle archive has no {TOP_DIR}/{required}")
    return listing


def safe_extract(path: Path, dest: Path, **limits: int | float) -> ArchiveListing:
    """Validate the archive at ``path`` (see :func:`inspect_archive`), then write its files under ``dest``.

    ``dest`` (created if absent, else it must be empty) receives the content of
    ``helpline-bundle/``. Only validated regular files and directories are
    written, each file created new (``O_EXCL``) and never through a link
    (``O_NOFOLLOW``, directory descriptors where the OS has them), and every
    member's path is checked on disk to lie inside ``dest`` once resolved, with
    no link on the way. If the archive changes between validation and
    extraction, or a link or entry appears where a new one must go, what was
    written is removed and InvalidInputError is raised.
    """
    listing = inspect_archive(path, **limits)
    dest = Path(dest)
    try:
        dest.mkdir(parents=True)
    except FileExistsError:
        if not dest.is_dir() or dest.is_symlink() or any(dest.iterdir()):
            raise InvalidInputError(f"{dest} already exists and is not an empty directory",
                                    hint="extract into a new directory") from None
    try:
        writer = _DirFdWriter(dest) if _HAVE_DIR_FD else _PathWriter(dest)
    except OSError as exc:  # swapped for a link since the check above
        raise _unsafe_write(dest, exc) from None
    expected = iter(listing.members)
    try:
        with _open_archive(Path(path), listing.limits) as reader:
            for member in reader.members():
                if next(expected, None) != member:
                    raise InvalidInputError("the bundle archive changed while it was being extracted")
                # Names were validated as text; this checks the disk: no link on the way, inside dest once resolved.
                contained(dest, dest.joinpath(*member.name.split("/")))
                try:
                    if member.is_dir:
                        writer.make_dir(member.name)
                    else:
                        writer.write_file(member.name, reader.data_chunks())
                except OSError as exc:
                    raise _unsafe_write(dest / member.name, exc) from None
            reader.finish()
        if next(expected, None) is not None:
            raise InvalidInputError("the bundle archive changed while it was being extracted")
    except BaseException:
        writer.remove_written()
        raise
    finally:
        writer.close()
    return listing


def _unsafe_write(path: Path, exc: OSError) -> Exception:
    """The error for a write refused by the disk: a link or an existing entry where a new one must go
    is a refusal (InvalidInputError); anything else (a full disk, permissions) stays an OSError."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) or exc.errno in (errno.ELOOP, errno.EMLINK):
        return InvalidInputError(f"{printable(path)} is a link or already exists; extraction stopped "
                                 "and what was written is removed", hint="extract into a new directory")
    return exc


# -- the streaming reader ----------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """Counts the compressed bytes the gzip decoder pulls from the file."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class _TarStream:
    """Walks the tar headers of a gzip stream, validating every member and counting every byte."""

    def __init__(self, raw: BinaryIO, limits: Limits):
        self.limits = limits
        self.counter = _CountingReader(raw)
        self.gz = gzip.GzipFile(fileobj=self.counter, mode="rb")
        self.decompressed_bytes = 0
        self.declared_bytes = 0
        self.member_count = 0
        self.headers = 0
        self.remaining = 0  # unread data bytes of the current member
        self.padding = 0
        self.ended = False
        self.seen: set[str] = set()
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    @property
    def compressed_bytes(self) -> int:
        return self.counter.count

    # reading ---------------------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        """Read up to ``size`` decompressed bytes, enforcing the total and ratio limits."""
        try:
            data = self.gz.read(size)
        except EOFError:
            raise InvalidInputError("the bundle archive is truncated (the gzip stream ends early)") from None
        except gzip.BadGzipFile as exc:
            raise InvalidInputError(f"the bundle archive is corrupt or not gzip: {exc}") from None
        except zlib.error as exc:
            raise InvalidInputError(f"the bundle archive is corrupt: {exc}") from None
        self.decompressed_bytes += len(data)
        limits = self.limits
        # Headers and padding come on top of the member data; allow for them, but no more.
        ceiling = limits.max_total_bytes + (limits.max_members + 4) * 2 * _BLOCK + _MAX_TRAILING_ZEROS
        if self.decompressed_bytes > ceiling:
            raise InvalidInputError(f"the bundle archive unpacks to more than {limits.max_total_bytes} bytes")
        if (self.decompressed_bytes > _RATIO_GRACE
                and self.decompressed_bytes > limits.max_ratio * max(1, self.counter.count)):
            raise InvalidInputError(f"the bundle archive expands more than {limits.max_ratio:g}:1 "
                                    "(a compression bomb?)")
        return data

    def _read_exact(self, size: int, what: str) -> bytes:
        parts, left = [], size
        while left:
            data = self._read(min(left, _CHUNK))
            if not data:
                raise InvalidInputError(f"the bundle archive is truncated (in {what})")
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def data_chunks(self) -> Iterator[bytes]:
        """Yield the current member's data in chunks of at most 1 MiB."""
        while self.remaining:
            data = self._read(min(self.remaining, _CHUNK))
            if not data:
                raise InvalidInputError("the bundle archive is truncated (in a member's data)")
            self.remaining -= len(data)
            yield data

    def _skip_data(self) -> None:
        for _ in self.data_chunks():
            pass
        if self.padding:
            self._read_exact(self.padding, "padding")
            self.padding = 0

    # headers ---------------------------------------------------------------------------

    def members(self) -> Iterator[ArchiveMember]:
        """Yield every member after validating it; the caller may read its data with :meth:`data_chunks`."""
        pax: dict[str, str] | None = None
        long_name: bytes | None = None
        while True:
            self._skip_data()
            if self.ended:
                return
            block = self._read(_BLOCK)
            if not block:
                raise InvalidInputError("the bundle archive is truncated (no end-of-archive marker)")
            if len(block) < _BLOCK:
                block += self._read_exact(_BLOCK - len(block), "a header")
            if block == bytes(_BLOCK):
                second = self._read_exact(_BLOCK, "the end-of-archive marker")
                if second != bytes(_BLOCK):
                    raise InvalidInputError("the bundle archive is corrupt (a lone zero block)")
                if pax is not None or long_name is not None:
                    raise InvalidInputError("the bundle archive is corrupt (an extended header without a member)")
                self.ended = True
                return
            self.headers += 1
            if self.headers > 3 * self.limits.max_members + 3:
                raise InvalidInputError(f"the bundle archive has more than {self.limits.max_members} members")
            _check_checksum(block)
            typeflag = block[156:157]
            size = _parse_number(block[124:136], "size")
            if typeflag in (b"x", b"L"):
                cap = _MAX_PAX_BYTES if typeflag == b"x" else _MAX_NAME_CHARS
                if size > cap:
                    raise InvalidInputError(f"the bundle archive has an extended header of {size} bytes")
                if (typeflag == b"x" and pax is not None) or (typeflag == b"L" and long_name is not None):
                    raise InvalidInputError("the bundle archive has repeated extended headers")
                data = self._read_exact(size, "an extended header")
                self._read_exact(-size % _BLOCK, "padding")
                if typeflag == b"x":
                    pax = _parse_pax(data)
                else:
                    long_name = data.split(b"\0", 1)[0]
                continue
            if typeflag in _REFUSED_TYPES:
                raise InvalidInputError(f"the bundle archive holds {_REFUSED_TYPES[typeflag]}; it is refused")
            if typeflag not in _REGULAR_TYPES and typeflag != b"5":
                raise InvalidInputError(f"the bundle archive holds an unknown member type {typeflag!r}")
            is_dir = typeflag == b"5"
            raw_name = _header_name(block) if long_name is None else long_name
            if pax and "path" in pax:
                name_text = pax["path"]
            else:
                try:
                    name_text = raw_name.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInputError("the bundle archive has a member name that is not UTF-8") from None
            if pax and "size" in pax:
                if not pax["size"].isdigit():
                    raise InvalidInputError("the bundle archive has a bad pax size")
                size = int(pax["size"])
            pax, long_name = None, None
            if is_dir and size:
                raise InvalidInputError("the bundle archive has a directory with data")
            member = self._admit(name_text, size, is_dir)
            self.remaining, self.padding = size, -size % _BLOCK
            if member is not None:
                yield member

    def _admit(self, name_text: str, size: int, is_dir: bool) -> ArchiveMember | None:
        """Validate a member's name and size against the rules and limits; return it (None for the top dir)."""
        limits = self.limits
        relative = _check_name(name_text, is_dir)
        key = unicodedata.normalize("NFC", relative).casefold()
        if key in self.seen:
            raise InvalidInputError(f"the bundle archive has a duplicate member {_show(name_text)}")
        self.seen.add(key)
        parents = key.split("/")[:-1] if key else []
        for depth in range(1, len(parents) + 1):
            parent = "/".join(parents[:depth])
            if parent in self.files:
                raise InvalidInputError(f"the bundle archive uses the file {_show(parent)} as a directory")
        if is_dir:
            if key in self.files:
                raise InvalidInputError(f"the bundle archive has a duplicate member {_show(name_text)}")
        elif key in self.dirs or key == "":
            raise InvalidInputError(f"the bundle archive has a file where a directory is {_show(name_text)}")
        for depth in range(1, len(parents) + 1):
            self.dirs.add("/".join(parents[:depth]))
        if not key:
            return None  # helpline-bundle/ itself
        (self.dirs if is_dir else self.files).add(key)
        self.member_count += 1
        if self.member_count > limits.max_members:
            raise InvalidInputError(f"the bundle archive has more than {limits.max_members} members")
        if size > limits.max_member_bytes:
            raise InvalidInputError(f"{_show(relative)} in the bundle archive is {size} bytes, "
                                    f"more than the {limits.max_member_bytes} allowed per file")
        self.declared_bytes += size
        if self.declared_bytes > limits.max_total_bytes:
            raise InvalidInputError(f"the bundle archive holds more than {limits.max_total_bytes} bytes")
        return ArchiveMember(relative, size, is_dir)

    def finish(self) -> None:
        """Read to the end of the gzip stream (checking its CRC); only zero padding may follow the tar end."""
        for _ in self.members():
            pass
        trailing = 0
        while True:
            data = self._read(_CHUNK)
            if not data:
                return
            trailing += len(data)
            if data.count(0) != len(data):
                raise InvalidInputError("the bundle archive has data after its end-of-archive marker")
            if trailing > _MAX_TRAILING_ZEROS:
                raise InvalidInputError("the bundle archive has too much padding after its end-of-archive marker")


class _open_archive:
    """Context manager: open ``path``, check the gzip magic, and return a :class:`_TarStream` over it."""

    def __init__(self, path: Path, limits: Limits):
        self.path, self.limits = Path(path), limits
        self.raw: BinaryIO | None = None

    def __enter__(self) -> _TarStream:
        try:
            self.raw = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        except FileNotFoundError:
            raise NotFoundError(f"there is no bundle archive at {self.path}") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read {self.path}: {exc.strerror or type(exc).__name__}") from None
        try:
            if not stat.S_ISREG(os.fstat(self.raw.fileno()).st_mode):
                raise InvalidInputError(f"{self.path} is not a regular file")
            _check_gzip_header(self.raw.read(_GZIP_HEADER_MAX), self.path.name)
            self.raw.seek(0)
        except BaseException:
            self.raw.close()
            raise
        return _TarStream(self.raw, self.limits)

    def __exit__(self, *exc_info) -> None:
        if self.raw is not None:
            self.raw.close()


def _check_gzip_header(head: bytes, name: str) -> None:
    """Refuse anything but a deflate gzip stream whose header (name, comment, extra field) ends early.

    The gzip module reads a header's file name and comment byte by byte to
    their end, however long; a bounded header keeps that cheap.
    """
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        raise InvalidInputError(f"{name} is not a gzip-compressed bundle archive")
    flags, position = head[3], 10
    if flags & 0xE0:
        raise InvalidInputError(f"{name} has a gzip header with reserved flags set")
    if flags & 0x04:  # FEXTRA
        if len(head) < position + 2:
            raise InvalidInputError(f"{name} has a truncated gzip header")
        position += 2 + int.from_bytes(head[position:position + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & flag:
            end = head.find(b"\0", position)
            if end < 0:
                raise InvalidInputError(f"{name} has a gzip header longer than {_GZIP_HEADER_MAX} bytes")
            position = end + 1
    if position > len(head):
        raise InvalidInputError(f"{name} has a gzip header longer than {_GZIP_HEADER_MAX} bytes")


def _check_checksum(block: bytes) -> None:
    stored = _parse_number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if stored != unsigned:
        signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 8 * 0x20 \
            + sum((b - 256 if b > 127 else b) for b in block[156:])
        if stored != signed:
            raise InvalidInputError("the bundle archive is corrupt or not a tar archive (bad header checksum)")


def _parse_number(field_bytes: bytes, what: str) -> int:
    """Parse an octal tar number (or GNU base-256 for large sizes); raise InvalidInputError if malformed."""
    if field_bytes[:1] == b"\x80":
        return int.from_bytes(field_bytes[1:], "big")
    if field_bytes[:1] == b"\xff":
        raise InvalidInputError(f"the bundle archive has a negative {what}")
    text = field_bytes.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise InvalidInputError(f"the bundle archive is corrupt or not a tar archive (bad {what} field)")
    return int(text, 8)


def _header_name(block: bytes) -> bytes:
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name


def _parse_pax(data: bytes) -> dict[str, str]:
    """Parse pax extended header records (``<len> <key>=<value>\\n``); raise InvalidInputError if malformed."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        if data[position:].strip(b"\0") == b"":
            break
        space = data.find(b" ", position)
        length_text = data[position:space]
        if space < 0 or not length_text.isdigit():
            raise InvalidInputError("the bundle archive has a malformed pax header")
        end = position + int(length_text)
        record = data[space + 1:end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise InvalidInputError("the bundle archive has a malformed pax header")
        key, _, value = record[:-1].partition(b"=")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("the bundle archive has a pax header that is not UTF-8") from None
        position = end
    return records


def _check_name(name: str, is_dir: bool) -> str:
    """Return ``name`` relative to the top directory, or raise InvalidInputError naming what is unsafe about it."""
    shown = _show(name)
    if len(name) > _MAX_NAME_CHARS:
        raise InvalidInputError("the bundle archive has a member name that is too long")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInputError(f"the bundle archive has a member name with control characters: {shown}")
    if "\\" in name:
        raise InvalidInputError(f"the bundle archive has a member name with a backslash: {shown}")
    if name.startswith("/"):
        raise InvalidInputError(f"the bundle archive has an absolute member path: {shown}")
    if ":" in name:
        raise InvalidInputError(f"the bundle archive has a member name with a drive or stream colon: {shown}")
    if is_dir and name.endswith("/"):
        name = name[:-1]
    parts = name.split("/")
    if ".." in parts:
        raise InvalidInputError(f"the bundle archive has a member path with '..': {shown}")
    if any(part in ("", ".") for part in parts):
        raise InvalidInputError(f"the bundle archive has a member path with an empty or '.' component: {shown}")
    if parts[0] != TOP_DIR:
        raise InvalidInputError(f"the bundle archive has a member outside {TOP_DIR}/: {shown}")
    for part in parts[1:]:
        if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            raise InvalidInputError(f"the bundle archive has a member name component that is too long: {shown}")
        if part != part.rstrip(" .") or _WINDOWS_RESERVED.match(part):
            raise InvalidInputError(f"the bundle archive has a member name Windows cannot hold safely: {shown}")
    return "/".join(parts[1:])


def _show(name: str) -> str:
    """Quote an untrusted name for a one-line message (escaped, shortened)."""
    text = name.encode("unicode_escape").decode("ascii")
    return repr(text if len(text) <= 80 else text[:77] + "...")


# -- extraction ---------------------------------------------------------------------------

_HAVE_DIR_FD = (os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd
                and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY"))
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _DirFdWriter:
    """Writes files under a root through directory descriptors opened with O_NOFOLLOW (POSIX)."""

    def __init__(self, root: Path):
        self.root = root
        self.fds: dict[tuple[str, ...], int] = {(): os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)}
        self.written: list[tuple[str, ...]] = []  # created files and directories, in creation order

    def _dir_fd(self, parts: tuple[str, ...]) -> int:
        if parts in self.fds:
            return self.fds[parts]
        parent = self._dir_fd(parts[:-1])
        try:
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            self.written.append(parts)
        except FileExistsError:
            pass
        self.fds[parts] = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        return self.fds[parts]

    def make_dir(self, name: str) -> None:
        self._dir_fd(tuple(name.split("/")))

    def write_file(self, name: str, chunks: Iterable[bytes]) -> None:
        parts = tuple(name.split("/"))
        parent = self._dir_fd(parts[:-1])
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_BINARY, 0o644,
                     dir_fd=parent)
        self.written.append(parts)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def remove_written(self) -> None:
        for parts in reversed(self.written):
            parent = self.fds.get(parts[:-1])
            if parent is None:
                continue
            try:
                if parts in self.fds:
                    os.rmdir(parts[-1], dir_fd=parent)
                else:
                    os.unlink(parts[-1], dir_fd=parent)
            except OSError:
                pass

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _PathWriter:
    """Writes files under a root by path (Windows: no directory descriptors), refusing links and junctions."""

    def __init__(self, root: Path):
        info = os.lstat(root)
        reparse = getattr(info, "st_file_attributes", 0) & getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0)
        if not stat.S_ISDIR(info.st_mode) or reparse:
            raise InvalidInputError(f"{printable(root)} is not a plain directory; extraction stopped")
        self.root = root
        self.written: list[Path] = []

    def _ensure_dir(self, parts: tuple[str, ...]) -> Path:
        path = self.root
        for part in parts:
            path = path / part
            try:
                os.mkdir(path, 0o755)
                self.written.append(path)
            except FileExistsError:
                pass
            info = os.lstat(path)
            reparse = getattr(info, "st_file_attributes", 0) & getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0)
            if not stat.S_ISDIR(info.st_mode) or reparse:
                raise InvalidInputError(f"{path} is not a plain directory; extraction stopped")
        return path

    def make_dir(self, name: str) -> None:
        self._ensure_dir(tuple(name.split("/")))

    def write_file(self, name: str, chunks: Iterable[bytes]) -> None:
        parts = tuple(name.split("/"))
        target = self._ensure_dir(parts[:-1]) / parts[-1]
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY, 0o644)
        self.written.append(target)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def remove_written(self) -> None:
        for path in reversed(self.written):
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError:
                pass

    def close(self) -> None:
        pass


def sha256_file(path: Path) -> tuple[int, str]:
    """Return (size, sha256 hex) of the file at ``path``, streaming it."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while data := handle.read(_CHUNK):
            digest.update(data)
            size += len(data)
    return size, digest.hexdigest()
