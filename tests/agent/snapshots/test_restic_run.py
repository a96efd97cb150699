"""The runner's lock handling, bounded in attempts and time, with a stand-in restic that is locked on demand.

The stand-in is a shell script: ``list locks`` prints no locks (or fails), and any other
command fails with restic 0.14's lock message (or 0.17's exit code 11) until
it has been tried a given number of times.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.snapshots.restic import run as restic_run
from agent.snapshots.restic.backup import backup_argv
from agent.snapshots.restic.errors import RepositoryLocked, ResticCancelled
from agent.snapshots.restic.operations import backup
from agent.snapshots.restic.output import LockInfo
from agent.snapshots.restic.repository import Repository
from agent.snapshots.restic.version import Restic, Version

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-in restic is a shell script")

SCRIPT = """#!/bin/sh
case " $* " in *" list "*) echo "Fatal: listing locks: permission denied" >&2; exit {list_exit} ;; esac
echo "$*" >> "{log}"
tries=$(wc -l < "{log}")
if [ "$tries" -le "{locked_for}" ]; then
    echo "unable to create lock in backend: repository is already locked by PID 77 on far-pc by ann" >&2
    exit {exit_code}
fi
echo '{{"message_type":"summary","files_new":1,"total_duration":0.1,"snapshot_id":"0a1b2c3d"}}'
"""


def stand_in(tmp_path: Path, *, locked_for: int, version: Version, exit_code: int = 1,
             list_exit: int = 0) -> tuple[Restic, Path]:
    log = tmp_path / "attempts.log"
    log.write_text("")
    script = tmp_path / "restic"
    script.write_text(SCRIPT.format(log=log, locked_for=locked_for, exit_code=exit_code, list_exit=list_exit))
    script.chmod(0o755)
    return Restic(str(script), version), log


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(str(tmp_path / "repo"), tmp_path / "pw")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF", 0.05)
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF_MAX", 0.2)


def attempts(log: Path) -> int:
    return len(log.read_text().splitlines())


def test_restic_014_is_retried_until_the_lock_is_free(tmp_path, repo):
    restic, log = stand_in(tmp_path, locked_for=3, version=Version(0, 14, 0))
    summary = backup(restic, repo, host="pc", paths=["/home/ann"], timeout=10, lock_wait=20)
    assert summary.snapshot_id == "0a1b2c3d"
    assert attempts(log) == 4


def test_locks_that_cannot_be_read_leave_the_run_waiting_not_failing(tmp_path, repo):
    restic, log = stand_in(tmp_path, locked_for=2, version=Version(0, 14, 0), list_exit=1)
    assert backup(restic, repo, host="pc", paths=["/home/ann"], timeout=10, lock_wait=20).snapshot_id == "0a1b2c3d"
    assert attempts(log) == 3


def test_restic_014_gives_up_after_a_bounded_number_of_attempts(tmp_path, repo):
    restic, log = stand_in(tmp_path, locked_for=1000, version=Version(0, 14, 0))
    started = time.monotonic()
    with pytest.raises(RepositoryLocked) as raised:
        backup(restic, repo, host="pc", paths=["/home/ann"], timeout=10, lock_wait=60)
    assert attempts(log) == restic_run.LOCK_ATTEMPTS
    assert time.monotonic() - started < 20
    assert raised.value.message == f"the restic repository at {repo.location} is locked by process 77 on far-pc"


def test_restic_014_gives_up_when_the_lock_wait_is_over(tmp_path, repo, monkeypatch):
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF", 1.0)
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF_MAX", 1.0)
    restic, log = stand_in(tmp_path, locked_for=1000, version=Version(0, 14, 0))
    with pytest.raises(RepositoryLocked):
        backup(restic, repo, host="pc", paths=["/home/ann"], timeout=10, lock_wait=1.5)
    assert 1 <= attempts(log) <= 2


def test_newer_restic_waits_itself_so_the_runner_does_not_loop(tmp_path, repo):
    restic, log = stand_in(tmp_path, locked_for=1000, version=Version(0, 17, 0), exit_code=11)
    with pytest.raises(RepositoryLocked):
        backup(restic, repo, host="pc", paths=["/home/ann"], timeout=10, lock_wait=45)
    assert attempts(log) == 1
    assert "--retry-lock 45s" in log.read_text()


def test_waiting_for_a_lock_ends_at_once_when_cancelled(tmp_path, repo, monkeypatch):
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF", 30.0)
    monkeypatch.setattr(restic_run, "LOCK_BACKOFF_MAX", 30.0)
    restic, log = stand_in(tmp_path, locked_for=1000, version=Version(0, 14, 0))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(ResticCancelled):
        restic_run.run_restic(restic, repo, backup_argv(restic, repo, host="pc", paths=["/a"]), timeout=10,
                              cancel=cancel, lock_wait=120)
    assert time.monotonic() - started < 10
    assert attempts(log) == 1


def test_a_run_that_may_not_retry_fails_at_the_first_lock(tmp_path, repo):
    restic, log = stand_in(tmp_path, locked_for=1000, version=Version(0, 14, 0))
    with pytest.raises(RepositoryLocked):
        restic_run.run_restic(restic, repo, backup_argv(restic, repo, host="pc", paths=["/a"]), timeout=10,
                              retry_locked=False)
    assert attempts(log) == 1


def lock(host: str, pid: int, age: timedelta, now: datetime) -> LockInfo:
    return LockInfo(f"{pid:064x}", host, pid, now - age, exclusive=True)


@pytest.mark.parametrize(("others", "unlocks"), [
    ([], True),
    ([("far-pc", "alive", timedelta(minutes=5))], True),  # another host's live, young lock: restic keeps it
    ([("far-pc", "dead", timedelta(minutes=31))], False),  # restic's unlock would remove it too: so no unlock
    ([("this-pc", "alive", timedelta(minutes=45))], False),  # ours, but alive and old: restic would remove it
])
def test_a_stale_lock_is_cleared_only_when_restic_would_remove_nothing_else(tmp_path, repo, monkeypatch, others,
                                                                              unlocks):
    now = datetime(2026, 12, 2, 7, 0, tzinfo=timezone.utc)
    alive = os.getpid()
    dead = _a_dead_pid()
    ours = lock("this-pc", dead, timedelta(minutes=2), now)
    locks = (ours, *(lock(host, alive if state == "alive" else dead, age, now) for host, state, age in others))
    ran = []
    monkeypatch.setattr(restic_run, "read_locks", lambda *a, **k: locks)
    monkeypatch.setattr(restic_run, "run_restic", lambda restic, repository, argv, **k: ran.append(argv[1]))
    restic = Restic("restic", Version(0, 14, 0))
    removed = restic_run.clear_stale_locks(restic, repo, host="this-pc", now=now)
    assert (removed == (ours,)) is unlocks
    assert ran == (["unlock"] if unlocks else [])


def test_a_live_process_of_this_host_keeps_its_lock(tmp_path, repo, monkeypatch):
    now = datetime(2026, 12, 2, 7, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(restic_run, "read_locks", lambda *a, **k: (lock("this-pc", os.getpid(), timedelta(0), now),))
    monkeypatch.setattr(restic_run, "run_restic", lambda *a, **k: pytest.fail("unlock must not run"))
    assert restic_run.clear_stale_locks(Restic("restic", Version(0, 14, 0)), repo, host="this-pc", now=now) == ()


def _a_dead_pid() -> int:
    """A pid that no process has: one that just ended and was reaped."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    assert not restic_run.process_alive(child.pid)
    return child.pid


def test_a_snapshot_list_longer_than_a_line_reader_takes_is_read_whole(tmp_path, repo):
    from agent.execute import MAX_LINE_BYTES
    from agent.snapshots.restic.operations import snapshots

    one = ('{"time":"2026-12-02T06:25:53.21397563Z","paths":["/home/ann"],"hostname":"pc","tags":["helpline"],'
           '"id":"%064x","short_id":"%08x","padding":"' + "x" * 900 + '"}')
    count = MAX_LINE_BYTES // 1000 + 50
    listing = tmp_path / "list.json"
    listing.write_text("[" + ",".join(one % (i, i) for i in range(count)) + "]\n")
    script = tmp_path / "restic"
    script.write_text(f'#!/bin/sh\ncat "{listing}"\n')
    script.chmod(0o755)
    found = snapshots(Restic(str(script), Version(0, 14, 0)), repo, host="pc", timeout=10)
    assert listing.stat().st_size > MAX_LINE_BYTES
    assert len(found) == count and found[-1].short_id == f"{count - 1:08x}"
