"""Blob storage for bundles, session recordings and other files, behind one interface.

:class:`BlobStore` is what the server codes against; :class:`LocalBlobStore` keeps
blobs in a directory (the single-machine default) and :class:`S3BlobStore` in an
S3-compatible bucket. :func:`blob_store_from_settings` picks one from settings.

Every store streams (memory stays bounded whatever the blob size), computes the
sha256 and size while writing, and replaces a blob atomically: a reader sees the
old blob or the new one, never a half-written one. Keys are relative POSIX paths
checked by :func:`validate_key`; errors are :class:`~protocol.errors.HelplineError`
subclasses, never prints or exits.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import stat as stat_mode
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from protocol.errors import (
    ConfigError,
    ConflictError,
    HelplineError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)

MiB = 1024 * 1024
MAX_KEY_LENGTH = 512
#: Filesystems refuse names over 255 bytes; the local store adds up to 29 characters.
MAX_SEGMENT_LENGTH = 200
#: read_range() returns bytes in memory; larger spans are read with open().
MAX_RANGE_LENGTH = 64 * MiB
CHUNK_SIZE = 1 * MiB

_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_KEY_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9._-]+/)*[A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DOT_SEGMENTS = frozenset({".", ".."})
_KEY_HINT = (
    "use letters, digits, '.', '_' and '-' in segments of at most 200 characters"
    " separated by '/', at most 512 characters in all"
)


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows about one blob; ``sha256`` is lowercase hex, None if unknown."""

    key: str
    size: int
    sha256: str | None
    modified: datetime


def _shown(value: str) -> str:
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
        raise InvalidInputError(f"blob key {_shown(key)} is {len(key)} characters long", hint=_KEY_HINT)
    if not _KEY_RE.fullmatch(key) or not all(_good_segment(s) for s in key.split("/")):
        raise InvalidInputError(f"invalid blob key {_shown(key)}", hint=_KEY_HINT)
    return key


def _good_segment(segment: str) -> bool:
    """Whether a segment already matched by the key pattern is neither a dot segment nor too long."""
    return segment not in _DOT_SEGMENTS and len(segment) <= MAX_SEGMENT_LENGTH


def _is_key(text: str) -> bool:
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
        raise InvalidInputError(f"invalid blob key prefix {_shown(prefix)}", hint=_KEY_HINT)
    if not all(_good_segment(s) for s in prefix.split("/")[:-1]):
        raise InvalidInputError(f"invalid blob key prefix {_shown(prefix)}", hint=_KEY_HINT)
    return prefix


def _check_size_hint(size_hint: int | None) -> None:
    if size_hint is not None and (not isinstance(size_hint, int) or size_hint < 0):
        raise InvalidInputError(f"size hint must be a non-negative integer, not {size_hint!r}")


def _check_range(start: int, length: int) -> None:
    if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length < 0:
        raise InvalidInputError(f"invalid byte range: start {start!r}, length {length!r}")
    if length > MAX_RANGE_LENGTH:
        raise InvalidInputError(
            f"byte range of {length} bytes is larger than {MAX_RANGE_LENGTH}",
            hint="stream large spans with open() instead",
        )


