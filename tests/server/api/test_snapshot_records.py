"""Snapshot records: PCs report runs and sample restores, engineers read protection in plain words, escrow at rest."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from server import escrow, jobs
from server.models import EscrowedPassword, SnapshotRun
from server.snapshots import KEEP_PER_AGENT

SNAPSHOT = "3f0c1d2e" + "a" * 56
PASSWORD = "grated-carrot-umbrella-7731"


def run(helpline, pc, *, status="ok", ago=timedelta(0), snapshot=SNAPSHOT, **fields):
    """Report a snapshot run of ``pc`` that finished ``ago`` before the clock's time."""
    finished = helpline.clock() - ago
    body = {"repository": "server", "status": status, "started_at": (finished - timedelta(minutes=3)).isoformat(),
            "finished_at": finished.isoformat(), **fields}
    if snapshot and status != "failed":
        body["snapshot_id"] = snapshot
    return helpline.call("POST", "agent/snapshots/reports", pc, json=body)


def verify(helpline, pc, *, ok=True, ago=timedelta(0), detail=""):
    at = helpline.clock() - ago
    return helpline.call("POST", "agent/snapshots/verifications", pc, json={
        "repository": "server", "snapshot_id": SNAPSHOT, "at": at.isoformat(), "files_checked": 12,
        "bytes_checked": 4096, "ok": ok, "detail": detail})


def protection(helpline, token, pc):
    """``pc``'s protection as an engineer reads it (``token`` None: a fresh engineer, for tests that move the clock)."""
    return helpline.ok("GET", f"agents/{pc.agent_id}/protection", token or helpline.token())


def test_a_pc_reports_runs_and_an_engineer_reads_them_newest_first(helpline):
    pc, engineer = helpline.enrolled_pc("laptop-7"), helpline.token()
    assert run(helpline, pc, ago=timedelta(hours=2), paths=["/home/ada"], files_new=3, bytes_added=2048,
               warnings=["/home/ada/locked.db: permission denied"], status="partial").json() == {"status": "protected"}
    assert run(helpline, pc, status="failed", error="repository is locked").json() == {"status": "failing"}
    runs = helpline.ok("GET", f"agents/{pc.agent_id}/snapshots", engineer)
    assert [(r["status"], r["error"]) for r in runs] == [("failed", "repository is locked"), ("partial", None)]
    assert runs[1]["paths"] == ["/home/ada"] and runs[1]["files_new"] == 3 and runs[1]["bytes_added"] == 2048
    assert runs[1]["warnings"] == ["/home/ada/locked.db: permission denied"]
    assert helpline.ok("GET", "agents/laptop-7/snapshots?limit=1", engineer)[0]["status"] == "failed"


def test_protection_in_plain_words_through_its_states(helpline, clock):
    pc, engineer = helpline.enrolled_pc(), None
    assert protection(helpline, engineer, pc) | {"words": None} == {
        "agent_id": pc.agent_id, "hostname": "pc-1", "state": "never", "last_snapshot_at": None,
        "last_snapshot_id": None, "last_failure_at": None, "last_error": None, "last_verified_at": None, "words": None}
    assert protection(helpline, engineer, pc)["words"] == "Not protected: no snapshot yet"

    run(helpline, pc, ago=timedelta(minutes=40))
    verify(helpline, pc, ago=timedelta(hours=30))
    status = protection(helpline, engineer, pc)
    assert status["state"] == "protected"
    assert status["words"] == "Protected: last snapshot 40 minutes ago; last verified restore yesterday"
    assert status["last_snapshot_id"] == SNAPSHOT
    assert datetime.fromisoformat(status["last_snapshot_at"]) == clock() - timedelta(minutes=40)

    clock.advance(hours=26)
    status = protection(helpline, engineer, pc)
    assert (status["state"], status["words"]) == ("stale", "Not protected: last snapshot yesterday")

    run(helpline, pc)
    clock.advance(days=7)
    run(helpline, pc)
    status = protection(helpline, engineer, pc)
    assert (status["state"], status["words"]) == (
        "unverified", "Unverified: last snapshot just now; last verified restore 9 days ago")

    verify(helpline, pc, ok=False, detail="2 of 12 files differ")
    status = protection(helpline, engineer, pc)
    assert status["state"] == "failing"
    assert status["words"] == ("Not protected: the last sample restore failed just now: 2 of 12 files differ; "
                               "last snapshot just now")
    verify(helpline, pc)
    assert protection(helpline, engineer, pc)["state"] == "protected"


