"""Reading restic: its version, its JSON output and its failures, from output recorded from restic 0.14 and 0.17."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.execute import Execution, Outcome
from agent.snapshots.restic.errors import (
    RepositoryDamaged,
    RepositoryLocked,
    RepositoryMissing,
    ResticCancelled,
    ResticError,
    WrongPassword,
)
from agent.snapshots.restic.output import (
    BackupOutput,
    LockInfo,
    RestoreOutput,
    parse_time,
    read_diff,
    read_forget,
    read_lock,
    read_snapshots,
    read_stats,
    unreadable_items,
)
from agent.snapshots.restic.repository import Repository
from agent.snapshots.restic.run import failure_of
from agent.snapshots.restic.version import Features, Restic, Version, parse_version
from protocol.errors import ConfigError, ExitStatus, InvalidInputError

OLD = Restic("restic", Version(0, 14, 0))
NEW = Restic("restic", Version(0, 17, 3))
REPO = Repository("/srv/snap/repo", Path("/p/local.password"))

# Recorded from restic 0.14.0 (Debian 12).
WRONG_PASSWORD_014 = "Fatal: wrong password or no key found\n"
NO_REPOSITORY_014 = (
    "Fatal: unable to open config file: stat /srv/snap/repo/config: no such file or directory\n"
    "Is there a repository at the following location?\n/srv/snap/repo\n"
)
LOCKED_014 = (
    "unable to create lock in backend: repository is already locked exclusively by PID 2205 on vm by root "
    "(UID 0, GID 0)\nlock was created at 2026-12-02 06:27:11 (3.293437664s ago)\nstorage ID 29360a4e\n"
    "the `unlock` command can be used to remove stale locks\n"
)
BACKUP_EXIT_3_STDOUT = [
    '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":20000}',
    '{"message_type":"status","percent_done":0.3333166674999583,"total_files":4,"files_done":1,"total_bytes":60003,'
    '"bytes_done":20000,"current_files":["/src/a/f1","/src/a/f2"]}',
    '{"message_type":"summary","files_new":4,"files_changed":0,"files_unmodified":0,"dirs_new":4,"dirs_changed":0,'
    '"dirs_unmodified":0,"data_blobs":0,"tree_blobs":3,"data_added":1043,"total_files_processed":4,'
    '"total_bytes_processed":60003,"total_duration":0.299744384,"snapshot_id":"d41e9cea"}',
]
BACKUP_EXIT_3_STDERR = (
    '{"message_type":"error","error":{"Op":"read","Path":"/proc/2817/mem","Err":5},"during":"archival",'
    '"item":"/proc/2817/mem"}\n'
    '{"message_type":"error","error":{"Op":"open","Path":"/home/ann/locked.txt","Err":13},"during":"archival",'
    '"item":"/home/ann/locked.txt"}\n'
    "Warning: at least one source file could not be read\n"
)
FORGET_014 = (
    '[{"tags":null,"host":"h1","paths":["/tmp/rx/src"],"keep":[{"time":"2026-12-02T06:25:53.21397563Z",'
    '"tree":"286d","paths":["/tmp/rx/src"],"hostname":"h1","username":"root","tags":["helpline"],'
    '"id":"d60d8864237841997609971753d2cc6e30e994438a2abedd243380b7dba08ffc","short_id":"d60d8864"}],'
    '"remove":[{"time":"2026-12-02T05:25:53Z","tree":"1111","paths":["/tmp/rx/src"],"hostname":"h1",'
    '"id":"e40d7ef7d7595c157af938343a1a3200796017ca5d65a205be7115093efa2312","short_id":"e40d7ef7"}],'
    '"reasons":[]}]'
)


def failed(stderr: str, exit_code: int | None = 1, **fields) -> Execution:
    argv = ("restic", "snapshots", "--repo", "/srv/snap/repo")
    return Execution(argv, " ".join(argv), exit_code, 0.4, stderr_tail=stderr, pid=4242, **fields)


@pytest.mark.parametrize(("text", "version"), [
    ("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n", Version(0, 14, 0)),
    ("restic 0.17.3 compiled with go1.23.1 on windows/amd64", Version(0, 17, 3)),
    ("restic 0.16.4-dev (compiled manually) compiled with go1.21.6 on darwin/arm64", Version(0, 16, 4, "-dev")),
])
def test_parse_version(text, version):
    assert parse_version(text) == version


def test_an_old_or_unknown_restic_is_a_configuration_error():
    with pytest.raises(ConfigError, match="too old"):
        parse_version("restic 0.9.6 compiled with go1.13.4 on linux/amd64")
    with pytest.raises(ConfigError, match="could not read"):
        parse_version("rustic 0.6.1")


def test_features_by_version():
    assert Features.of(Version(0, 14, 0)) == Features(retry_lock=False, exit_codes=False, restore_json=False)
    assert Features.of(Version(0, 16, 0)) == Features(retry_lock=True, exit_codes=False, restore_json=False)
    assert Features.of(Version(0, 17, 0)) == Features(retry_lock=True, exit_codes=True, restore_json=True)


@pytest.mark.parametrize(("stderr", "kind", "status", "words"), [
    (WRONG_PASSWORD_014, WrongPassword, ExitStatus.AUTH, "does not open the restic repository at /srv/snap/repo"),
    (NO_REPOSITORY_014, RepositoryMissing, ExitStatus.NOT_FOUND, "there is no restic repository at /srv/snap/repo"),
    (LOCKED_014, RepositoryLocked, ExitStatus.CONFLICT, "is locked by process 2205 on vm"),
    ("Fatal: repository contains errors\n", RepositoryDamaged, ExitStatus.ERROR, "found errors"),
    ("Fatal: unable to save snapshot: disk full\n", ResticError, ExitStatus.ERROR,
     "restic snapshots failed with exit status 1: unable to save snapshot: disk full"),
])
def test_restic_014_failures_are_told_apart_from_stderr(stderr, kind, status, words):
    error = failure_of(OLD, REPO, failed(stderr))
    assert type(error) is kind
    assert error.status is status
    assert words in error.message
    assert "\n" not in error.message and "\n" not in (error.hint or "")
    assert error.stderr_tail == stderr and error.exit_code == 1


@pytest.mark.parametrize(("code", "kind"), [(10, RepositoryMissing), (11, RepositoryLocked), (12, WrongPassword)])
def test_newer_restic_failures_come_from_the_exit_code(code, kind):
    assert type(failure_of(NEW, REPO, failed("Fatal: something new\n", code))) is kind
    # restic 0.14 never meant these codes: the stderr decides there.
    assert type(failure_of(OLD, REPO, failed("Fatal: something new\n", code))) is ResticError


def test_a_file_named_like_a_failure_is_not_one():
    stderr = '{"message_type":"error","error":{},"during":"archival","item":"/home/ann/wrong password or no key found"}\n'
    assert type(failure_of(OLD, REPO, failed(stderr + "Fatal: disk full\n"))) is ResticError


def test_cancelled_and_timed_out_runs():
    cancelled = failure_of(OLD, REPO, failed("signal interrupt received, cleaning up\n", 130, cancelled=True))
    assert type(cancelled) is ResticCancelled and cancelled.status is ExitStatus.INTERRUPTED
    late = failure_of(OLD, REPO, failed("", -2, timed_out=True))
    assert type(late) is ResticError and "did not finish within" in late.message


def test_the_credential_of_a_location_never_reaches_a_message():
    repo = Repository("rest:https://pc:t0ps3cret@helpline.example/pc/", Path("/p/pw"))
    error = failure_of(OLD, repo, failed(NO_REPOSITORY_014))
    assert "t0ps3cret" not in error.message and "rest:https://pc:***@helpline.example/pc/" in error.message


def test_a_backup_with_unreadable_files_is_a_warning_naming_them():
    progress = []
    reader = BackupOutput(progress.append)
    for line in BACKUP_EXIT_3_STDOUT:
        reader(line)
    summary = reader.result(Outcome.WARNING, BACKUP_EXIT_3_STDERR, tail_full=False)
    assert summary.snapshot_id == "d41e9cea" and summary.files_new == 4 and summary.data_added == 1043
    assert summary.total_duration == pytest.approx(0.299744384)
    assert summary.unreadable == ("/proc/2817/mem", "/home/ann/locked.txt")
    assert summary.warning == ("snapshot d41e9cea was made without 2 unreadable file(s): "
                               "/proc/2817/mem, /home/ann/locked.txt")
    assert [(p.percent, p.files_done, p.total_files, p.bytes_done) for p in progress] == [
        (0.0, 0, 1, 0), (33.33, 1, 4, 20000)]
    assert progress[1].current_files == ("/src/a/f1", "/src/a/f2")


def test_a_complete_backup_has_no_warning_even_with_error_lines():
    reader = BackupOutput()
    for line in BACKUP_EXIT_3_STDOUT:
        reader(line)
    summary = reader.result(Outcome.OK, "", tail_full=False)
    assert summary.warning is None and summary.unreadable == ()


def test_a_backup_without_a_summary_fails_loudly():
    with pytest.raises(InvalidInputError):
        BackupOutput().result(Outcome.OK, "", tail_full=False)


def test_unreadable_items_come_once_each_in_order():
    lines = BACKUP_EXIT_3_STDERR.splitlines() * 2 + ["not json", "{broken"]
    assert unreadable_items(lines) == ("/proc/2817/mem", "/home/ann/locked.txt")


def test_restore_output_of_014_and_017():
    old = RestoreOutput("/t")
    old("restoring <Snapshot 0cf6aa86 of [/tmp/rx/src] at 2026-12-02 06:29:19.07 +0000 UTC by root@h2> to /t")
    assert old.result().snapshot_id == "0cf6aa86" and old.result().files_restored is None
    progress = []
    new = RestoreOutput("/t", progress.append)
    new('{"message_type":"status","seconds_elapsed":1,"percent_done":0.5,"total_files":4,"files_restored":2,'
        '"total_bytes":100,"bytes_restored":50}')
    new('{"message_type":"summary","seconds_elapsed":2,"total_files":4,"files_restored":4,"files_skipped":0,'
        '"total_bytes":100,"bytes_restored":100}')
    assert progress[0].percent == 50.0 and progress[0].files_done == 2 and progress[0].bytes_done == 50
    assert new.result().files_restored == 4 and new.result().bytes_restored == 100


def test_read_forget_snapshots_diff_stats_and_locks():
    result = read_forget(FORGET_014)
    assert result.kept == ("d60d8864237841997609971753d2cc6e30e994438a2abedd243380b7dba08ffc",)
    assert result.removed == ("e40d7ef7d7595c157af938343a1a3200796017ca5d65a205be7115093efa2312",)
    listed = read_snapshots(
        '[{"time":"2026-12-02T06:25:53.21397563Z","paths":["/a"],"hostname":"h1","tags":["helpline"],'
        '"id":"d60d88641111","short_id":"d60d8864"},'
        '{"time":"2026-12-02T05:00:00+01:00","paths":["/a"],"hostname":"h1","id":"e40d7ef72222"}]')
    assert [snap.short_id for snap in listed] == ["e40d7ef7", "d60d8864"]  # oldest first
    assert listed[1].time == datetime(2026, 12, 2, 6, 25, 53, 213975, tzinfo=timezone.utc)
    assert read_snapshots("") == ()
    diff = read_diff([
        '{"message_type":"change","path":"/a/new.txt","modifier":"+"}',
        '{"message_type":"statistics","changed_files":1,"added":{"bytes":10},"removed":{"bytes":3}}',
    ])
    assert [(c.path, c.modifier) for c in diff.changes] == [("/a/new.txt", "+")]
    assert (diff.changed_files, diff.added_bytes, diff.removed_bytes) == (1, 10, 3)
    stats = read_stats('{"total_size":60003,"total_file_count":8,"snapshots_count":1}')
    assert (stats.total_size, stats.total_file_count, stats.snapshots_count) == (60003, 8, 1)
    lock = read_lock("ab" * 32, '{\n  "time": "2026-12-02T06:27:11.318646313Z",\n  "exclusive": true,\n'
                                '  "hostname": "vm",\n  "username": "root",\n  "pid": 2205\n}')
    assert lock == LockInfo("ab" * 32, "vm", 2205, parse_time("2026-12-02T06:27:11.318646Z"), True, "root")
    with pytest.raises(InvalidInputError):
        read_lock("ab" * 32, '{"hostname": "vm"}')


def test_a_missing_restic_is_a_configuration_error(tmp_path):
    from agent.snapshots.restic.version import detect

    with pytest.raises(ConfigError, match="restic is not installed"):
        detect(tmp_path / "no-restic-here")


def _fake_restic(folder, version: str):
    """A restic stand-in that says ``version`` and counts how often it was asked."""
    program = folder / "restic"
    program.write_text(f"#!/bin/sh\necho run >> {folder / 'runs'}\necho 'restic {version} compiled with go1.22 on linux/amd64'\n")
    program.chmod(0o755)
    return program


def _runs(folder) -> int:
    runs = folder / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_the_version_is_remembered_for_the_next_process_until_the_binary_changes(tmp_path, monkeypatch):
    import os

    from agent.snapshots.restic import version as V

    monkeypatch.setattr(V, "_cache", {})  # each detect below stands for a new process
    program = _fake_restic(tmp_path, "0.16.4")
    kept = tmp_path / "agent" / "restic-version.json"
    assert V.detect(program, remember_in=kept).version == V.Version(0, 16, 4)
    assert _runs(tmp_path) == 1 and kept.exists() and kept.stat().st_mode & 0o077 == 0
    V._cache.clear()
    again = V.detect(program, remember_in=kept)
    assert again.version == V.Version(0, 16, 4) and again.features.retry_lock
    assert _runs(tmp_path) == 1, "the next process reads the kept version instead of running restic"

    # An update in place (same path, even the same size and modification time) is asked again.
    stat = program.stat()
    replacement = tmp_path / "new-restic"
    replacement.write_text(program.read_text().replace("0.16.4", "0.17.3"))
    replacement.chmod(0o755)
    os.replace(replacement, program)
    os.utime(program, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    V._cache.clear()
    assert V.detect(program, remember_in=kept).version == V.Version(0, 17, 3)
    assert _runs(tmp_path) == 2


@pytest.mark.parametrize("damage", ["", "{", '{"binary": "x"}', '["a"]', '{"binary": [], "version": 3}'])
def test_a_damaged_kept_version_is_asked_again(tmp_path, monkeypatch, damage):
    from agent.snapshots.restic import version as V

    monkeypatch.setattr(V, "_cache", {})
    program = _fake_restic(tmp_path, "0.14.0")
    kept = tmp_path / "restic-version.json"
    kept.write_text(damage)
    assert V.detect(program, remember_in=kept).version == V.Version(0, 14, 0)
    assert _runs(tmp_path) == 1
    V._cache.clear()
    V.detect(program, remember_in=kept)
    assert _runs(tmp_path) == 1, "rewritten whole after the damage"
