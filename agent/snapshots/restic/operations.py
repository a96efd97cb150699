"""What the agent asks of a restic repository: each operation builds its argv, runs it and reads the result.

These are the wrapper's public verbs (``backup``, ``snapshots``, ``restore``,
…). Each one takes the detected :class:`~.version.Restic` and the
:class:`~.repository.Repository`, reports progress through a callback, can be
cancelled through an event (restic then stops with SIGINT and removes its own
lock), and raises the errors of :mod:`.errors`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import PurePath

from .backup import backup_argv
from .cat import cat_config_argv
from .check import check_argv
from .diff import diff_argv
from .errors import RepositoryMissing
from .forget import Retention, forget_argv
from .init import init_argv
from .ls import ls_argv
from .output import (
    BackupOutput,
    BackupSummary,
    Diff,
    ForgetResult,
    Listing,
    Node,
    Progress,
    RestoreOutput,
    RestoreSummary,
    Snapshot,
    Stats,
    json_line,
    read_diff,
    read_forget,
    read_snapshots,
    read_stats,
)
from .prune import prune_argv
from .repository import Repository
from .restore import restore_argv
from .run import BACKUP_EXIT_CODES, LOCK_WAIT, run_restic, stderr_tail_is_full
from .snapshots import snapshots_argv
from .stats import stats_argv
from .unlock import unlock_argv
from .values import HELPLINE_TAG
from .version import Restic

logger = logging.getLogger("helpline.snapshots.restic")

#: Seconds for the commands that only read the repository's index (listings, probes, unlock).
QUICK_TIMEOUT = 10 * 60.0
#: Seconds for the commands that move data (backup, restore, check, prune); generous, but never unbounded.
LONG_TIMEOUT = 12 * 3600.0
#: Nodes a listing returns at most unless the caller says otherwise.
LIST_LIMIT = 10_000


class _Enough(Exception):
    """Raised by a listing's reader to stop restic once the caller has all the nodes it wanted."""


def init(restic: Restic, repository: Repository, *, timeout: float = QUICK_TIMEOUT) -> None:
    """Create ``repository`` with the password in its password file."""
    run_restic(restic, repository, init_argv(restic, repository), timeout=timeout, retry_locked=False)


def exists(restic: Restic, repository: Repository, *, timeout: float = QUICK_TIMEOUT) -> bool:
    """Return True if a repository opens at ``repository``'s location, False if there is none there.

    Raise :class:`~.errors.WrongPassword` if there is one but the password does not open it.
    """
    try:
        run_restic(restic, repository, cat_config_argv(restic, repository), timeout=timeout, retry_locked=False)
    except RepositoryMissing:
        return False
    return True


def backup(
    restic: Restic,
    repository: Repository,
    *,
    host: str,
    paths: Iterable[str | PurePath],
    tags: Iterable[str] = (),
    excludes: Iterable[str] = (),
    exclude_files: Iterable[str | PurePath] = (),
    one_file_system: bool = False,
    use_fs_snapshot: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float = LONG_TIMEOUT,
    lock_wait: float = LOCK_WAIT,
    time: datetime | None = None,
) -> BackupSummary:
    """Snapshot ``paths`` of ``host`` and return what the snapshot holds.

    A snapshot made without some unreadable files is returned with
    ``outcome`` WARNING and the files named (and logged as a warning).
    """
    argv = backup_argv(
        restic, repository, host=host, paths=paths, tags=tags, excludes=excludes, exclude_files=exclude_files,
        one_file_system=one_file_system, use_fs_snapshot=use_fs_snapshot, retry_lock=lock_wait, time=time,
    )
    reader = BackupOutput(on_progress)
    done = run_restic(restic, repository, argv, timeout=timeout, exit_codes=BACKUP_EXIT_CODES, on_line=reader,
                      cancel=cancel, lock_wait=lock_wait)
    summary = reader.result(done.outcome, done.execution.stderr_tail,
                            tail_full=stderr_tail_is_full(done.execution))
    if summary.warning:
        logger.warning("%s", summary.warning)
    return summary


def snapshots(
    restic: Restic,
    repository: Repository,
    *,
    host: str | None = None,
    tags: Iterable[str] = (HELPLINE_TAG,),
    paths: Iterable[str | PurePath] = (),
    no_lock: bool = False,
    timeout: float = QUICK_TIMEOUT,
    lock_wait: float = LOCK_WAIT,
) -> tuple[Snapshot, ...]:
    """Return the snapshots of ``host`` with all ``tags`` and ``paths``, oldest first."""
    argv = snapshots_argv(restic, repository, host=host, tags=tags, paths=paths, no_lock=no_lock,
                          retry_lock=None if no_lock else lock_wait)
    done = run_restic(restic, repository, argv, timeout=timeout, lock_wait=lock_wait)
    return read_snapshots(done.stdout)


def restore(
    restic: Restic,
    repository: Repository,
    *,
    snapshot: str,
    target: str | PurePath,
    includes: Iterable[str | PurePath] = (),
    host: str | None = None,
    paths: Iterable[str | PurePath] = (),
    no_lock: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float = LONG_TIMEOUT,
    lock_wait: float = LOCK_WAIT,
) -> RestoreSummary:
    """Restore ``snapshot`` (an id, or ``latest`` of ``host`` and ``paths``) under ``target``; only ``includes``
    when named. ``no_lock`` for a repository this PC may only read (a replacement restore)."""
    argv = restore_argv(restic, repository, snapshot=snapshot, target=target, includes=includes, host=host,
                        paths=paths, no_lock=no_lock, retry_lock=None if no_lock else lock_wait)
    reader = RestoreOutput(str(target), on_progress)
    run_restic(restic, repository, argv, timeout=timeout, on_line=reader, cancel=cancel, lock_wait=lock_wait)
    return reader.result()


