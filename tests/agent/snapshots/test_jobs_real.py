"""The snapshot verbs against the real restic and a local repository, with the clock injected (no sleeping).

A scheduled snapshot and its catch-up, retention applied, a deleted file
restored byte-identical (beside, into a folder, over the original keeping
what it replaced), the sample-restore check passing and then catching a
damaged repository, a cancelled backup followed by a successful one, and a
wrong password and a missing repository in one clear line each.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.snapshots import restic as R
from agent.snapshots.jobs import Snapshots
from agent.snapshots.policy import policy_from_config
from agent.store import AgentStore
from protocol.errors import ExitStatus, HelplineError, NotFoundError

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def home(tmp_path) -> Path:
    rng = random.Random(20261202)
    root = tmp_path / "home" / "ann"
    for folder in ("Documents", "Pictures", ".cache/thumbs", "code/node_modules/pkg"):
        (root / folder).mkdir(parents=True)
    (root / "Documents" / "report.odt").write_bytes(rng.randbytes(48_000))
    (root / "Documents" / "notes.txt").write_text("remember the milk\n" * 50)
    (root / "Pictures" / "cat.jpg").write_bytes(rng.randbytes(120_000))
    (root / ".cache" / "thumbs" / "big.bin").write_bytes(rng.randbytes(10_000))
    (root / "code" / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    return root


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def make_jobs(tmp_path: Path, home: Path, clock: Clock, **section) -> Snapshots:
    policy = policy_from_config({"snapshots": {"paths": [str(home)], "server": False, "free_space_margin": 0,
                                               **section}}, home=home, data_dir=tmp_path / "agent")
    return Snapshots(AgentStore(tmp_path / "agent"), policy=policy, restic=R.detect("restic"), clock=clock,
                     host="pc-test", battery=lambda: False)


@pytest.fixture
def jobs(tmp_path, home, clock) -> Snapshots:
    return make_jobs(tmp_path, home, clock)


def test_a_scheduled_snapshot_runs_when_due_and_a_missed_slot_is_caught_up(jobs, clock, home):
    [(work, run)] = jobs.run_due()[:1]
    assert (work.kind, work.reason) == ("snapshot", "first") and run.status == "ok"
    record = jobs.state.read().repositories["local"]
    assert record.last_success == T0 and record.last_snapshot_id == run.snapshot_id and record.initialized
    clock.advance(minutes=30)
    assert [w.kind for w in jobs.due()[0]] == []  # maintenance ran in the first pass; nothing due yet
    clock.advance(hours=6)  # asleep through several slots
    work, _next, _ = jobs.due()
    assert [(w.kind, w.reason) for w in work][:1] == [("snapshot", "catch-up")]
    (home / "Documents" / "new.txt").write_text("written after the first snapshot\n")
    done = jobs.run_due()
    assert done[0][1].status == "ok" and done[0][1].summary.files_new == 1
    assert len(jobs.list_snapshots()) == 2
    listed = R.ls(jobs.restic, jobs.repository("local"), snapshot="latest", host="pc-test", recursive=True)
    names = {Path(n.path).name for n in listed.nodes}
    assert "report.odt" in names and "big.bin" not in names and "index.js" not in names  # caches excluded
    assert jobs.state.read().pending  # reports wait for a server this PC is not linked to


def test_retention_is_applied(tmp_path, home, clock):
    jobs = make_jobs(tmp_path, home, clock, keep_hourly=2, keep_daily=0, keep_weekly=0)
    for hour in range(4):
        clock.now = T0 + timedelta(hours=hour)
        (home / "Documents" / f"hour-{hour}.txt").write_text(f"{hour}\n")
        assert jobs.snapshot_into("local").status == "ok"
    assert len(jobs.list_snapshots()) == 4
    result = jobs.forget("local")
    assert len(result.kept) == 2 and len(result.removed) == 2
    assert len(jobs.list_snapshots()) == 2
    jobs.prune("local")
    assert jobs.state.read().repositories["local"].last_prune == clock.now


def test_a_deleted_file_comes_back_byte_identical_and_nothing_is_overwritten_silently(jobs, home, clock, tmp_path):
    report = home / "Documents" / "report.odt"
    original = digest(report)
    jobs.snapshot_into("local")
    report.unlink()
    clock.advance(minutes=5)
    beside = jobs.restore(report)
    assert beside.placed_at.parent == report.parent
    assert beside.placed_at.name.startswith("report.odt.restored-") and digest(beside.placed_at) == original
    again = jobs.restore(report)  # a second restore beside does not replace the first
    assert again.placed_at != beside.placed_at and digest(again.placed_at) == original
    into = jobs.restore(home / "Documents", to=tmp_path / "out")
    assert digest(into.placed_at / "report.odt") == original and into.placed_at == tmp_path / "out" / "Documents"
    report.write_text("overwritten by mistake\n")
    swapped = jobs.restore(report, overwrite=True)
    assert digest(report) == original and swapped.placed_at == report
    assert swapped.kept_at is not None and swapped.kept_at.read_text() == "overwritten by mistake\n"
    assert not list(report.parent.glob(".helpline-restore-*"))  # no staging folder left behind


def test_a_restore_removes_what_a_killed_restore_left_beside_it_and_nothing_else(jobs, home, tmp_path):
    """A restore killed half-way leaves its hidden staging folder (a half-written copy) in the person's folder;
    the next restore there removes it. A running restore's folder, an older Helpline's recent one, another
    user's, a link and the person's own look-alike file stay."""
    import subprocess

    import agent.snapshots.jobs as jobs_module

    documents = home / "Documents"
    jobs.snapshot_into("local")
    ended = subprocess.Popen(["true"])
    ended.wait()
    running = subprocess.Popen(["sleep", "60"])
    try:
        killed = documents / f".helpline-restore-{ended.pid}-x1y2z3"
        (killed / "home").mkdir(parents=True)
        (killed / "home" / "half.odt").write_text("half a copy\n")
        alive = documents / f".helpline-restore-{running.pid}-a1b2c3"
        alive.mkdir()
        old_style = documents / ".helpline-restore-k3j4h5g6"
        old_style.mkdir()
        stale_old_style = documents / ".helpline-restore-p9o8i7u6"
        stale_old_style.mkdir()
        day_ago = time.time() - jobs_module.UNOWNED_RESTORE_SECONDS - 60
        os.utime(stale_old_style, (day_ago, day_ago))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        link = documents / f".helpline-restore-{ended.pid}-link"
        link.symlink_to(elsewhere, target_is_directory=True)
        lookalike = documents / f".helpline-restore-{ended.pid}-file"
        lookalike.write_text("the person's\n")

        restored = jobs.restore(documents / "report.odt")

        assert restored.placed_at.is_file()
        assert not killed.exists() and not stale_old_style.exists()
        assert alive.is_dir() and old_style.is_dir() and lookalike.is_file()
        assert link.is_symlink() and elsewhere.is_dir()
        assert sorted(p.name for p in documents.glob(".helpline-restore-*")) == sorted(
            p.name for p in (alive, old_style, link, lookalike))
    finally:
        running.kill()
        running.wait()


def test_the_sweep_leaves_another_user_s_folder(tmp_path, monkeypatch):
    from agent import leftovers

    gone = subprocess_pid_of_an_ended_process()
    folder = tmp_path / f".helpline-restore-{gone}-q1w2e3"
    folder.mkdir()
    assert leftovers.stale_folders(tmp_path, ".helpline-restore-", unowned_seconds=60) == [folder]
    monkeypatch.setattr(leftovers.os, "geteuid", lambda: os.stat(folder).st_uid + 1)
    assert leftovers.stale_folders(tmp_path, ".helpline-restore-", unowned_seconds=60) == []


def subprocess_pid_of_an_ended_process() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_restore_at_a_time_picks_the_last_snapshot_before_it(jobs, home, clock):
    notes = home / "Documents" / "notes.txt"
    jobs.snapshot_into("local")
    clock.advance(hours=2)
    notes.write_text("second version\n")
    jobs.snapshot_into("local")
    first, second = jobs.list_snapshots()
    earlier = jobs.restore(notes, at=first.time + timedelta(minutes=1))
    assert earlier.snapshot.id == first.id and earlier.placed_at.read_text() == "remember the milk\n" * 50
    assert jobs.restore(notes, snapshot=second.short_id).placed_at.read_text() == "second version\n"
    with pytest.raises(NotFoundError):
        jobs.restore(notes, at=first.time - timedelta(hours=1))
    with pytest.raises(NotFoundError):
        jobs.restore(home / "Documents" / "never-there.txt")


def test_the_sample_restore_passes_then_catches_a_damaged_repository(jobs, clock):
    jobs.snapshot_into("local")
    good = jobs.verify("local", rng=random.Random(1))
    assert good.ok and good.files_checked >= 3 and "matched" in good.detail
    record = jobs.state.read().repositories["local"]
    assert record.last_verified == T0 and record.last_verify_ok
    for pack in (jobs.policy.local_repository / "data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            middle = len(data) // 2
            data[middle:middle + 64] = bytes(64)
            os.chmod(pack, 0o600)
            pack.write_bytes(bytes(data))
    shutil.rmtree(jobs.directory / "cache", ignore_errors=True)
    clock.advance(days=3)
    bad = jobs.verify("local", rng=random.Random(1))
    assert not bad.ok and "failed" in bad.detail
    record = jobs.state.read().repositories["local"]
    assert record.last_verify == clock.now and record.last_verified == T0 and not record.last_verify_ok
    assert jobs.protection().words.endswith("last verified restore 3 days ago")


def test_a_cancelled_backup_leaves_no_lock_and_the_next_one_succeeds(tmp_path, clock):
    big = tmp_path / "big"
    big.mkdir()
    rng = random.Random(7)
    for index in range(400):
        (big / f"f{index:04}.bin").write_bytes(rng.randbytes(256 * 1024))
    jobs = make_jobs(tmp_path, big, clock)
    cancel = threading.Event()
    seen: list[R.Progress] = []

    def progress(p: R.Progress) -> None:
        seen.append(p)
        cancel.set()  # stop as soon as restic reports any progress

    with pytest.raises(R.ResticCancelled):
        jobs.snapshot_into("local", on_progress=progress, cancel=cancel)
    record = jobs.state.read().repositories["local"]
    assert record.last_success is None and record.last_status == "failed" and record.last_failure == T0
    assert R.read_locks(jobs.restic, jobs.repository("local")) == ()
    clock.advance(minutes=20)
    run = jobs.snapshot_into("local")
    assert run.status == "ok" and run.summary.total_files_processed == 400
    assert jobs.protection().state == "unverified"


def test_a_wrong_password_and_a_missing_repository_each_fail_in_one_clear_line(jobs, tmp_path):
    with pytest.raises(R.RepositoryMissing) as missing:
        jobs.list_snapshots()
    assert "no restic repository" in missing.value.message and "\n" not in missing.value.message
    assert missing.value.status is ExitStatus.NOT_FOUND
    jobs.snapshot_into("local")
    password = jobs.password_file()
    os.chmod(password, 0o600)
    password.write_text("not-the-password\n")
    with pytest.raises(R.WrongPassword) as wrong:
        jobs.list_snapshots()
    assert "password" in wrong.value.message and "\n" not in wrong.value.message
    assert wrong.value.status is ExitStatus.AUTH
    failed = jobs.snapshot_into("local")
    assert failed.status == "failed" and "password" in failed.error
    assert isinstance(failed.exception, HelplineError)


def test_a_full_disk_stops_the_local_repository_growing(tmp_path, home, clock):
    jobs = make_jobs(tmp_path, home, clock, free_space_margin="1000T")
    run = jobs.snapshot_into("local")
    assert run.status == "failed" and "stops growing" in run.error
    record = jobs.state.read().repositories["local"]
    assert record.full and record.last_success is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving files away needs root")
def test_a_restore_for_another_user_gives_them_the_files(jobs, home):
    import pwd

    from agent.snapshots.handlers import owner_of

    jobs.snapshot_into("local")
    nobody = pwd.getpwnam("nobody")
    owner = owner_of("nobody")
    assert owner == (nobody.pw_uid, nobody.pw_gid) and owner_of("root") is None
    done = jobs.restore(home / "Documents", owner=owner)
    for path in (done.placed_at, *done.placed_at.rglob("*")):
        assert (path.lstat().st_uid, path.lstat().st_gid) == owner
    with pytest.raises(NotFoundError):
        owner_of("no-such-user-here")


def test_an_elevated_windows_agent_asks_restic_for_a_vss_snapshot(tmp_path, home, clock, monkeypatch):
    from agent.snapshots import jobs as jobs_module

    seen = {}

    def fake_backup(restic, repository, **options):
        seen.update(options)
        raise R.ResticError("stop here", command="restic backup", exit_code=1, stderr_tail="")

    monkeypatch.setattr(jobs_module.R, "backup", fake_backup)
    elevated = make_jobs(tmp_path, home, clock)
    elevated.fs_snapshot = lambda: True
    assert elevated.snapshot_into("local").status == "failed" and seen["use_fs_snapshot"] is True
    if os.name != "nt":
        assert jobs_module.windows_elevated() is False
    plain = make_jobs(tmp_path / "plain", home, clock)
    plain.snapshot_into("local")
    assert seen["use_fs_snapshot"] is False


def test_status_per_home_counts_only_runs_that_took_that_home(tmp_path, clock):
    homes = tmp_path / "homes"
    ann, bob = homes / "ann", homes / "bob"
    for home in (ann, bob):
        (home / "Documents").mkdir(parents=True)
        (home / "Documents" / "a.txt").write_text(f"{home.name}'s file\n")
    jobs = make_jobs(tmp_path, homes, clock)
    [run] = jobs.run_snapshot(paths=(str(ann),))  # ann's own "snapshot now"
    assert run.status == "ok"
    assert jobs.protection(ann).state == "unverified" and jobs.protection(ann).last_snapshot_id == run.snapshot_id
    assert jobs.protection(ann / "Documents").last_snapshot_at == T0  # a folder inside a home that ran
    bob_sees = jobs.protection(bob)
    assert bob_sees.state == "never" and bob_sees.words.startswith("Not protected")
    assert jobs.protection().state == "unverified"  # the PC as a whole (root) did get a snapshot
    clock.advance(hours=2)
    [everyone] = jobs.run_snapshot()  # the service's scheduled run of the policy's paths: every home
    assert jobs.protection(bob).last_snapshot_id == everyone.snapshot_id
    assert jobs.protection(ann).last_snapshot_at == clock.now
    # A failed run of bob's home alone puts bob at risk, not ann.
    clock.advance(minutes=10)
    jobs.state.change(lambda s: s.repository("local").remember_paths([str(bob)], succeeded=False, at=clock.now,
                                                                    snapshot_id=None, error="restic failed"))
    assert jobs.protection(bob).state == "failing" and "restic failed" in jobs.protection(bob).words
    assert jobs.protection(ann).state != "failing"


def test_a_restore_of_the_latest_takes_the_recorded_snapshot_without_listing(jobs, home, clock, monkeypatch):
    report = home / "Documents" / "report.odt"
    original = digest(report)
    first = jobs.snapshot_into("local")
    clock.advance(hours=1)
    report.write_text("second version\n")
    second = jobs.snapshot_into("local")
    listed = []
    real_snapshots = R.snapshots
    monkeypatch.setattr(R, "snapshots", lambda *a, **k: listed.append(1) or real_snapshots(*a, **k))
    done = jobs.restore(report)
    assert listed == []  # no restic run to find it
    assert second.snapshot_id.startswith(done.snapshot.id[:8]) and done.snapshot.time == clock.now
    assert done.placed_at.read_text() == "second version\n"
    # A named or dated restore still asks restic, as does one of a folder the records do not cover.
    older = jobs.restore(report, at=clock.now - timedelta(minutes=30))
    assert older.snapshot.id.startswith(first.snapshot_id) and digest(older.placed_at) == original and len(listed) == 1


def test_a_recorded_snapshot_restic_no_longer_has_falls_back_to_listing(jobs, home, clock, monkeypatch):
    report = home / "Documents" / "report.odt"
    original = digest(report)
    made = jobs.snapshot_into("local")
    bogus = "0" * 64
    jobs.state.change(lambda s: s.repository("local").remember_snapshot(bogus, clock.now + timedelta(minutes=1),
                                                                        [str(home)]))
    assert jobs.recorded_latest("local", str(report)).id == bogus
    done = jobs.restore(report)
    assert done.snapshot.id.startswith(made.snapshot_id) and digest(done.placed_at) == original
    assert not list(report.parent.glob(".helpline-restore-*"))


def test_forget_drops_the_snapshots_it_removed_from_the_records(tmp_path, home, clock):
    jobs = make_jobs(tmp_path, home, clock, keep_hourly=1, keep_daily=0, keep_weekly=0)
    first = jobs.snapshot_into("local")
    clock.advance(hours=2)
    second = jobs.snapshot_into("local")
    result = jobs.forget("local")
    assert any(full.startswith(first.snapshot_id) for full in result.removed)
    recent = [item["id"] for item in jobs.state.read().repositories["local"].recent]
    assert recent == [second.snapshot_id]
