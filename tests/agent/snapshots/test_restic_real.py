"""The restic wrapper against the real restic binary and a temporary local repository.

Small generated trees and a timeout on every restic run keep each test to a
few seconds. Locks are made by real restic processes: ``restic key passwd``
takes an exclusive lock and then waits for a new password on stdin, which it
never gets; another host's lock comes from a UTS namespace with another name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.execute import Outcome
from agent.snapshots import restic as R
from agent.snapshots.restic import run as restic_run

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")

HOST = "pc-test"
T = 60.0  # seconds any one restic run may take here


@pytest.fixture
def restic() -> R.Restic:
    return R.detect("restic")


@pytest.fixture
def tree(tmp_path) -> Path:
    """A small tree of mixed files, the same every run."""
    rng = random.Random(20261202)
    root = tmp_path / "home" / "ann"
    for folder in ("Documents", "Pictures/2026", "Music"):
        (root / folder).mkdir(parents=True)
    (root / "Documents" / "report.odt").write_bytes(rng.randbytes(48_000))
    (root / "Documents" / "notes.txt").write_text("remember the milk\n" * 50)
    (root / "Pictures" / "2026" / "cat.jpg").write_bytes(rng.randbytes(120_000))
    (root / "Music" / "empty.flac").write_bytes(b"")
    return root


@pytest.fixture
def repo(tmp_path, restic) -> R.Repository:
    password_file = R.ensure_password_file(tmp_path / "keys", "local")
    repository = R.Repository(str(tmp_path / "repo"), password_file, cache_dir=tmp_path / "cache")
    R.init(restic, repository, timeout=T)
    return repository


def restic_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for_locks(restic, repo, count: int = 1) -> tuple[R.LockInfo, ...]:
    """Wait (at most 20 s) until the repository has ``count`` locks."""
    until = time.monotonic() + 20
    while time.monotonic() < until:
        locks = R.read_locks(restic, repo)
        if len(locks) >= count:
            return locks
        time.sleep(0.2)
    raise AssertionError("restic never took its lock")


def hold_exclusive_lock(restic, repo, *, hostname: str | None = None) -> subprocess.Popen:
    """Start a restic that takes an exclusive lock and then waits on stdin (for a new password it never gets)."""
    argv = [restic.program, "key", "passwd", "--repo", repo.location, "--password-file", str(repo.password_file)]
    if hostname is not None:
        argv = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$0" "$@"', *argv]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=restic_env(), start_new_session=True)
    wait_for_locks(restic, repo)
    return holder


def kill(holder: subprocess.Popen) -> None:
    """Kill a lock holder outright (no chance to remove its lock) and reap it, so its pid is gone."""
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)


def can_rename_host() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--uts", "hostname", "otherpc"], capture_output=True, timeout=10).returncode == 0


def test_backup_list_browse_and_restore_a_deleted_file_byte_identical(restic, repo, tree, tmp_path):
    progress: list[R.Progress] = []
    summary = R.backup(restic, repo, host=HOST, paths=[tree], on_progress=progress.append, timeout=T)
    assert summary.outcome is Outcome.OK and summary.warning is None
    assert summary.files_new == 4 and summary.files_changed == 0
    assert summary.total_bytes_processed == 48_000 + 900 + 120_000
    assert summary.data_added > 0 and summary.total_duration > 0
    assert progress and all(0.0 <= p.percent <= 100.0 for p in progress)

    [snapshot] = R.snapshots(restic, repo, host=HOST, timeout=T)
    assert snapshot.short_id == summary.snapshot_id and snapshot.id.startswith(summary.snapshot_id)
    assert snapshot.hostname == HOST and snapshot.tags == ("helpline",) and snapshot.paths == (str(tree),)
    assert R.snapshots(restic, repo, host="another-pc", timeout=T) == ()

    listing = R.ls(restic, repo, snapshot="latest", host=HOST, folders=[tree / "Documents"], timeout=T)
    assert listing.snapshot is not None and listing.snapshot.id == snapshot.id
    names = {node.path: node for node in listing.nodes}
    assert names[str(tree / "Documents" / "report.odt")].size == 48_000
    assert str(tree / "Pictures" / "2026" / "cat.jpg") not in names  # one folder, not the whole tree
    whole = R.ls(restic, repo, snapshot=snapshot.id, recursive=True, limit=3, timeout=T)
    assert whole.truncated and len(whole.nodes) == 3

    lost = tree / "Documents" / "report.odt"
    expected = digest(lost)
    lost.unlink()
    target = tmp_path / "restored"
    restored = R.restore(restic, repo, snapshot="latest", host=HOST, paths=[tree], target=target,
                         includes=[lost], timeout=T)
    assert restored.snapshot_id == summary.snapshot_id
    copy = target / lost.relative_to(lost.anchor)
    assert digest(copy) == expected
    assert not (target / (tree / "Pictures").relative_to(tree.anchor)).exists()  # only what was asked for

    stats = R.stats(restic, repo, snapshots=[snapshot.id], timeout=T)
    assert stats.total_size == 48_000 + 900 + 120_000


def test_retention_forgets_only_this_hosts_helpline_snapshots_and_the_repository_checks(restic, repo, tree):
    made = []
    for round_ in range(3):
        (tree / "Documents" / "notes.txt").write_text(f"round {round_}\n")
        made.append(R.backup(restic, repo, host=HOST, paths=[tree], timeout=T).snapshot_id)
    other = R.backup(restic, repo, host="other-pc", paths=[tree], timeout=T).snapshot_id
    first, second, third = R.snapshots(restic, repo, host=HOST, timeout=T)
    changes = R.diff(restic, repo, before=first.id, after=second.id, timeout=T)
    assert [(c.path, c.modifier) for c in changes.changes] == [(str(tree / "Documents" / "notes.txt"), "M")]

    result = R.forget(restic, repo, host=HOST, retention=R.Retention(last=2), prune=True, timeout=T)
    assert result.removed == (first.id,)
    assert set(result.kept) == {second.id, third.id}
    assert [s.short_id for s in R.snapshots(restic, repo, host=HOST, timeout=T)] == made[1:]
    assert [s.short_id for s in R.snapshots(restic, repo, host="other-pc", timeout=T)] == [other]
    R.check(restic, repo, read_data_subset="1/1", timeout=T)
    R.prune(restic, repo, timeout=T)


def test_a_wrong_password_and_a_missing_repository_are_each_their_own_one_line_error(restic, repo, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    with pytest.raises(R.WrongPassword) as raised:
        R.snapshots(restic, R.Repository(repo.location, wrong), timeout=T)
    assert raised.value.status == R.WrongPassword.status and "\n" not in raised.value.message
    assert "does not open the restic repository" in raised.value.message
    assert "wrong password" in raised.value.stderr_tail

    missing = R.Repository(str(tmp_path / "nowhere"), repo.password_file)
    with pytest.raises(R.RepositoryMissing) as raised:
        R.backup(restic, missing, host=HOST, paths=[tmp_path], timeout=T)
    assert raised.value.message == f"there is no restic repository at {tmp_path / 'nowhere'}"
    assert raised.value.hint
    assert R.exists(restic, repo, timeout=T) is True
    assert R.exists(restic, missing, timeout=T) is False
    with pytest.raises(R.WrongPassword):
        R.exists(restic, R.Repository(repo.location, wrong), timeout=T)


def test_a_lock_left_by_a_dead_process_of_this_host_is_removed_and_the_backup_succeeds(
        restic, repo, tree, caplog):
    holder = hold_exclusive_lock(restic, repo)
    [lock] = R.read_locks(restic, repo)
    assert lock.exclusive and lock.pid == holder.pid and lock.hostname == restic_run.this_host()
    kill(holder)
    with caplog.at_level(logging.INFO, logger="helpline.snapshots.restic"):
        summary = R.backup(restic, repo, host=HOST, paths=[tree], timeout=T, lock_wait=5)
    assert summary.outcome is Outcome.OK
    assert R.read_locks(restic, repo) == ()
    assert any(f"removed the stale lock of process {holder.pid}" in r.getMessage() for r in caplog.records)


def test_a_live_lock_is_waited_for_and_the_backup_then_succeeds(restic, repo, tree):
    holder = hold_exclusive_lock(restic, repo)
    # The holder ends (and removes its lock) when its stdin closes, a little after the backup has met the lock.
    release = threading.Timer(2.0, holder.stdin.close)
    release.start()
    try:
        started = time.monotonic()
        summary = R.backup(restic, repo, host=HOST, paths=[tree], timeout=T, lock_wait=30)
        assert summary.outcome is Outcome.OK
        assert time.monotonic() - started >= 1.5  # it did wait
    finally:
        release.cancel()
        holder.wait(timeout=20)


@pytest.mark.skipif(not can_rename_host(), reason="needs a UTS namespace (unshare) to look like another host")
def test_another_hosts_lock_is_left_alone_and_reported_as_locked(restic, repo, tree):
    holder = hold_exclusive_lock(restic, repo, hostname="otherpc")
    kill(holder)  # even with its process gone here, the lock is another host's: not ours to remove
    started = time.monotonic()
    with pytest.raises(R.RepositoryLocked) as raised:
        R.backup(restic, repo, host=HOST, paths=[tree], timeout=T, lock_wait=3)
    assert time.monotonic() - started < 30
    assert raised.value.message == f"the restic repository at {repo.location} is locked by process {holder.pid} on otherpc"
    assert "\n" not in raised.value.message and raised.value.hint
    [lock] = R.read_locks(restic, repo)
    assert lock.hostname == "otherpc" and lock.pid == holder.pid
    assert R.clear_stale_locks(restic, repo) == ()
    assert len(R.read_locks(restic, repo)) == 1


def test_a_cancelled_backup_stops_with_sigint_leaves_no_lock_and_the_next_one_succeeds(restic, repo, tree, tmp_path):
    # restic reads its exclude files after taking its lock; a FIFO nobody writes keeps it there, lock held.
    fifo = tmp_path / "excludes.fifo"
    os.mkfifo(fifo)
    cancel = threading.Event()
    seen: list[tuple[R.LockInfo, ...]] = []

    def cancel_once_locked() -> None:
        seen.append(wait_for_locks(restic, repo))
        cancel.set()

    watcher = threading.Thread(target=cancel_once_locked, daemon=True)
    watcher.start()
    with pytest.raises(R.ResticCancelled) as raised:
        R.backup(restic, repo, host=HOST, paths=[tree], exclude_files=[fifo], cancel=cancel, timeout=T)
    watcher.join(timeout=30)
    assert seen and len(seen[0]) == 1 and not seen[0][0].exclusive
    assert raised.value.status.name == "INTERRUPTED" and raised.value.exit_code == 130
    assert R.read_locks(restic, repo) == ()
    assert R.backup(restic, repo, host=HOST, paths=[tree], timeout=T).outcome is Outcome.OK


def test_a_snapshot_with_an_unreadable_file_is_a_warning_that_names_it(restic, repo, tree, caplog):
    if os.geteuid() == 0:
        # root reads any file whatever its mode; a process's memory at address 0 cannot be read by anyone.
        sleeper = subprocess.Popen(["sleep", "60"])
        unreadable = f"/proc/{sleeper.pid}/mem"
        paths = [tree, unreadable]
    else:
        sleeper = None
        locked = tree / "Documents" / "locked.txt"
        locked.write_text("secret\n")
        locked.chmod(0)
        unreadable, paths = str(locked), [tree]
    try:
        with caplog.at_level(logging.WARNING, logger="helpline.snapshots.restic"):
            summary = R.backup(restic, repo, host=HOST, paths=paths, timeout=T)
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait(timeout=10)
    assert summary.outcome is Outcome.WARNING
    assert summary.unreadable == (unreadable,)
    assert summary.warning == f"snapshot {summary.snapshot_id} was made without 1 unreadable file(s): {unreadable}"
    assert [s.short_id for s in R.snapshots(restic, repo, host=HOST, timeout=T)] == [summary.snapshot_id]
    assert any(summary.warning in r.getMessage() for r in caplog.records)


def test_the_password_is_never_in_argv_environment_or_logs(restic, repo, tree, tmp_path, monkeypatch, caplog):
    password = repo.password_file.read_text().strip()
    monkeypatch.setenv("RESTIC_PASSWORD", password)  # even if the agent's own environment held it
    calls = []
    real_run = restic_run.run

    def spy(argv, **options):
        calls.append((tuple(argv), dict(options.get("env") or {})))
        return real_run(argv, **options)

    monkeypatch.setattr(restic_run, "run", spy)
    with caplog.at_level(logging.DEBUG):
        R.backup(restic, repo, host=HOST, paths=[tree], timeout=T)
        R.snapshots(restic, repo, host=HOST, timeout=T)
        R.restore(restic, repo, snapshot="latest", host=HOST, paths=[tree], target=tmp_path / "r", timeout=T)
        with pytest.raises(R.RepositoryMissing):
            R.snapshots(restic, R.Repository(str(tmp_path / "none"), repo.password_file), timeout=T)
    assert len(calls) == 4
    for argv, env in calls:
        assert not any(password in arg for arg in argv)
        assert "--password-file" in argv
        assert env["RESTIC_PASSWORD"] == "" and password not in env.values()
    assert caplog.records and any("restic backup" in r.getMessage() for r in caplog.records)
    assert not any(password in r.getMessage() for r in caplog.records)


def test_the_version_is_detected_once_per_binary(restic, monkeypatch):
    assert restic.version.at_least(0, 14) and restic.program == str(Path(shutil.which("restic")).resolve())
    from agent.snapshots.restic import version as version_module

    calls = []
    real_run = version_module.execute.run
    monkeypatch.setattr(version_module.execute, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    assert R.detect("restic") == restic
    assert calls == []  # cached: restic was not asked again