def ls(
    restic: Restic,
    repository: Repository,
    *,
    snapshot: str,
    folders: Iterable[str | PurePath] = (),
    recursive: bool = False,
    host: str | None = None,
    paths: Iterable[str | PurePath] = (),
    limit: int = LIST_LIMIT,
    no_lock: bool = False,
    timeout: float = QUICK_TIMEOUT,
    lock_wait: float = LOCK_WAIT,
) -> Listing:
    """Return the files of ``folders`` in ``snapshot`` (all of it when none are named), at most ``limit`` nodes."""
    argv = ls_argv(restic, repository, snapshot=snapshot, folders=folders, recursive=recursive, host=host,
                   paths=paths, no_lock=no_lock, retry_lock=None if no_lock else lock_wait)
    found: dict[str, Snapshot | None] = {"snapshot": None}
    nodes: list[Node] = []

    def read(line: str) -> None:
        value = json_line(line)
        if value is None:
            return
        if value.get("struct_type") == "snapshot" or (value.get("message_type") == "snapshot"):
            found["snapshot"] = Snapshot.from_json(value)
        elif value.get("struct_type") == "node" or value.get("message_type") == "node":
            if len(nodes) >= limit:
                raise _Enough
            nodes.append(Node.from_json(value))

    try:
        run_restic(restic, repository, argv, timeout=timeout, on_line=read, lock_wait=lock_wait)
    except _Enough:
        return Listing(found["snapshot"], tuple(nodes), truncated=True)
    return Listing(found["snapshot"], tuple(nodes))


def forget(
    restic: Restic,
    repository: Repository,
    *,
    host: str,
    retention: Retention,
    prune: bool = False,
    cancel: threading.Event | None = None,
    timeout: float = LONG_TIMEOUT,
    lock_wait: float = LOCK_WAIT,
) -> ForgetResult:
    """Forget ``host``'s Helpline snapshots outside ``retention`` (and prune, if asked); return kept and removed."""
    argv = forget_argv(restic, repository, host=host, retention=retention, prune=prune, retry_lock=lock_wait)
    done = run_restic(restic, repository, argv, timeout=timeout, cancel=cancel, lock_wait=lock_wait)
    # With --prune, restic prints prune's text after forget's JSON; only the JSON line is read.
    document = next((line for line in done.lines if line.lstrip().startswith("[")), "")
    return read_forget(document)


def prune(
    restic: Restic, repository: Repository, *, cancel: threading.Event | None = None,
    timeout: float = LONG_TIMEOUT, lock_wait: float = LOCK_WAIT,
) -> None:
    """Remove the data no snapshot refers to any more."""
    run_restic(restic, repository, prune_argv(restic, repository, retry_lock=lock_wait), timeout=timeout,
               on_line=_discard, cancel=cancel, lock_wait=lock_wait)


def check(
    restic: Restic, repository: Repository, *, read_data_subset: str | None = None,
    cancel: threading.Event | None = None, timeout: float = LONG_TIMEOUT, lock_wait: float = LOCK_WAIT,
) -> None:
    """Check the repository's structure (and read back ``read_data_subset`` of its data); raise
    :class:`~.errors.RepositoryDamaged` if restic finds errors."""
    argv = check_argv(restic, repository, read_data_subset=read_data_subset, retry_lock=lock_wait)
    run_restic(restic, repository, argv, timeout=timeout, on_line=_discard, cancel=cancel, lock_wait=lock_wait)


def unlock(restic: Restic, repository: Repository, *, timeout: float = QUICK_TIMEOUT) -> None:
    """Remove the locks restic itself deems stale. The runner prefers :func:`~.run.clear_stale_locks`,
    which never touches another host's lock."""
    run_restic(restic, repository, unlock_argv(restic, repository), timeout=timeout, retry_locked=False)


def diff(
    restic: Restic, repository: Repository, *, before: str, after: str, no_lock: bool = False,
    timeout: float = QUICK_TIMEOUT, lock_wait: float = LOCK_WAIT,
) -> Diff:
    """Return what changed from snapshot ``before`` to snapshot ``after``."""
    argv = diff_argv(restic, repository, before=before, after=after, no_lock=no_lock,
                     retry_lock=None if no_lock else lock_wait)
    done = run_restic(restic, repository, argv, timeout=timeout, lock_wait=lock_wait)
    return read_diff(done.lines)


def stats(
    restic: Restic, repository: Repository, *, snapshots: Iterable[str] = (), mode: str = "restore-size",
    host: str | None = None, paths: Iterable[str | PurePath] = (), no_lock: bool = False,
    timeout: float = QUICK_TIMEOUT, lock_wait: float = LOCK_WAIT,
) -> Stats:
    """Return restic's size count of ``snapshots`` (all of ``host`` and ``paths`` when none are named)."""
    argv = stats_argv(restic, repository, snapshots=snapshots, mode=mode, host=host, paths=paths, no_lock=no_lock,
                      retry_lock=None if no_lock else lock_wait)
    done = run_restic(restic, repository, argv, timeout=timeout, lock_wait=lock_wait)
    return read_stats(done.stdout)


def _discard(line: str) -> None:
    """A reader for text output nobody needs (prune's and check's reports): streamed, not held."""


__all__ = [
    "LIST_LIMIT", "LONG_TIMEOUT", "QUICK_TIMEOUT", "backup", "check", "diff", "exists", "forget",
    "init", "ls", "prune", "restore", "snapshots", "stats", "unlock",
]
