"""The password of a restic repository: generated per repository, kept in a file only its owner can read.

Restic reads it from that file (``--password-file``), so the password itself
never appears in an argv, an environment or a log. An existing password file
is never replaced: a new password would lock the owner out of every snapshot
already made.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from protocol.errors import ConfigError, InvalidInputError

#: Bytes of randomness in a generated password (it is written URL-safe: 43 characters).
PASSWORD_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_IS_WINDOWS = os.name == "nt"


def password_path(directory: Path, repository: str) -> Path:
    """Return where the password of the repository named ``repository`` lives under ``directory``."""
    if not _NAME.match(repository) or repository.endswith(".tmp"):
        raise InvalidInputError(f"not a repository name for a password file: {repository!r}",
                                hint="use letters, digits, '.', '_' and '-' only")
    return Path(directory) / f"{repository}.password"


def ensure_password_file(directory: Path, repository: str) -> Path:
    """Return the password file of ``repository`` under ``directory``, generating the password the first time.

    The directory is made 0700 and the file 0600; the file appears whole or not
    at all (written aside, then linked into place without replacing anything).
    Raise ConfigError if an existing file is empty or readable by others.
    """
    path = password_path(directory, repository)
    _private_directory(path.parent)
    if path.exists():
        _check_existing(path)
        return path
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        _publish(tmp, path)
    except FileExistsError:
        pass  # another run created it first: theirs is the password
    finally:
        tmp.unlink(missing_ok=True)
    _check_existing(path)
    return path


def _publish(tmp: Path, path: Path) -> None:
    """Put ``tmp`` in place as ``path``; raise FileExistsError rather than replace an existing file."""
    if _IS_WINDOWS:
        os.rename(tmp, path)  # fails if the name exists, unlike os.replace
    else:
        os.link(tmp, path)
        _fsync_directory(path.parent)


def _private_directory(directory: Path) -> None:
    """Make ``directory`` 0700 if it is new; refuse an existing one that others can enter."""
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        if not _IS_WINDOWS:
            os.chmod(directory, 0o700)  # mkdir's mode is cut by the umask
        return
    if not _IS_WINDOWS and os.stat(directory).st_mode & 0o077:
        raise ConfigError(f"the folder for restic password files, {directory}, is open to others",
                          hint=f"make it private: chmod 700 {directory}")


def _check_existing(path: Path) -> None:
    """Refuse a password file that is empty, not a regular file, or open to others."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the restic password file {path} is not a regular file")
    if info.st_size == 0:
        raise ConfigError(f"the restic password file {path} is empty",
                          hint="restore it from the escrowed copy, or move it aside to start a new repository")
    if not _IS_WINDOWS and info.st_mode & 0o077:
        raise ConfigError(f"the restic password file {path} can be read by others",
                          hint=f"make it private: chmod 600 {path}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
