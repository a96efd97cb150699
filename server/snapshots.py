"""Snapshot records: the runs and sample restores PCs report, and each PC's protection in plain words.

A PC reports every snapshot run (:class:`SnapshotReport`), successful or not,
and every sample restore it checked by hash (:class:`VerifyReport`). The server
keeps the newest :data:`KEEP_PER_AGENT` of each per PC and sums them up in one
:class:`~server.models.Protection` row per PC, from which a PC's state is worked
out at the time it is asked for:

- ``never``: no snapshot yet;
- ``failing``: the last run failed, or the last sample restore did not match
  (the snapshots may not be restorable);
- ``stale``: no good snapshot for ``[snapshots] stale_after_hours``;
- ``unverified``: no verified sample restore for ``unverified_after_days``
  (counted from the first snapshot while there has been none);
- ``protected`` otherwise.

A snapshot in either repository (the PC's local one or the server's) counts. A
failed run never counts as a snapshot, and a successful one must name the
snapshot it made. Reports dated in the future (beyond :data:`FUTURE_ALLOWANCE`)
are refused, so a PC with a wrong clock cannot look protected for days. Only
changes of state go to the audit log (``snapshot.protection``): when a report
changes it, and from the ``protection-watch`` job when time alone does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from protocol.errors import InvalidInputError
from protocol.snapshots import ProtectionStatus, SnapshotReport, VerifyReport
from protocol.times import ago
from protocol.untrusted import shown
from server.audit import Actor, record
from server.escrow import escrowed_password  # noqa: F401 - the server's prune finds it here (server.restic_rest.hooks)
from server.models import Agent, Protection, RestoreCheck, SnapshotRun
from server.settings import SnapshotSettings

#: Runs and sample restores kept per PC (the oldest go as new ones arrive).
KEEP_PER_AGENT = 200
#: How far ahead of the server's clock a report or a snapshot may be dated (clocks drift; NTP fixes them).
FUTURE_ALLOWANCE = timedelta(minutes=10)
#: How much of a PC's error text the plain words quote.
QUOTED_ERROR = 120

STATES = ("protected", "stale", "never", "failing", "unverified")
#: The states that mean a PC needs attention (``helpline agent list --not-protected``).
PROBLEMS = ("stale", "never", "failing", "unverified")


def _refuse_future(when: datetime, now: datetime, what: str) -> None:
    if when > now + FUTURE_ALLOWANCE:
        raise InvalidInputError(f"The {what} is dated {shown(when.isoformat())}, ahead of the server's clock.",
                                hint="Check this PC's clock and time zone, then report again.")


def record_run(session: Session, settings: SnapshotSettings, agent: Agent, report: SnapshotReport, actor: Actor, *,
               now: datetime) -> ProtectionStatus:
    """Keep ``agent``'s report of a snapshot run and return its protection afterwards.

    InvalidInputError if the run ends before it starts, is dated in the future,
    or claims success without naming its snapshot.
    """
    _refuse_future(report.finished_at, now, "end of this snapshot run")
    if report.finished_at < report.started_at:
        raise InvalidInputError("The snapshot run ends before it starts.", hint="Report the run's real start and end.")
    good = report.status != "failed"
    if good and not report.snapshot_id:
        raise InvalidInputError(f"A {report.status} snapshot run must name the snapshot it made.",
                                hint="Report the snapshot id restic printed, or the run as failed.")
    session.add(SnapshotRun(
        agent_id=agent.id, repository=report.repository, status=report.status, snapshot_id=report.snapshot_id,
        started_at=report.started_at, finished_at=report.finished_at, paths=list(report.paths),
        files_new=report.files_new, files_changed=report.files_changed, files_unmodified=report.files_unmodified,
        total_files=report.total_files, bytes_added=report.bytes_added, total_bytes=report.total_bytes,
        warnings=list(report.warnings), error=report.error, received_at=now,
    ))
    row = _protection_row(session, agent.id)
    at = report.finished_at
    if row.last_run_at is None or at >= row.last_run_at:
        row.last_run_at, row.last_run_status = at, report.status
    if good:
        if row.last_snapshot_at is None or at >= row.last_snapshot_at:
            row.last_snapshot_at, row.last_snapshot_id = at, report.snapshot_id
        if row.first_snapshot_at is None or at < row.first_snapshot_at:
            row.first_snapshot_at = at
    elif row.last_failure_at is None or at >= row.last_failure_at:
        row.last_failure_at, row.last_error = at, (report.error or "the run failed")[:2000]
    _keep_newest(session, SnapshotRun, agent.id)
    return _note_state(session, settings, agent, row, actor, now=now)


def record_check(session: Session, settings: SnapshotSettings, agent: Agent, report: VerifyReport, actor: Actor, *,
                 now: datetime) -> ProtectionStatus:
    """Keep ``agent``'s report of a sample restore and return its protection afterwards; InvalidInputError if dated ahead."""
    _refuse_future(report.at, now, "sample restore")
    session.add(RestoreCheck(
        agent_id=agent.id, repository=report.repository, snapshot_id=report.snapshot_id, at=report.at,
        files_checked=report.files_checked, bytes_checked=report.bytes_checked, ok=report.ok, detail=report.detail,
        received_at=now,
    ))
    row = _protection_row(session, agent.id)
    if row.last_check_at is None or report.at >= row.last_check_at:
        row.last_check_at, row.last_check_ok, row.last_check_detail = report.at, report.ok, report.detail
    if report.ok and (row.last_verified_at is None or report.at > row.last_verified_at):
        row.last_verified_at = report.at
    _keep_newest(session, RestoreCheck, agent.id)
    return _note_state(session, settings, agent, row, actor, now=now)


