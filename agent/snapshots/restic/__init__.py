"""The restic wrapper: one module per restic subcommand that builds its argv, one that runs them.

Use :func:`detect` once for the binary, a :class:`Repository` for where the
snapshots live and the file holding its password
(:func:`ensure_password_file`), then the operations: :func:`backup`,
:func:`snapshots`, :func:`restore`, :func:`ls`, :func:`forget`, :func:`prune`,
:func:`check`, :func:`diff`, :func:`stats`, :func:`exists`, :func:`init`.
Failures raise the classes of :mod:`.errors`; a snapshot made without some
unreadable files comes back with a WARNING outcome that names them.
"""

from __future__ import annotations

from .errors import (
    RepositoryDamaged,
    RepositoryLocked,
    RepositoryMissing,
    ResticCancelled,
    ResticError,
    WrongPassword,
)
from .forget import Retention
from .operations import backup, check, diff, exists, forget, init, ls, prune, restore, snapshots, stats, unlock
from .output import (
    BackupSummary,
    Change,
    Diff,
    ForgetResult,
    Listing,
    LockInfo,
    Node,
    Progress,
    RestoreSummary,
    Snapshot,
    Stats,
)
from .password import ensure_password_file, password_path
from .repository import Repository
from .run import clear_stale_locks, read_locks
from .values import HELPLINE_TAG
from .version import Features, Restic, Version, detect, parse_version

__all__ = [
    "HELPLINE_TAG", "BackupSummary", "Change", "Diff", "Features", "ForgetResult", "Listing", "LockInfo", "Node",
    "Progress", "RepositoryDamaged", "RepositoryLocked", "RepositoryMissing", "Repository", "ResticCancelled",
    "ResticError", "Restic", "RestoreSummary", "Retention", "Snapshot", "Stats", "Version", "WrongPassword",
    "backup", "check", "clear_stale_locks", "detect", "diff", "ensure_password_file", "exists", "forget", "init",
    "ls", "parse_version", "password_path", "prune", "read_locks", "restore", "snapshots", "stats", "unlock",
]
