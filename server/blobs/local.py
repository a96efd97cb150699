"""Blobs as files in a directory: the single-machine store."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat as stat_mode
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from protocol.errors import ConfigError, ConflictError, HelplineError, NotFoundError, StorageFullError, UnavailableError
from server.blobs.keys import MAX_KEY_LENGTH, SEGMENT_RE, SHA256_RE, good_segment, quoted, validate_key, validate_prefix
from server.blobs.store import CHUNK_SIZE, BlobInfo, BlobStore, check_digest, check_range, check_size_hint, chunks_of

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
            return StorageFullError(
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
                raise NotFoundError(f"no blob {quoted(key)}") from None
            raise self._failure(exc, f"opening {quoted(key)}") from exc
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            if isinstance(exc, FileNotFoundError) or _is_escape(exc):
                raise NotFoundError(f"no blob {quoted(key)}") from None
            raise self._failure(exc, f"opening {quoted(key)}") from exc
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            os.close(dir_fd)
            raise NotFoundError(f"no blob {quoted(key)}")
        os.set_blocking(fd, True)
        return dir_fd, fd, name

    # -- writing

    def put(self, key: str, data: BinaryIO | bytes, *, size_hint: int | None = None,
            expected_sha256: str | None = None) -> BlobInfo:
        validate_key(key)
        check_size_hint(size_hint)
        *folders, name = key.split("/")
        if size_hint:
            self._check_space(size_hint, key)
        dir_fd, temp_name, temp_fd = self._create_temp(key, folders, name)
        committed = False
        try:
            with os.fdopen(temp_fd, "wb") as out:
                digest = hashlib.sha256()
                size = 0
                for chunk in chunks_of(data):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            sha256 = digest.hexdigest()
            check_digest(key, expected_sha256, sha256)
            self._write_sidecar(dir_fd, name, sha256, st)
            try:
                os.replace(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except IsADirectoryError:
                with contextlib.suppress(OSError):
                    os.unlink(name + _SIDECAR_SUFFIX, dir_fd=dir_fd)  # ours: a folder has none
                raise ConflictError(
                    f"cannot store blob {quoted(key)}: it is a folder of other blobs here",
                    hint="choose a key that is not a prefix folder of existing keys",
                ) from None
            committed = True
            os.fsync(dir_fd)
        except OSError as exc:
            raise self._failure(exc, f"storing {quoted(key)}") from exc
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
                            f"cannot store blob {quoted(key)}: a blob or a symbolic link is in the way of its folder",
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
            raise self._failure(exc, f"storing {quoted(key)}") from exc
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
            raise StorageFullError(
                f"the blob directory {self.root} is full: {quoted(key)} needs {size} bytes, {free} are free",
                hint="free disk space or move the blob directory to a larger disk",
            )

    def free_bytes(self) -> int | None:
        try:
            vfs = os.statvfs(self.root)
        except OSError:
            return None
        return vfs.f_bavail * vfs.f_frsize

    def _write_sidecar(self, dir_fd: int, name: str, sha256: str, st: os.stat_result) -> None:
        record = {"sha256": sha256, "size": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
        temp_name = f".{name}{_SIDECAR_SUFFIX}{_TEMP_MARK}{secrets.token_hex(8)}"
        fd = os.open(
            temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            # Not fsynced: the sidecar only spares re-hashing. One lost or torn in a crash fails to
            # parse or to describe this very file (inode, size, mtime), and the blob is hashed again;
            # the blob itself is fsynced, and the folder once after both renames.
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(record).encode())
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
        if same_file and isinstance(sha256, str) and SHA256_RE.fullmatch(sha256):
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
            raise self._failure(exc, f"reading {quoted(key)}") from exc
        finally:
            os.close(fd)
            os.close(dir_fd)
        return BlobInfo(key, st.st_size, sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def open(self, key: str) -> BinaryIO:
        dir_fd, fd, _ = self._open_blob(key)
        os.close(dir_fd)
        return os.fdopen(fd, "rb")

    def open_range(self, key: str, start: int, *, length: int | None = None) -> BinaryIO:
        check_range(start, 0)
        dir_fd, fd, _ = self._open_blob(key)
        os.close(dir_fd)
        try:
            os.lseek(fd, start, os.SEEK_SET)
        except OSError as exc:
            os.close(fd)
            raise self._failure(exc, f"reading {quoted(key)}") from exc
        if length and hasattr(os, "posix_fadvise"):
            # restic reads a pack's range in one go: have the kernel read it from disk in the background now,
            # rather than in small read-ahead windows as the pieces are asked for. Only a hint: errors are moot.
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
        return os.fdopen(fd, "rb")

    def read_range(self, key: str, start: int, length: int) -> bytes:
        check_range(start, length)
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
            raise self._failure(exc, f"reading {quoted(key)}") from exc
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
            raise self._failure(exc, f"deleting {quoted(key)}") from exc
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
                    if not name.startswith(partial) or not SEGMENT_RE.fullmatch(name) or not good_segment(name):
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