def _protection_row(session: Session, agent_id: str) -> Protection:
    """``agent_id``'s summary row, made if missing and locked for this transaction (reports of one PC never race)."""
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[session.get_bind().dialect.name]
    session.execute(insert(Protection).values(agent_id=agent_id, state="never", last_check_detail="")
                    .on_conflict_do_nothing(index_elements=[Protection.agent_id]))
    return session.get_one(Protection, agent_id, with_for_update=True, populate_existing=True)


def _keep_newest(session: Session, model: type[SnapshotRun] | type[RestoreCheck], agent_id: str) -> None:
    """Delete ``agent_id``'s rows of ``model`` beyond the newest :data:`KEEP_PER_AGENT` (by arrival)."""
    session.flush()
    oldest_kept = session.scalar(select(model.id).where(model.agent_id == agent_id).order_by(model.id.desc())
                                 .offset(KEEP_PER_AGENT - 1).limit(1))
    if oldest_kept is not None:
        session.execute(delete(model).where(model.agent_id == agent_id, model.id < oldest_kept))


def _note_state(session: Session, settings: SnapshotSettings, agent: Agent, row: Protection, actor: Actor, *,
                now: datetime) -> ProtectionStatus:
    """Work out ``row``'s state at ``now``; audit it (``snapshot.protection``) if it changed. Return the status."""
    status = protection_status(agent, row, settings, now=now)
    if status.state != row.state:
        record(session, actor, "snapshot.protection", "agent", agent.id, hostname=agent.hostname,
               previous=row.state, state=status.state, words=status.words)
        row.state, row.state_since = status.state, now
    return status


def protection_status(agent: Agent, row: Protection | None, settings: SnapshotSettings, *,
                      now: datetime) -> ProtectionStatus:
    """``agent``'s protection at ``now`` from its summary ``row`` (None: it never reported), in plain words."""
    if row is None:
        return ProtectionStatus(agent_id=agent.id, hostname=agent.hostname, state="never",
                                words="Not protected: no snapshot yet")
    state, words = _state_and_words(row, settings, now)
    return ProtectionStatus(
        agent_id=agent.id, hostname=agent.hostname, state=state, last_snapshot_at=row.last_snapshot_at,
        last_snapshot_id=row.last_snapshot_id, last_failure_at=row.last_failure_at, last_error=row.last_error,
        last_verified_at=row.last_verified_at, words=words,
    )