def test_a_failed_run_never_shows_as_protected(helpline, clock):
    pc, engineer = helpline.enrolled_pc(), None
    assert run(helpline, pc, status="failed", error="wrong password").json() == {"status": "failing"}
    status = protection(helpline, engineer, pc)
    assert status["state"] == "failing" and status["last_snapshot_at"] is None
    assert status["words"] == "Not protected: the last run failed just now: wrong password; no snapshot yet"
    # a failed run may not claim a snapshot, and an ok one must name it
    assert run(helpline, pc, snapshot=None).status_code == 422
    run(helpline, pc, ago=timedelta(minutes=5))
    assert protection(helpline, engineer, pc)["state"] == "failing"  # the failure came later
    run(helpline, pc)
    assert protection(helpline, engineer, pc)["state"] == "protected"


def test_a_new_pc_is_not_unverified_before_the_allowance_has_passed(helpline, clock):
    pc, engineer = helpline.enrolled_pc(), None
    run(helpline, pc)
    assert protection(helpline, engineer, pc)["words"] == "Protected: last snapshot just now; no verified restore yet"
    for _ in range(9):
        clock.advance(days=1)
        run(helpline, pc)
    assert protection(helpline, engineer, pc)["words"] == "Unverified: last snapshot just now; no verified restore yet"


def test_reports_dated_in_the_future_or_backwards_are_refused(helpline, clock):
    pc = helpline.enrolled_pc()
    ahead = run(helpline, pc, ago=-timedelta(hours=3))
    assert ahead.status_code == 422 and "ahead of the server's clock" in ahead.json()["error"]["message"]
    assert run(helpline, pc, ago=-timedelta(minutes=9)).status_code == 200  # within the allowance for drift
    assert verify(helpline, pc, ago=-timedelta(days=2)).status_code == 422
    backwards = helpline.call("POST", "agent/snapshots/reports", pc, json={
        "repository": "local", "status": "failed", "started_at": clock().isoformat(),
        "finished_at": (clock() - timedelta(hours=1)).isoformat()})
    assert backwards.status_code == 422


def test_only_changes_of_state_are_audited_and_time_alone_is_caught_by_the_watch(helpline, clock):
    pc = helpline.enrolled_pc()
    run(helpline, pc)
    run(helpline, pc)
    verify(helpline, pc)
    assert [(e.details["previous"], e.details["state"]) for e in helpline.audit("snapshot.protection")] == [
        ("never", "protected")]
    clock.advance(hours=27)
    assert jobs.watch_protection(helpline.runtime) == "1 PCs changed protection state"
    assert jobs.watch_protection(helpline.runtime) == "0 PCs changed protection state"
    events = helpline.audit("snapshot.protection")
    assert [(e.details["previous"], e.details["state"], e.actor_id) for e in events] == [
        ("never", "protected", pc.agent_id), ("protected", "stale", "protection-watch")]
    assert events[1].details["words"] == "Not protected: last snapshot yesterday"


def test_the_watch_goes_through_every_pc_in_batches(helpline, clock):
    from server import snapshots

    pcs = [helpline.enrolled_pc(f"pc-{n}") for n in range(3)]
    for pc in pcs:
        run(helpline, pc)
    clock.advance(hours=30)
    with helpline.db() as session:
        assert snapshots.watch(session, helpline.settings.snapshots, now=clock(), batch=1) == 3
    assert sorted(e.target_id for e in helpline.audit("snapshot.protection") if e.details["state"] == "stale") == sorted(
        pc.agent_id for pc in pcs)


def test_the_newest_runs_are_kept(helpline, clock):
    pc = helpline.enrolled_pc()
    other = helpline.enrolled_pc("pc-2")
    run(helpline, other, status="failed", error="first of the other PC")
    for number in range(KEEP_PER_AGENT + 3):
        clock.advance(minutes=1)
        assert run(helpline, pc, status="failed", error=f"run {number}").status_code == 200
    with helpline.db() as session:
        errors = list(session.scalars(select(SnapshotRun.error).where(SnapshotRun.agent_id == pc.agent_id)))
        assert len(errors) == KEEP_PER_AGENT and "run 2" not in errors and "run 3" in errors
        assert session.scalar(select(SnapshotRun.error).where(SnapshotRun.agent_id == other.agent_id)) == "first of the other PC"


