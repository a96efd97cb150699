"""When snapshot work is due: snapshots on the interval (caught up at wake), retention, prune, check, sample restores.

Everything here is a pure function of the policy, the remembered state and a
clock reading the caller passes in, so tests move time instead of sleeping.
A snapshot is due one interval after the last successful one; a PC that slept
or was off through that moment runs it as soon as it is back (``catch-up``),
not at the next interval. A failed run is retried after ``retry_after``, and
never counts as a success. On battery the work waits (when the policy says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .policy import SnapshotPolicy
from .state import RepositoryRecord, SnapshotState

#: The kinds of work, in the order a pass runs them.
KINDS = ("snapshot", "forget", "prune", "check", "verify")
#: Work only the local repository gets: the server's repository is append-only for the PC and pruned by the server.
LOCAL_ONLY = frozenset({"forget", "prune"})


@dataclass(frozen=True)
class Work:
    """One piece of due work: ``kind`` on ``repository``, and why (``first``, ``due``, ``catch-up``, ``retry``)."""

    kind: str
    repository: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """What to do now, what waits and why, and when to look again."""

    work: tuple[Work, ...]
    next_at: datetime
    #: Why due work was held back (``on battery``), or None.
    waiting: str | None = None


def snapshot_due_at(record: RepositoryRecord, policy: SnapshotPolicy) -> datetime | None:
    """When the next snapshot of this repository is due; None when one is due at once (there has never been one)."""
    if record.last_success is None and record.last_failure is None:
        return None
    if record.last_failure is not None and (record.last_success is None or record.last_failure > record.last_success):
        return record.last_failure + policy.retry_after
    return record.last_success + policy.interval


def _snapshot_work(name: str, record: RepositoryRecord, policy: SnapshotPolicy, now: datetime) -> Work | None:
    due = snapshot_due_at(record, policy)
    if due is None:
        return Work("snapshot", name, "first")
    if now < due:
        return None
    failed_last = record.last_failure is not None and (
        record.last_success is None or record.last_failure > record.last_success)
    if failed_last:
        return Work("snapshot", name, "retry")
    return Work("snapshot", name, "catch-up" if now >= due + policy.interval else "due")


def _every(last: datetime | None, every: timedelta, now: datetime) -> str | None:
    if last is None:
        return "first"
    return "due" if now >= last + every else None


def _maintenance(name: str, record: RepositoryRecord, policy: SnapshotPolicy, now: datetime) -> list[Work]:
    if record.last_success is None:  # nothing to keep, check or restore yet
        return []
    out = []
    for kind, last, every in (
        ("forget", record.last_forget, policy.forget_every),
        ("prune", record.last_prune, policy.prune_every),
        ("check", record.last_check, policy.check_every),
        ("verify", record.last_verify, policy.verify_every),
    ):
        if kind in LOCAL_ONLY and name != "local":
            continue
        reason = _every(last, every, now)
        if reason is not None:
            out.append(Work(kind, name, reason))
    return out


def next_due(policy: SnapshotPolicy, state: SnapshotState, now: datetime) -> datetime:
    """The earliest moment any work of ``policy`` falls due (``now`` if some is due already)."""
    moments = []
    for name in policy.repositories:
        record = state.repositories.get(name, RepositoryRecord())
        due = snapshot_due_at(record, policy)
        moments.append(now if due is None else due)
        if record.last_success is not None:
            for kind, last, every in (("forget", record.last_forget, policy.forget_every),
                                      ("prune", record.last_prune, policy.prune_every),
                                      ("check", record.last_check, policy.check_every),
                                      ("verify", record.last_verify, policy.verify_every)):
                if kind in LOCAL_ONLY and name != "local":
                    continue
                moments.append(now if last is None else last + every)
    return max(now, min(moments)) if moments else now + policy.interval


def plan(policy: SnapshotPolicy, state: SnapshotState, now: datetime, *, on_battery: bool = False,
         repositories: tuple[str, ...] | None = None) -> Plan:
    """Return the work due at ``now`` for ``repositories`` (default: the policy's), in the order to run it.

    On battery with ``wait_on_battery`` nothing runs and :attr:`Plan.waiting` says why.
    """
    names = repositories if repositories is not None else policy.repositories
    if not policy.enabled:
        return Plan((), now + policy.interval, waiting="snapshots are turned off in the policy")
    work: list[Work] = []
    for name in names:
        record = state.repositories.get(name, RepositoryRecord())
        snapshot = _snapshot_work(name, record, policy, now)
        if snapshot is not None:
            work.append(snapshot)
        work += _maintenance(name, record, policy, now)
    work.sort(key=lambda item: (KINDS.index(item.kind), names.index(item.repository)))
    next_at = next_due(policy, state, now)
    if work and on_battery and policy.wait_on_battery:
        return Plan((), now + min(policy.retry_after, timedelta(minutes=5)), waiting="on battery")
    return Plan(tuple(work), next_at)


def on_battery() -> bool:
    """True if this PC runs on its battery now (a PC without one, or unknown, is on mains)."""
    try:
        import psutil

        battery = psutil.sensors_battery()
    except (ImportError, OSError, RuntimeError, AttributeError):
        return False
    return battery is not None and battery.power_plugged is False