def _quoted(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= QUOTED_ERROR else text[:QUOTED_ERROR - 1] + "…"


def _state_and_words(row: Protection, settings: SnapshotSettings, now: datetime) -> tuple[str, str]:
    last = f"last snapshot {ago(row.last_snapshot_at, now=now)}" if row.last_snapshot_at else "no snapshot yet"
    if row.last_run_status == "partial":
        last += " (some files could not be read)"
    if row.last_run_status == "failed" and row.last_run_at is not None:
        failed = f"the last run failed {ago(row.last_run_at, now=now)}"
        if row.last_error:
            failed += f": {_quoted(row.last_error)}"
        return "failing", f"Not protected: {failed}; {last}"
    if row.last_snapshot_at is None:
        return "never", "Not protected: no snapshot yet"
    check_failed = (row.last_check_ok is False and row.last_check_at is not None
                    and (row.last_verified_at is None or row.last_check_at > row.last_verified_at))
    if check_failed:
        detail = f": {_quoted(row.last_check_detail)}" if row.last_check_detail else ""
        return "failing", f"Not protected: the last sample restore failed {ago(row.last_check_at, now=now)}{detail}; {last}"
    if now - row.last_snapshot_at > timedelta(hours=settings.stale_after_hours):
        return "stale", f"Not protected: {last}"
    verified = (f"last verified restore {ago(row.last_verified_at, now=now)}" if row.last_verified_at
                else "no verified restore yet")
    since = row.last_verified_at or row.first_snapshot_at or row.last_snapshot_at
    if now - since > timedelta(days=settings.unverified_after_days):
        return "unverified", f"Unverified: {last}; {verified}"
    return "protected", f"Protected: {last}; {verified}"


def statuses(session: Session, agents: Iterable[Agent], settings: SnapshotSettings, *,
             now: datetime) -> dict[str, ProtectionStatus]:
    """The protection of each of ``agents`` at ``now``, by agent id (one query for their summaries)."""
    agents = list(agents)
    rows: dict[str, Protection] = {}
    ids = [a.id for a in agents]
    for start in range(0, len(ids), 500):  # bounded IN lists
        rows.update((r.agent_id, r) for r in session.scalars(
            select(Protection).where(Protection.agent_id.in_(ids[start:start + 500]))))
    return {a.id: protection_status(a, rows.get(a.id), settings, now=now) for a in agents}


def runs(session: Session, agent: Agent, *, limit: int = KEEP_PER_AGENT) -> list[SnapshotReport]:
    """``agent``'s reported runs, newest first."""
    rows = session.scalars(select(SnapshotRun).where(SnapshotRun.agent_id == agent.id)
                           .order_by(SnapshotRun.finished_at.desc(), SnapshotRun.id.desc()).limit(limit))
    return [SnapshotReport(
        repository=r.repository, status=r.status, snapshot_id=r.snapshot_id, started_at=r.started_at,
        finished_at=r.finished_at, paths=list(r.paths or []), files_new=r.files_new, files_changed=r.files_changed,
        files_unmodified=r.files_unmodified, total_files=r.total_files, bytes_added=r.bytes_added,
        total_bytes=r.total_bytes, warnings=list(r.warnings or []), error=r.error,
    ) for r in rows]


def watch(session: Session, settings: SnapshotSettings, *, now: datetime, batch: int = 500) -> int:
    """Audit the PCs whose state changed with time alone (gone stale or unverified); return how many changed."""
    changed, after = 0, ""
    while True:
        rows = session.execute(select(Protection, Agent).join(Agent, Agent.id == Protection.agent_id)
                               .where(Protection.agent_id > after).order_by(Protection.agent_id).limit(batch)).all()
        for row, agent in rows:
            before = row.state
            _note_state(session, settings, agent, row, Actor.system("protection-watch"), now=now)
            changed += row.state != before
        if len(rows) < batch:
            return changed
        after = rows[-1][0].agent_id