def _chunks(data: BinaryIO | bytes) -> Iterator[bytes | memoryview]:
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
    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None) -> BlobInfo:
        """Store ``data`` (bytes or a binary stream read to its end) under ``key`` and return its info.

        ``size_hint`` is the expected size if known; a store may refuse early when
        it cannot hold that much, and never trusts it as the real size.
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

    @abc.abstractmethod
    def check(self) -> None:
        """Readiness probe: return if the store can be written, else raise UnavailableError."""


# --------------------------------------------------------------------------- local

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO planted in the tree cannot hang an open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SIDECAR_SUFFIX = "@sha256"  # '@' never occurs in a key, so sidecars and temp files
_TEMP_MARK = "@tmp-"  # cannot collide with blobs and are skipped when listing
_LOCK_NAME = ".folders@lock"


def _is_escape(exc: OSError) -> bool:
    """Whether ``exc`` is a path step that is not a real directory (a symlink or a file)."""
    return exc.errno in (errno.ELOOP, errno.ENOTDIR)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``: key ``a/b.tar`` is the file ``root/a/b.tar``.

    - A write goes to a temp file in the blob's folder, is fsynced, then renamed
      over the blob with ``os.replace``, and the folder is fsynced.
    - The sha256 is kept in a sidecar ``<name>@sha256`` (JSON) that records the
      inode, size and mtime of the file it describes; :meth:`stat` trusts it only
      while these still match and otherwise recomputes the hash from the file
      (files copied in by hand, a crash between the two renames).
    - Paths are walked one folder at a time with ``O_NOFOLLOW`` relative to the
      root's descriptor, so a symlink inside the root is never followed: reads
      through one see no blob, writes through one raise ConflictError.
    - A folder cannot also be a blob here (``a`` and ``a/b`` cannot both exist;
      S3 allows it): such a put raises ConflictError and keeps what is stored.
    - A ``size_hint`` larger than the free disk space fails at once, before the
      upload is read (space is checked, not reserved: a reservation could fill
      the disk for everything else on it).
    - Folders are created 0700 and files 0600; emptied folders are removed on
      delete. Making folders and removing empty ones are serialised with
      ``flock`` on ``root/.folders@lock`` (shared by puts, exclusive for removal),
      so a put never loses its fresh folder to a concurrent delete, across
      threads and processes.
    """

    def __init__(self, root: str | os.PathLike[str]):
        root = Path(root)
        try:
            root.mkdir(mode=0o700, parents=True)
            os.chmod(root, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(
                f"cannot create the blob directory {root}: {exc.strerror}",
                hint="create it for the server's user, or set the blob directory to another path",
            ) from exc
        if not root.is_dir():
            raise ConfigError(f"the blob directory {root} is not a directory")
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    # -- path walking

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnavailableError(
                f"cannot open the blob directory {self.root}: {exc.strerror}",
                hint="check that it exists and that the server's user may use it",
            ) from exc

    def _open_folder(self, folders: list[str], *, create: bool) -> int:
        """Return a descriptor of ``root/folders...``, creating folders if asked.

        Raises OSError: FileNotFoundError if missing, ELOOP/ENOTDIR if a step is a
        symlink or a file.
        """
        fd = self._open_root()
        try:
            for name in folders:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _failure(self, exc: OSError, doing: str) -> HelplineError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return UnavailableError(
                f"the blob directory {self.root} is full while {doing}",
                hint="free disk space or move the blob directory to a larger disk",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return UnavailableError(
                f"no permission in the blob directory {self.root} while {doing}",
                hint="give the server's user read and write access to it",
            )
        return UnavailableError(f"blob storage failed while {doing}: {exc.strerror or exc}")

    def _open_blob(self, key: str) -> tuple[int, int, str]:
        """Return (folder fd, blob fd, name) for a stored regular file; raise NotFoundError."""
        validate_key(key)
        *folders, name = key.split("/")
        try:
            dir_fd = self._open_folder(folders, create=False)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or _is_escape(exc):
                raise NotFoundError(f"no blob {_shown(key)}") from None
            raise self._failure(exc, f"opening {_shown(key)}") from exc
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            if isinstance(exc, FileNotFoundError) or _is_escape(exc):
                raise NotFoundError(f"no blob {_shown(key)}") from None
            raise self._failure(exc, f"opening {_shown(key)}") from exc
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            os.close(dir_fd)
            raise NotFoundError(f"no blob {_shown(key)}")
        os.set_blocking(fd, True)
        return dir_fd, fd, name

    # -- writing

    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None) -> BlobInfo:
        validate_key(key)
        _check_size_hint(size_hint)
        *folders, name = key.split("/")
        if size_hint:
            self._check_space(size_hint, key)
        dir_fd, temp_name, temp_fd = self._create_temp(key, folders, name)
        committed = False
        try:
            with os.fdopen(temp_fd, "wb") as out:
                digest = hashlib.sha256()
                size = 0
                for chunk in _chunks(data):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            sha256 = digest.hexdigest()
            self._write_sidecar(dir_fd, name, sha256, st)
            try:
                os.replace(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except IsADirectoryError:
                with contextlib.suppress(OSError):
                    os.unlink(name + _SIDECAR_SUFFIX, dir_fd=dir_fd)  # ours: a folder has none
                raise ConflictError(
                    f"cannot store blob {_shown(key)}: it is a folder of other blobs here",
                    hint="choose a key that is not a prefix folder of existing keys",
                ) from None
            committed = True
            os.fsync(dir_fd)
        except OSError as exc:
            raise self._failure(exc, f"storing {_shown(key)}") from exc
        finally:
            if not committed:
                with contextlib.suppress(OSError):
                    os.unlink(temp_name, dir_fd=dir_fd)
            os.close(dir_fd)
            if not committed and folders:
                self._prune(folders)  # folders this put may have made for nothing
        return BlobInfo(key, size, sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def _create_temp(self, key: str, folders: list[str], name: str) -> tuple[int, str, int]:
        """Create folders and an exclusive temp file beside the blob: (folder fd, temp name, temp fd).

        Once the temp file exists its folder is not empty, so _prune leaves it alone.
        """
        try:
            with self._folder_lock(exclusive=False) if folders else contextlib.nullcontext():
                try:
                    dir_fd = self._open_folder(folders, create=True)
                except OSError as exc:
                    if _is_escape(exc):
                        raise ConflictError(
                            f"cannot store blob {_shown(key)}: a blob or a symbolic link is in the way of its folder",
                            hint="choose a key whose folders are not blobs themselves",
                        ) from None
                    raise
                temp_name = f".{name}{_TEMP_MARK}{secrets.token_hex(8)}"
                try:
                    temp_fd = os.open(
                        temp_name,
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                        dir_fd=dir_fd,
                    )
                except BaseException:
                    os.close(dir_fd)
                    raise
        except OSError as exc:
            raise self._failure(exc, f"storing {_shown(key)}") from exc
        return dir_fd, temp_name, temp_fd

    @contextlib.contextmanager
    def _folder_lock(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the store's folder lock: shared to make folders, exclusive to remove them."""
        root_fd = self._open_root()
        try:
            fd = os.open(_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _check_space(self, size: int, key: str) -> None:
        try:
            vfs = os.statvfs(self.root)
        except OSError:
            return  # the write itself will report the problem
        free = vfs.f_bavail * vfs.f_frsize
        if size > free:
            raise UnavailableError(
                f"the blob directory {self.root} is full: {_shown(key)} needs {size} bytes, {free} are free",
                hint="free disk space or move the blob directory to a larger disk",
            )

    def _write_sidecar(self, dir_fd: int, name: str, sha256: str, st: os.stat_result) -> None:
        record = {"sha256": sha256, "size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
        temp_name = f".{name}{_SIDECAR_SUFFIX}{_TEMP_MARK}{secrets.token_hex(8)}"
        fd = os.open(
            temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(record).encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, name + _SIDECAR_SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name, dir_fd=dir_fd)
            raise

    # -- reading

    def _read_sidecar(self, dir_fd: int, name: str, st: os.stat_result) -> str | None:
        """Return the recorded sha256 if the sidecar describes exactly this file, else None."""
        try:
            fd = os.open(name + _SIDECAR_SUFFIX, _READ_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            record = json.loads(os.read(fd, 4096))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if not isinstance(record, dict):
            return None
        sha256 = record.get("sha256")
        same_file = (record.get("ino"), record.get("size"), record.get("mtime_ns")) == (
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        )
        if same_file and isinstance(sha256, str) and _SHA256_RE.fullmatch(sha256):
            return sha256
        return None

    def stat(self, key: str) -> BlobInfo:
        dir_fd, fd, name = self._open_blob(key)
        try:
            st = os.fstat(fd)
            sha256 = self._read_sidecar(dir_fd, name, st)
            if sha256 is None:
                digest = hashlib.sha256()
                offset = 0
                while chunk := os.pread(fd, CHUNK_SIZE, offset):
                    digest.update(chunk)
                    offset += len(chunk)
                sha256 = digest.hexdigest()
        except OSError as exc:
            raise self._failure(exc, f"reading {_shown(key)}") from exc
        finally:
            os.close(fd)
            os.close(dir_fd)
        return BlobInfo(key, st.st_size, sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def open(self, key: str) -> BinaryIO:
        dir_fd, fd, _ = self._open_blob(key)
        os.close(dir_fd)
        return os.fdopen(fd, "rb")

    def read_range(self, key: str, start: int, length: int) -> bytes:
        _check_range(start, length)
        dir_fd, fd, _ = self._open_blob(key)
        os.close(dir_fd)
        try:
            parts: list[bytes] = []
            remaining = length
            while remaining > 0:
                chunk = os.pread(fd, remaining, start + (length - remaining))
                if not chunk:
                    break
                parts.append(chunk)
                remaining -= len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise self._failure(exc, f"reading {_shown(key)}") from exc
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        try:
            dir_fd, fd, _ = self._open_blob(key)
        except NotFoundError:
            return False
        os.close(fd)
        os.close(dir_fd)
        return True

    # -- deleting and listing

    def delete(self, key: str) -> None:
        validate_key(key)
        *folders, name = key.split("/")
        fds = [self._open_root()]
        try:
            for folder in folders:
                try:
                    fds.append(os.open(folder, _DIR_FLAGS, dir_fd=fds[-1]))
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError) or _is_escape(exc):
                        return  # nothing stored there (and never follow a symlink)
                    raise
            dir_fd = fds[-1]
            try:
                is_folder = stat_mode.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except FileNotFoundError:
                is_folder = False
            if is_folder:
                return  # a folder of other blobs, not a blob
            for victim in (name, name + _SIDECAR_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(victim, dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            raise self._failure(exc, f"deleting {_shown(key)}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        self._prune(folders)

    def _prune(self, folders: list[str]) -> None:
        """Remove ``root/folders...`` and its parents while they are empty (best effort).

        rmdir refuses non-empty folders; the exclusive folder lock keeps puts from
        making a folder or its first temp file meanwhile (see _create_temp).
        """
        if not folders:
            return
        fds: list[int] = []
        try:
            with self._folder_lock(exclusive=True):
                fds.append(self._open_root())
                for folder in folders:
                    fds.append(os.open(folder, _DIR_FLAGS, dir_fd=fds[-1]))
                for depth in range(len(folders), 0, -1):
                    os.rmdir(folders[depth - 1], dir_fd=fds[depth - 1])
        except (OSError, UnavailableError):
            return  # not empty (the usual case), gone already, or not ours to fix here
        finally:
            for fd in fds:
                os.close(fd)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        head, _, partial = prefix.rpartition("/")
        return self._iter_keys(head.split("/") if head else [], partial)

    def _iter_keys(self, folders: list[str], partial: str) -> Iterator[str]:
        try:
            fd = self._open_folder(folders, create=False)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or _is_escape(exc):
                return
            raise self._failure(exc, "listing blobs") from exc
        base = "".join(f"{folder}/" for folder in folders)
        yield from self._scan(fd, base, partial)

    def _scan(self, fd: int, base: str, partial: str) -> Iterator[str]:
        """Yield keys under the folder ``fd`` (closed at the end) in lexicographic key order."""
        try:
            entries = []
            with os.scandir(fd) as listing:
                for entry in listing:
                    name = entry.name
                    if not name.startswith(partial) or not _SEGMENT_RE.fullmatch(name) or not _good_segment(name):
                        continue  # sidecars, temp files and foreign names
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((name + "/", name, True))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((name, name, False))
            # Sorting folders as "name/" keeps the order of the full keys: the keys
            # under folder "a" all start with "a/", and no sibling can.
            entries.sort()
            for _, name, is_folder in entries:
                if not is_folder:
                    if len(base) + len(name) <= MAX_KEY_LENGTH:
                        yield base + name
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # removed meanwhile, or replaced by a symlink
                yield from self._scan(child, f"{base}{name}/", "")
        finally:
            os.close(fd)

    def check(self) -> None:
        fd = self._open_root()
        probe = f".check{_TEMP_MARK}{secrets.token_hex(8)}"
        try:
            probe_fd = os.open(
                probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
            )
            try:
                os.write(probe_fd, b"ok")
                os.fsync(probe_fd)
            finally:
                os.close(probe_fd)
                os.unlink(probe, dir_fd=fd)
        except OSError as exc:
            raise UnavailableError(
                f"the blob directory {self.root} is not writable: {exc.strerror}",
                hint="give the server's user write access to it, or set the blob directory to another path",
            ) from exc
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- S3

_MEMORY_SPOOL_LIMIT = 1 * MiB  # streams up to this size are uploaded from memory
_MIN_PART_SIZE = 5 * MiB  # S3's minimum multipart part size
_ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,254}", re.IGNORECASE)


class _S3Reader(io.RawIOBase):
    """A raw file object over a botocore StreamingBody, translating read errors."""

    def __init__(self, body: Any, translate: Any):
        self._body = body
        self._translate = translate

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError

        try:
            data = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise self._translate(exc) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    """Blobs as objects in an S3-compatible bucket: key ``a/b`` is object ``<prefix>a/b``.

    - The sha256 must be known when an upload starts (it is object metadata,
      ``x-amz-meta-sha256``), so a stream is hashed while it is spooled: up to
      1 MiB in memory, beyond that to a temp file in ``spool_dir`` (default: the
      system temp dir). That file is then uploaded in parts of ``part_size``
      (multipart above ``part_size``) read lazily from disk, so memory stays
      bounded. ``put_file`` hashes the file in place and uploads it without a copy;
      the file must not change during the call.
    - S3 writes are atomic per object, so readers never see half a blob.
    - Objects written by other tools have ``sha256`` None in :meth:`stat`.
    - With ``endpoint_url`` (MinIO, Ceph, moto…) path-style addressing is used and
      checksums are only sent when an operation requires them, for compatibility.
    - Credentials left None come from boto3's usual chain (environment, instance
      role). The secret key goes to the boto3 client only: this class does not
      keep it, and it never appears in a repr, an error or a log line.
    - :meth:`check` is a HEAD on the bucket: it proves the bucket exists and the
      credentials are accepted, not that they may write.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        spool_dir: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ):
        if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
            raise ConfigError(
                f"invalid S3 bucket name {bucket!r}", hint="set the blob bucket to an existing bucket's name"
            )
        if (access_key is None) != (secret_key is None):
            raise ConfigError(
                "S3 access key and secret key must be set together",
                hint="set both, or neither to use the environment's credentials",
            )
        if endpoint_url is not None and not re.match(r"https?://[^/\s]+", endpoint_url):
            raise ConfigError(f"invalid S3 endpoint URL {endpoint_url!r}", hint="use http://host:port or https://host")
        if part_size < _MIN_PART_SIZE:
            raise ConfigError(f"S3 part size must be at least {_MIN_PART_SIZE} bytes, not {part_size}")
        if prefix:
            try:
                validate_key(prefix.strip("/"))
            except InvalidInputError:
                raise ConfigError(f"invalid S3 key prefix {prefix!r}", hint=_KEY_HINT) from None
            prefix = prefix.strip("/") + "/"
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is in the [server] extra
            raise ConfigError("S3 blob storage needs boto3", hint="install helpline[server]") from exc

        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._part_size = part_size
        self._spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self._transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
            use_threads=max_concurrency > 1,
        )
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
            request_checksum_calculation="when_required" if endpoint_url else "when_supported",
            response_checksum_validation="when_required" if endpoint_url else "when_supported",
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}{where})"

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _where(self) -> str:
        return f"bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    # -- errors

    def _translate(self, exc: BaseException, doing: str, key: str | None = None) -> HelplineError:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
            exc = exc.__context__  # boto3 wraps the ClientError of a failed upload
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
                return UnavailableError(
                    f"S3 {self._where()} does not exist",
                    hint="create the bucket, or set the blob bucket to an existing one",
                )
            if key is not None and code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"no blob {_shown(key)}")
            if status == 403 or code in _ACCESS_DENIED_CODES:
                return UnavailableError(
                    f"S3 refused access to {self._where()} while {doing} ({code})",
                    hint="check the S3 access key, secret key and bucket policy",
                )
            message = error.get("Message") or ""
            return UnavailableError(f"S3 failed while {doing} in {self._where()}: {code} {message}".rstrip())
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ConfigError(
                f"no S3 credentials found for {self._where()}",
                hint="set the S3 access key and secret key, or provide credentials in the environment",
            )
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return UnavailableError(
                f"cannot reach the S3 endpoint for {self._where()} while {doing}",
                hint="check the S3 endpoint URL and that the storage service is running",
            )
        return UnavailableError(f"S3 failed while {doing} in {self._where()}: {exc}")

    @contextmanager
    def _errors(self, doing: str, key: str | None = None) -> Iterator[None]:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._translate(exc, doing, key) from exc

    # -- writing

    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None) -> BlobInfo:
        name = self._name(key)
        _check_size_hint(size_hint)
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= _MEMORY_SPOOL_LIMIT:
            body = bytes(data)
            return self._put_bytes(key, name, body, hashlib.sha256(body).hexdigest())
        digest = hashlib.sha256()
        chunks = _chunks(data)
        head = bytearray()
        for chunk in chunks:
            digest.update(chunk)
            head += chunk
            if len(head) > _MEMORY_SPOOL_LIMIT:
                break
        else:
            return self._put_bytes(key, name, bytes(head), digest.hexdigest())
        try:
            spool = tempfile.NamedTemporaryFile(prefix="helpline-blob-", dir=self._spool_dir)  # noqa: SIM115
        except OSError as exc:
            raise UnavailableError(
                f"cannot spool an upload to {self._spool_dir or tempfile.gettempdir()}: {exc.strerror}",
                hint="make the spool directory writable, or set another one",
            ) from exc
        with spool:
            try:
                spool.write(head)
                size = len(head)
                del head
                for chunk in chunks:
                    digest.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
                spool.flush()
            except OSError as exc:
                raise UnavailableError(f"cannot spool an upload of {_shown(key)}: {exc.strerror}") from exc
            return self._put_path(key, name, spool.name, digest.hexdigest(), size)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> BlobInfo:
        name = self._name(key)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as source:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise NotFoundError(f"file to store not found: {os.fspath(path)}") from None
        except OSError as exc:
            raise UnavailableError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
        return self._put_path(key, name, os.fspath(path), digest.hexdigest(), size)

    def _put_bytes(self, key: str, name: str, body: bytes, sha256: str) -> BlobInfo:
        with self._errors(f"storing {_shown(key)}", key=None):
            self._client.put_object(Bucket=self.bucket, Key=name, Body=body, Metadata={"sha256": sha256})
        return self._stored_info(key, name, len(body), sha256)

    def _put_path(self, key: str, name: str, path: str, sha256: str, size: int) -> BlobInfo:
        with self._errors(f"storing {_shown(key)}", key=None):
            self._client.upload_file(
                path, self.bucket, name, ExtraArgs={"Metadata": {"sha256": sha256}}, Config=self._transfer
            )
        return self._stored_info(key, name, size, sha256)

    def _stored_info(self, key: str, name: str, size: int, sha256: str) -> BlobInfo:
        """Return the info of what was just stored, with the server's modification time."""
        modified = datetime.now(UTC)
        try:
            head = self._head(key, name)
        except NotFoundError:
            head = None  # deleted already by someone else
        if head is not None and head.size == size and head.sha256 == sha256:
            modified = head.modified  # else overwritten meanwhile: keep our clock
        return BlobInfo(key, size, sha256, modified)

    # -- reading

    def _head(self, key: str, name: str) -> BlobInfo:
        with self._errors(f"reading {_shown(key)}", key=key):
            response = self._client.head_object(Bucket=self.bucket, Key=name)
        sha256 = (response.get("Metadata") or {}).get("sha256")
        if not (isinstance(sha256, str) and _SHA256_RE.fullmatch(sha256)):
            sha256 = None
        return BlobInfo(key, int(response["ContentLength"]), sha256, response["LastModified"])

    def stat(self, key: str) -> BlobInfo:
        return self._head(key, self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self._head(key, self._name(key))
        except NotFoundError:
            return False
        return True

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        with self._errors(f"reading {_shown(key)}", key=key):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
        raw = _S3Reader(response["Body"], lambda exc: self._translate(exc, f"reading {_shown(key)}", key))
        return io.BufferedReader(raw, buffer_size=CHUNK_SIZE)  # type: ignore[return-value]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        name = self._name(key)
        _check_range(start, length)
        if length == 0:
            self._head(key, name)  # still report a missing blob
            return b""
        from botocore.exceptions import ClientError

        with self._errors(f"reading {_shown(key)}", key=key):
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=name, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the range starts at or past the end
                raise
            with response["Body"] as body:
                if start > 0 and not response.get("ContentRange"):
                    raise UnavailableError(
                        f"the S3 endpoint for {self._where()} ignored a byte range request",
                        hint="use an S3 service that supports ranged GET",
                    )
                return body.read(length)

    # -- deleting and listing

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors(f"deleting {_shown(key)}", key=None):
            self._client.delete_object(Bucket=self.bucket, Key=name)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._iter_keys(prefix)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("listing blobs"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    if _is_key(key):
                        yield key  # objects with foreign names are skipped

    def check(self) -> None:
        with self._errors("checking the bucket"):
            self._client.head_bucket(Bucket=self.bucket)


# --------------------------------------------------------------------------- settings


def blob_store_from_settings(
    kind: str,
    *,
    root: str | os.PathLike[str] | None = None,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    prefix: str = "",
) -> BlobStore:
    """Return the blob store the settings describe: ``kind`` "local" (needs ``root``) or "s3" (needs ``bucket``).

    Raise ConfigError if the kind is unknown or what it needs is missing or invalid.
    """
    chosen = (kind or "").strip().lower()
    if chosen == "local":
        if root is None or not os.fspath(root):
            raise ConfigError("local blob storage needs a directory", hint="set the blob directory setting")
        return LocalBlobStore(root)
    if chosen == "s3":
        if not bucket:
            raise ConfigError("S3 blob storage needs a bucket name", hint="set the blob bucket setting")
        return S3BlobStore(
            bucket,
            endpoint_url=endpoint_url or None,
            region=region or None,
            access_key=access_key or None,
            secret_key=secret_key or None,
            prefix=prefix,
        )
    raise ConfigError(f"unknown blob storage kind {kind!r}", hint="use 'local' or 's3'")
