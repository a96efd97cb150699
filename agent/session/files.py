"""The user's file system as the session's SFTP server sees it, with the rights of the approving user.

The session runs in the user's own process, so the operating system already limits
what this can touch to what the user may; nothing here widens or narrows that.
Paths are taken as the engineer's client sends them: absolute, or relative to the
user's home.

When the system has OpenSSH's own ``sftp-server``, the session runs that instead
(a child of the user's session process, so again with the user's rights and no
more): it answers each request in compiled code, where the server here answers in
Python. The binary is looked for only at a short fixed list of absolute paths,
never through ``PATH``, so nothing the user's environment says can swap it.
"""

from __future__ import annotations

import os

import paramiko
from paramiko.sftp import SFTP_OK
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_handle import SFTPHandle
from paramiko.sftp_server import SFTPServer

# Where Debian/Ubuntu, Fedora/RHEL and macOS install OpenSSH's SFTP server; the first executable one is used.
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/lib/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
)


def find_sftp_server(candidates: tuple[str, ...] | list[str] = SFTP_SERVERS) -> str | None:
    """The first of ``candidates`` that is an absolute path to an executable regular file, or None."""
    for path in candidates:
        if os.path.isabs(path) and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def sftp_server_argv(binary: str) -> list[str]:
    """How the session starts ``binary``: log to its error pipe (``-e``), not to the system log.

    It starts in the user's home (its working directory), serves with the user's
    rights, reads and writes (no ``-R``: the files scope is file transfer both ways),
    and ends at the end of its input, as under an SSH server.
    """
    return [binary, "-e"]


class OpenFile(SFTPHandle):
    """An open file of the user's, read and written with positioned calls (no shared offset)."""

    def __init__(self, fd: int, path: str, flags: int):
        super().__init__(flags)
        self.fd = fd
        self.path = path

    def read(self, offset: int, length: int) -> bytes | int:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def write(self, offset: int, data: bytes) -> int:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat(self.fd))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def chattr(self, attr: SFTPAttributes) -> int:
        try:
            SFTPServer.set_file_attr(self.path, attr)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class UserFiles(paramiko.SFTPServerInterface):
    """SFTP requests answered from the user's file system; errors become SFTP status codes."""

    def __init__(self, server: paramiko.ServerInterface, *args: object, home: str | None = None, **kwargs: object):
        super().__init__(server, *args, **kwargs)
        self.home = home or os.path.expanduser("~")

    def _path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.home, path))

    def canonicalize(self, path: str) -> str:
        return self._path(path or ".")

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        folder = self._path(path)
        try:
            entries = []
            for name in os.listdir(folder):
                attr = SFTPAttributes.from_stat(os.lstat(os.path.join(folder, name)))
                attr.filename = name
                entries.append(attr)
            return entries
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def stat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.stat(self._path(path)))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def lstat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.lstat(self._path(path)))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> OpenFile | int:
        full = self._path(path)
        mode = attr.st_mode if attr is not None and attr.st_mode is not None else 0o666
        try:
            fd = os.open(full, flags | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0), mode & 0o7777)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return OpenFile(fd, full, flags)

    def remove(self, path: str) -> int:
        return self._call(os.remove, self._path(path))

    def rename(self, oldpath: str, newpath: str) -> int:
        new = self._path(newpath)
        if os.path.lexists(new):  # SFTP rename must not replace; posix_rename may
            return SFTPServer.convert_errno(17)
        return self._call(os.rename, self._path(oldpath), new)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._call(os.replace, self._path(oldpath), self._path(newpath))

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        mode = attr.st_mode if attr is not None and attr.st_mode is not None else 0o777
        return self._call(os.mkdir, self._path(path), mode & 0o7777)

    def rmdir(self, path: str) -> int:
        return self._call(os.rmdir, self._path(path))

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return self._call(SFTPServer.set_file_attr, self._path(path), attr)

    def symlink(self, target_path: str, path: str) -> int:
        return self._call(os.symlink, target_path, self._path(path))

    def readlink(self, path: str) -> str | int:
        try:
            return os.readlink(self._path(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    @staticmethod
    def _call(function, *args) -> int:
        try:
            function(*args)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK


