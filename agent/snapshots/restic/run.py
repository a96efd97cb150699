"""Run a built restic argv through the agent's one executor and say what the result means.

Restic is stopped with SIGINT, never SIGTERM: on SIGINT it removes its own lock,
on SIGTERM 0.14 leaves a stale one behind. Exit statuses are read from a table
(newer restic's 10/11/12 included) and, for 0.14, which says everything with
exit 1, from the known stderr lines; each kind of failure is its own error
class with a one-line message and a hint. A lock conflict is retried here on
0.14 (bounded, with back-off) and left to ``--retry-lock`` on newer restic; a
stale lock is cleared only when it is this host's and its process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ...execute import STDERR_TAIL_BYTES, Execution, Outcome, process_exists, run
from .cat import cat_lock_argv
from .errors import (
    RepositoryDamaged,
    RepositoryLocked,
    RepositoryMissing,
    ResticCancelled,
    ResticError,
    WrongPassword,
)
from .list_locks import list_locks_argv
from .output import LockInfo, json_line, read_lock
from .repository import Repository, child_env
from .unlock import unlock_argv
from .version import Restic

logger = logging.getLogger("helpline.snapshots.restic")

#: How most restic commands end: 0 is success, anything else an error.
SUCCESS: Mapping[int, Outcome] = {0: Outcome.OK}
#: How a backup ends: 3 means the snapshot was made but some files could not be read.
BACKUP_EXIT_CODES: Mapping[int, Outcome] = {0: Outcome.OK, 3: Outcome.WARNING}
#: Exit codes restic 0.17 gives the failures 0.14 only tells apart in its stderr.
FAILURE_EXIT_CODES: Mapping[int, type[ResticError]] = {
    10: RepositoryMissing,
    11: RepositoryLocked,
    12: WrongPassword,
}
#: Lines of restic's stderr that tell a failure apart, checked in order (restic 0.14 exits 1 for all of them).
FAILURE_SIGNS: tuple[tuple[type[ResticError], tuple[str, ...]], ...] = (
    (WrongPassword, ("wrong password or no key found",)),
    (RepositoryMissing, ("unable to open config file", "Is there a repository at the following location?")),
    (RepositoryLocked, ("repository is already locked",)),
    (RepositoryDamaged, ("repository contains errors",)),
)

#: Seconds a run waits for a lock held by another restic, in all.
LOCK_WAIT = 60.0
#: Attempts at most while a lock is held (restic 0.14, which does not wait by itself).
LOCK_ATTEMPTS = 6
#: Seconds before the first retry of a locked run; doubled each time up to LOCK_BACKOFF_MAX.
LOCK_BACKOFF = 1.0
LOCK_BACKOFF_MAX = 15.0
#: Seconds for the commands that read locks; ``cat lock`` of a lock removed meanwhile retries for long.
LOCK_READ_TIMEOUT = 20.0
#: Restic deems a lock older than this stale whoever holds it (its own rule, 0.14 and newer).
RESTIC_STALE_AFTER = timedelta(minutes=30)
#: Seconds restic gets after SIGINT to remove its lock before it is killed.
STOP_GRACE = 15.0
#: Stdout read back when no reader streams it.
COLLECT_MAX_BYTES = 64 * 1024 * 1024

_LOCK_HOLDER = re.compile(r"already locked (?:exclusively )?by PID (\d+) on (\S+)")
_IS_WINDOWS = os.name == "nt"


@dataclass(frozen=True)
class Completed:
    """A restic run that ended as the table allows: ``outcome`` OK or WARNING, and its stdout lines
    when nobody streamed them (empty when a reader did)."""

    execution: Execution
    outcome: Outcome
    lines: tuple[str, ...] = ()

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)


def subcommand(argv: Sequence[str]) -> str:
    """The restic subcommand of ``argv``, for messages (``cat config``, ``list locks`` in two words)."""
    words = [argv[1]] if len(argv) > 1 else ["?"]
    if words[0] in ("cat", "list") and len(argv) > 2:
        words.append(next((arg for arg in argv[2:] if arg in ("config", "lock", "locks")), ""))
    return " ".join(word for word in words if word)


def failure_of(restic: Restic, repository: Repository, done: Execution) -> ResticError:
    """Return the error a failed run means: from the exit code where restic has the table, else from stderr."""
    kind: type[ResticError] = ResticError
    if restic.features.exit_codes and done.exit_code in FAILURE_EXIT_CODES:
        kind = FAILURE_EXIT_CODES[done.exit_code]
    else:
        text_lines = [line for line in done.stderr_tail.splitlines() if json_line(line) is None]
        text = "\n".join(text_lines)
        kind = next((cls for cls, signs in FAILURE_SIGNS if any(sign in text for sign in signs)), ResticError)
    what = subcommand(done.argv)
    where = repository.display
    hint = None
    if done.cancelled:
        kind, message = ResticCancelled, f"restic {what} was cancelled"
    elif done.timed_out:
        message = f"restic {what} did not finish within {done.duration:.0f} s and was stopped"
        hint = "a larger timeout, or a smaller set of files, lets it finish"
    elif done.stopped_at_cap:
        message = f"restic {what} printed more than Helpline reads and was stopped"
    elif kind is RepositoryMissing:
        message = f"there is no restic repository at {where}"
        hint = "check the repository's location; a new repository must be initialised first"
    elif kind is WrongPassword:
        message = f"the password in {repository.password_file} does not open the restic repository at {where}"
        hint = "use the password file that belongs to this repository"
    elif kind is RepositoryLocked:
        holder = _LOCK_HOLDER.search(done.stderr_tail)
        by = f" by process {holder[1]} on {holder[2]}" if holder else ""
        message = f"the restic repository at {where} is locked{by}"
        hint = "another restic run is using it; try again when it has finished"
    elif kind is RepositoryDamaged:
        message = f"restic found errors in the repository at {where}"
        hint = "restore what matters from a snapshot while you can, and start a fresh repository"
    else:
        last = _last_text_line(done.stderr_tail)
        message = f"restic {what} failed with exit status {done.exit_code}" + (f": {last}" if last else "")
    return kind(message, command=done.command, exit_code=done.exit_code, stderr_tail=done.stderr_tail, hint=hint)


def run_restic(
    restic: Restic,
    repository: Repository,
    argv: Sequence[str],
    *,
    timeout: float | None,
    exit_codes: Mapping[int, Outcome] = SUCCESS,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    max_bytes: int | None = None,
    lock_wait: float = LOCK_WAIT,
    retry_locked: bool = True,
) -> Completed:
    """Run ``argv`` (built for ``restic`` and ``repository``) and return it if it ended as ``exit_codes`` allow.

    stdout goes line by line to ``on_line``, or is collected into the result.
    When the repository is locked, a stale lock of this host is cleared once and
    the run retried; on restic 0.14 other locks are waited for with back-off for
    up to ``lock_wait`` seconds (newer restic waits by itself with
    ``--retry-lock``). Raise a :class:`ResticError` subclass for any failure
    of restic, and the executor's CommandError when it cannot start at all.
    """
    give_up_at = time.monotonic() + lock_wait
    cleared = False
    attempt = 0
    while True:
        attempt += 1
        # Unstreamed output goes through a private file: restic prints some documents (the snapshot list)
        # as one line, longer than a line reader takes.
        with tempfile.TemporaryDirectory(prefix="helpline-restic-") as folder:
            collected = None if on_line is not None else Path(folder) / "stdout"
            done = run(
                argv, timeout=timeout, output=collected, on_line=on_line,
                max_bytes=max_bytes if max_bytes is not None or on_line is not None else COLLECT_MAX_BYTES,
                env=child_env(repository), cancel=cancel, stop_signal=signal.SIGINT, grace=STOP_GRACE,
                secrets=repository.secrets,
            )
            text = collected.read_text(errors="replace") if collected is not None and collected.exists() else ""
        if not done.started:
            done.check()  # raises: restic missing or not startable
        outcome = done.outcome(exit_codes)
        if outcome is not Outcome.ERROR:
            return Completed(done, outcome, tuple(text.splitlines()))
        error = failure_of(restic, repository, done)
        if not isinstance(error, RepositoryLocked) or not retry_locked:
            raise error
        if not cleared:
            cleared = True
            if _cleared_stale_locks(restic, repository, cancel):
                continue
        delay = min(LOCK_BACKOFF_MAX, LOCK_BACKOFF * 2 ** (attempt - 1))
        if restic.features.retry_lock or attempt >= LOCK_ATTEMPTS or time.monotonic() + delay > give_up_at:
            raise error
        logger.info("%s is locked; trying again in %.0f s", repository.display, delay)
        if _wait(cancel, delay):
            raise ResticCancelled(f"restic {subcommand(argv)} was cancelled while waiting for a lock",
                                  command=done.command, exit_code=None, stderr_tail=done.stderr_tail)


def read_locks(restic: Restic, repository: Repository, *, cancel: threading.Event | None = None) -> tuple[LockInfo, ...]:
    """Return the repository's locks; a lock removed while they are read is left out."""
    listed = run_restic(restic, repository, list_locks_argv(restic, repository), timeout=LOCK_READ_TIMEOUT,
                        cancel=cancel, retry_locked=False)
    locks = []
    for lock_id in (line.strip() for line in listed.lines if line.strip()):
        try:
            shown = run_restic(restic, repository, cat_lock_argv(restic, repository, lock_id),
                               timeout=LOCK_READ_TIMEOUT, cancel=cancel, retry_locked=False)
        except ResticCancelled:
            raise
        except ResticError:
            logger.debug("lock %s went away while being read", lock_id[:10])
            continue
        locks.append(read_lock(lock_id, shown.stdout))
    return tuple(locks)