def test_records_are_for_engineers_and_each_pc_writes_only_its_own(helpline):
    pc, other = helpline.enrolled_pc("pc-1"), helpline.enrolled_pc("pc-2")
    run(helpline, pc)
    # a PC's signature is not an engineer's token: it reads no PC's records, not even its own
    for target in (pc, other):
        assert helpline.call("GET", f"agents/{target.agent_id}/snapshots", pc).status_code == 401
        assert helpline.call("GET", f"agents/{target.agent_id}/protection", pc).status_code == 401
    # an engineer's token is no PC: it cannot report for one
    engineer = helpline.token()
    assert helpline.call("POST", "agent/snapshots/reports", engineer, json={}).status_code == 401
    assert helpline.call("PUT", "agent/snapshots/escrow", engineer, json={"password": PASSWORD}).status_code == 401
    # nobody at all
    assert helpline.call("GET", f"agents/{pc.agent_id}/protection").status_code == 401
    # a report names no PC: it lands on the PC that signed it
    assert run(helpline, other, status="failed", error="disk full", agent_id=pc.agent_id).status_code == 422
    run(helpline, other, status="failed", error="disk full")
    assert protection(helpline, engineer, pc)["state"] == "protected"
    assert protection(helpline, engineer, other)["state"] == "failing"


def test_agent_list_shows_protection_and_filters_the_pcs_to_look_at(helpline, clock):
    engineer = helpline.token()
    good, stale, silent = helpline.enrolled_pc("good"), helpline.enrolled_pc("stale"), helpline.enrolled_pc("silent")
    run(helpline, stale, ago=timedelta(hours=30))
    run(helpline, good)
    listed = {a["hostname"]: a for a in helpline.ok("GET", "agents", engineer)}
    assert {h: a["protection"] for h, a in listed.items()} == {"good": "protected", "stale": "stale", "silent": "never"}
    assert listed["stale"]["protection_words"] == "Not protected: last snapshot yesterday"
    assert datetime.fromisoformat(listed["good"]["last_snapshot_at"]) == clock()
    needing = helpline.ok("GET", "agents?protection=stale&protection=never&protection=failing&protection=unverified", engineer)
    assert sorted(a["hostname"] for a in needing) == ["silent", "stale"]
    assert helpline.ok("GET", f"agents/{silent.agent_id}", engineer)["protection_words"] == "Not protected: no snapshot yet"
    assert helpline.call("GET", "agents?protection=sideways", engineer).status_code == 422


# --- escrow -------------------------------------------------------------------------------------


def test_escrow_is_sealed_at_rest_and_audited_without_the_password(helpline, clock):
    pc = helpline.enrolled_pc()
    assert helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD}) == {"status": "stored"}
    assert helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD + "-2"}) == {"status": "replaced"}
    with helpline.db() as session:
        row = session.get(EscrowedPassword, pc.agent_id)
        stored = row.sealed_key + row.sealed_password
        assert PASSWORD.encode() not in stored and b"grated" not in stored
        assert escrow.escrowed_password(session, pc.agent_id) == PASSWORD + "-2"
        # a seal is bound to its agent: copied onto another agent it does not open
        with pytest.raises(ValueError):
            helpline.runtime.escrow.key.open("another-agent", row.sealed_key, row.sealed_password)
    events = helpline.audit("snapshot.escrow.stored")
    assert [e.details for e in events] == [{"replaced": False}, {"replaced": True}]
    assert all("grated" not in repr(e.details) for e in helpline.audit(""))


def test_a_refused_password_is_not_echoed(helpline):
    pc = helpline.enrolled_pc()
    long = "secret-" + "x" * 1100
    refused = helpline.call("PUT", "agent/snapshots/escrow", pc, json={"password": long})
    assert refused.status_code == 422 and "secret-" not in refused.text


def test_a_seal_from_another_server_key_opens_nothing(helpline, runtime):
    from protocol import signing
    pc = helpline.enrolled_pc()
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD})
    other = escrow.EscrowKey(signing.generate_key())
    with helpline.db() as session:
        row = session.get(EscrowedPassword, pc.agent_id)
        with pytest.raises(ValueError):
            other.open(pc.agent_id, row.sealed_key, row.sealed_password)
        assert escrow.open_password(session, other, pc.agent_id) is None  # told apart by the key id
        assert escrow.open_password(session, runtime.escrow.key, pc.agent_id) == PASSWORD


