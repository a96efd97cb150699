"""The snapshot state file's per-path records: what each folder's status is read from, bounded, and compatible with
files written before paths were kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from agent.snapshots import state as S
from agent.snapshots.state import RepositoryRecord, StateFile, touches

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_touches_a_folder_itself_inside_it_and_the_folders_holding_it():
    assert touches("/home/ann", "/home/ann") and touches("/home/ann/", "/home/ann")
    assert touches("/home/ann/Documents", "/home/ann") and touches("/home", "/home/ann") and touches("/", "/home/ann")
    assert not touches("/home/anna", "/home/ann") and not touches("/home/an", "/home/ann")
    assert not touches("/home/bob", "/home/ann") and not touches("/srv", "/home/ann")


def test_a_record_seen_by_a_folder_keeps_only_the_runs_that_touched_it():
    record = RepositoryRecord(last_success=T0 + timedelta(hours=3), last_snapshot_id="everyone?")
    record.remember_paths(["/home/ann"], succeeded=True, at=T0, snapshot_id="s-ann", error=None)
    record.remember_paths(["/home/bob"], succeeded=False, at=T0 + timedelta(hours=1), snapshot_id=None, error="no room")
    ann, bob, carol = (record.for_folder(f"/home/{name}") for name in ("ann", "bob", "carol"))
    assert (ann.last_success, ann.last_snapshot_id, ann.last_failure) == (T0, "s-ann", None)
    assert (bob.last_success, bob.last_failure, bob.last_error) == (None, T0 + timedelta(hours=1), "no room")
    assert carol.last_success is None and carol.last_failure is None


def test_a_record_from_before_paths_were_kept_speaks_for_every_folder(tmp_path):
    folder = tmp_path / "snap"
    folder.mkdir()
    old = {"repositories": {"local": {"initialized": True, "last_success": T0.isoformat(), "last_snapshot_id": "abc"}},
           "pending": []}
    (folder / S.STATE_FILE).write_text(json.dumps(old))
    record = StateFile(folder).read().repositories["local"]
    assert record.paths == {} and record.for_folder("/home/ann").last_success == T0


def test_path_records_survive_the_file_and_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_PATHS", 3)
    states = StateFile(tmp_path)
    for index in range(5):
        states.change(lambda s, index=index: s.repository("server").remember_paths(
            [f"/home/u{index}"], succeeded=True, at=T0 + timedelta(minutes=index), snapshot_id=f"s{index}", error=None))
    states.change(lambda s: s.repository("server").remember_paths(["/home/u2"], succeeded=False, at=T0 + timedelta(hours=1),
                                                                  snapshot_id=None, error="gone"))
    record = StateFile(tmp_path).read().repositories["server"]
    assert list(record.paths) == ["/home/u3", "/home/u4", "/home/u2"]  # the least recently run went first
    u2 = record.paths["/home/u2"]
    assert (u2.last_success, u2.last_snapshot_id, u2.last_failure, u2.last_error) == (
        T0 + timedelta(minutes=2), "s2", T0 + timedelta(hours=1), "gone")


def test_damaged_path_records_are_skipped_not_fatal(tmp_path):
    data = {"repositories": {"local": {"last_success": T0.isoformat(), "paths": {"/home/ann": "nonsense", "/x": {}}}}}
    (tmp_path / S.STATE_FILE).write_text(json.dumps(data))
    record = StateFile(tmp_path).read().repositories["local"]
    assert list(record.paths) == ["/x"] and record.paths["/x"].last_success is None