def clear_stale_locks(
    restic: Restic, repository: Repository, *, cancel: threading.Event | None = None, host: str | None = None,
    now: datetime | None = None,
) -> tuple[LockInfo, ...]:
    """Remove the locks of this host whose process is gone, and return them; never another host's lock.

    Restic's ``unlock`` removes every lock it deems stale, which includes any
    lock older than 30 minutes, another host's too; so it is called only when
    every lock it would remove is one of ours with its process gone.
    """
    host = host or this_host()
    now = now or datetime.now(timezone.utc)
    locks = read_locks(restic, repository, cancel=cancel)
    ours_dead = [lock for lock in locks if lock.hostname == host and not process_alive(lock.pid)]
    if not ours_dead:
        return ()
    too_old = [lock for lock in locks if lock not in ours_dead and now - lock.time > RESTIC_STALE_AFTER]
    if too_old:
        logger.warning(
            "not clearing the stale lock of %s: restic would also remove the old lock of %s",
            repository.display, ", ".join(f"process {lock.pid} on {lock.hostname}" for lock in too_old),
        )
        return ()
    run_restic(restic, repository, unlock_argv(restic, repository), timeout=LOCK_READ_TIMEOUT, cancel=cancel,
               retry_locked=False)
    for lock in ours_dead:
        logger.info("removed the stale lock of process %s on this host from %s", lock.pid, repository.display)
    return tuple(ours_dead)