def test_escrow_release_is_refused_until_a_replacement_restore_names_the_pc(helpline):
    old, new = helpline.enrolled_pc("old"), helpline.enrolled_pc("new")
    helpline.ok("PUT", "agent/snapshots/escrow", old, json={"password": PASSWORD})
    refused = helpline.call("GET", "agent/snapshots/escrow?request_id=r-123", new)
    assert refused.status_code == 403 and PASSWORD not in refused.text
    assert helpline.call("GET", "agent/snapshots/escrow?request_id=r-123", old).status_code == 403
    events = helpline.audit("snapshot.escrow.release_refused")
    assert [(e.actor_id, e.details["request_id"]) for e in events] == [(new.agent_id, "r-123"), (old.agent_id, "r-123")]
    assert helpline.call("GET", "agent/snapshots/escrow?request_id=a/b", new).status_code == 422


def test_escrow_is_released_to_the_pc_a_replacement_restore_names(helpline, monkeypatch):
    from server.restic_rest import hooks

    old, new, stranger = helpline.enrolled_pc("old"), helpline.enrolled_pc("new"), helpline.enrolled_pc("stranger")
    helpline.ok("PUT", "agent/snapshots/escrow", old, json={"password": PASSWORD})

    def replacement_source(session, caller, request_id):  # what the engineer -> PC request channel decides
        if (caller.id, request_id) != (new.agent_id, "r-7"):
            raise hooks.ForbiddenError("No replacement restore names this PC.")
        return old.agent_id

    monkeypatch.setattr(hooks, "replacement_source", replacement_source)
    assert helpline.ok("GET", "agent/snapshots/escrow?request_id=r-7", new) == {"password": PASSWORD}
    assert helpline.call("GET", "agent/snapshots/escrow?request_id=r-7", stranger).status_code == 403
    [released] = helpline.audit("snapshot.escrow.released")
    assert (released.actor_id, released.target_id) == (new.agent_id, old.agent_id)
    assert released.details == {"request_id": "r-7", "to_agent": new.agent_id}
    # an old PC that escrowed nothing: nothing to release
    monkeypatch.setattr(hooks, "replacement_source", lambda session, caller, request_id: stranger.agent_id)
    assert helpline.call("GET", "agent/snapshots/escrow?request_id=r-8", new).status_code == 404


class TestEscrowOff:
    @pytest.fixture
    def server_settings(self, server_settings):
        snapshots = server_settings.snapshots.model_copy(update={"escrow": False})
        return server_settings.model_copy(update={"snapshots": snapshots})

    def test_a_password_is_refused_with_a_clear_message_and_the_refusal_audited(self, helpline):
        pc = helpline.enrolled_pc()
        refused = helpline.call("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD})
        assert refused.status_code == 403
        assert refused.json()["error"]["message"] == "This server does not keep snapshot passwords (escrow is turned off)."
        with helpline.db() as session:
            assert session.scalars(select(EscrowedPassword)).all() == []
        [event] = helpline.audit("snapshot.escrow.refused")
        assert event.actor_id == pc.agent_id and "grated" not in repr(event.details)
        assert helpline.call("GET", "agent/snapshots/escrow?request_id=r-1", pc).status_code == 403

    def test_passwords_escrowed_before_are_purged_and_never_handed_out(self, helpline, runtime):
        pc = helpline.enrolled_pc()
        sealed_key, sealed_password = runtime.escrow.key.seal(pc.agent_id, PASSWORD)
        with helpline.db() as session:  # escrowed while escrow was still on
            session.add(EscrowedPassword(agent_id=pc.agent_id, key_id=runtime.escrow.key.key_id, sealed_key=sealed_key,
                                         sealed_password=sealed_password, created_at=helpline.clock(),
                                         updated_at=helpline.clock()))
        with helpline.db() as session:
            assert escrow.escrowed_password(session, pc.agent_id) is None  # off: the server's own work gets none
        assert jobs.purge_escrow(runtime) == "escrow is off: deleted 1 escrowed passwords"
        with helpline.db() as session:
            assert session.get(EscrowedPassword, pc.agent_id) is None
        [event] = helpline.audit("snapshot.escrow.purged")
        assert event.target_id == pc.agent_id


def test_the_purge_job_leaves_escrow_alone_while_it_is_on(helpline, runtime):
    pc = helpline.enrolled_pc()
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD})
    assert jobs.purge_escrow(runtime) == "escrow is on: nothing to purge"
    with helpline.db() as session:
        assert escrow.escrowed_password(session, pc.agent_id) == PASSWORD
