"""When snapshot work falls due: first run, the interval, catch-up after a missed slot, retries, battery, maintenance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.snapshots.policy import policy_from_config
from agent.snapshots.schedule import Work, next_due, plan
from agent.snapshots.state import RepositoryRecord, SnapshotState

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
POLICY = policy_from_config({"snapshots": {"server": False}}, home=Path("/home/ann"), data_dir=Path("/d"))


def state(**record) -> SnapshotState:
    return SnapshotState(repositories={"local": RepositoryRecord(**record)})


def kinds(found) -> list[tuple[str, str]]:
    return [(w.kind, w.reason) for w in found.work]


def fresh(**extra) -> SnapshotState:
    """A repository whose maintenance is all freshly done at T0, with ``extra`` on top."""
    return state(last_forget=T0, last_prune=T0, last_check=T0, last_verify=T0, **extra)


def test_the_first_snapshot_is_due_at_once_and_maintenance_waits_for_a_snapshot():
    assert kinds(plan(POLICY, SnapshotState(), T0)) == [("snapshot", "first")]


def test_a_snapshot_is_due_one_interval_after_the_last_success():
    done = fresh(last_success=T0)
    assert plan(POLICY, done, T0 + timedelta(minutes=59)).work == ()
    assert kinds(plan(POLICY, done, T0 + timedelta(minutes=60))) == [("snapshot", "due")]
    assert next_due(POLICY, done, T0 + timedelta(minutes=10)) == T0 + timedelta(hours=1)


def test_a_missed_slot_is_caught_up_at_wake_not_at_the_next_slot():
    done = fresh(last_success=T0)
    woke = T0 + timedelta(hours=5, minutes=17)  # the PC slept through four slots
    assert kinds(plan(POLICY, done, woke)) == [("snapshot", "catch-up")]
    assert next_due(POLICY, done, woke) == woke


def test_a_failed_run_is_retried_after_the_retry_delay_and_never_counts_as_a_success():
    failed = fresh(last_success=T0, last_failure=T0 + timedelta(hours=1), last_error="disk gone")
    assert plan(POLICY, failed, T0 + timedelta(hours=1, minutes=14)).work == ()
    assert kinds(plan(POLICY, failed, T0 + timedelta(hours=1, minutes=15))) == [("snapshot", "retry")]
    never = state(last_failure=T0)
    assert plan(POLICY, never, T0 + timedelta(minutes=5)).work == ()
    assert kinds(plan(POLICY, never, T0 + timedelta(minutes=15))) == [("snapshot", "retry")]


def test_on_battery_everything_waits_when_the_policy_says_so():
    waiting = plan(POLICY, SnapshotState(), T0, on_battery=True)
    assert waiting.work == () and waiting.waiting == "on battery" and waiting.next_at > T0
    relaxed = policy_from_config({"snapshots": {"server": False, "wait_on_battery": False}},
                                 home=Path("/home/ann"), data_dir=Path("/d"))
    assert kinds(plan(relaxed, SnapshotState(), T0, on_battery=True)) == [("snapshot", "first")]


def test_forget_prune_check_and_verify_run_on_their_own_schedules():
    done = state(last_success=T0)
    assert kinds(plan(POLICY, done, T0 + timedelta(minutes=1))) == [
        ("forget", "first"), ("prune", "first"), ("check", "first"), ("verify", "first")]
    later = fresh(last_success=T0 + timedelta(days=1, hours=23, minutes=30))
    at = T0 + timedelta(days=1, hours=23, minutes=45)
    assert [w.kind for w in plan(POLICY, later, at).work] == ["forget"]
    at = T0 + timedelta(days=3)
    assert [w.kind for w in plan(POLICY, fresh(last_success=at), at).work] == ["forget", "verify"]
    at = T0 + timedelta(days=7)
    assert [w.kind for w in plan(POLICY, fresh(last_success=at), at).work] == ["forget", "prune", "check", "verify"]


def test_the_servers_repository_gets_no_forget_or_prune_it_is_append_only_for_the_pc():
    both = policy_from_config({}, home=Path("/home/ann"), data_dir=Path("/d"))
    s = SnapshotState(repositories={"local": RepositoryRecord(last_success=T0),
                                    "server": RepositoryRecord(last_success=T0)})
    work = plan(both, s, T0 + timedelta(minutes=1)).work
    assert Work("forget", "server", "first") not in work and Work("prune", "server", "first") not in work
    assert Work("check", "server", "first") in work and Work("verify", "server", "first") in work


def test_turned_off_nothing_runs():
    off = policy_from_config({"snapshots": {"enabled": False}}, home=Path("/home/ann"), data_dir=Path("/d"))
    found = plan(off, SnapshotState(), T0)
    assert found.work == () and "off" in found.waiting