def _cleared_stale_locks(restic: Restic, repository: Repository, cancel: threading.Event | None) -> bool:
    """Clear this host's stale locks for a locked run; a failure to do so leaves the run to wait, not to fail."""
    try:
        return bool(clear_stale_locks(restic, repository, cancel=cancel))
    except ResticCancelled:
        raise
    except ResticError as exc:  # e.g. a read-only credential may not remove locks
        logger.warning("could not look for stale locks in %s: %s", repository.display, exc.message)
        return False


def this_host() -> str:
    """The host name restic writes into its locks (Go's ``os.Hostname``: the kernel's node name)."""
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (as restic checks it: signal 0).

    On Windows, and for a pid that names no process, the check is not made and the
    process counts as alive, so a lock is never removed there on a guess.
    """
    return _IS_WINDOWS or pid <= 0 or process_exists(pid)


def stderr_tail_is_full(done: Execution) -> bool:
    """True when restic's stderr went past what the executor keeps, so earlier lines are lost."""
    return len(done.stderr_tail.encode()) >= STDERR_TAIL_BYTES - 256


def _last_text_line(stderr_tail: str) -> str:
    """The last non-JSON line of stderr, without restic's ``Fatal:`` prefix, for a one-line message."""
    for line in reversed(stderr_tail.strip().splitlines()):
        line = line.replace("\x1b[2K", "").strip()
        if line and json_line(line) is None:
            return line.removeprefix("Fatal: ")[:300]
    return ""


def _wait(cancel: threading.Event | None, seconds: float) -> bool:
    """Sleep ``seconds``; return True at once if ``cancel`` is set meanwhile."""
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)
