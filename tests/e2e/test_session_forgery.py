"""What the server's database says cannot open a shell on its own: a grant written straight into it,
forged with another key or replayed from an earlier session, is refused by the user's PC without the
user being asked; and a request whose consent window has run out opens nothing, even after a late yes."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from protocol.grants import SessionGrant, SignedGrant, openssh_fingerprint, sign_grant
from server.models import RemoteSession, SessionEventRow
from tests.support.sessions import ENGINEER, EngineerRun, UserTerminal, ssh_keygen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.name == "nt", reason="sessions run on Linux and macOS PCs"),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client"),
]


def database(desk) -> Session:
    """A connection to the live server's own SQLite database, as an attacker who owns the disk has."""
    return Session(create_engine(f"sqlite:///{desk.server.data_dir / 'helpline.db'}"))


def plant_request(desk, session_id: str, signed: SignedGrant) -> None:
    """Write a consent request carrying ``signed`` into the session's event queue, bypassing the API."""
    with database(desk) as db, db.begin():
        row = db.get(RemoteSession, session_id)
        row.event_seq += 1
        db.add(SessionEventRow(session_id=session_id, seq=row.event_seq, kind="request", at=datetime.now(UTC),
                               details={"grant": signed.model_dump(mode="json"), "engineer_name": "Alice",
                                        "engineer_username": ENGINEER, "ticket_title": "Printer offline"}))


def refused_without_asking(user: UserTerminal) -> bytes:
    shown = user.finished()
    assert b"refused without asking you" in shown, shown
    assert b"Type yes or no" not in shown
    assert user.child.exitstatus != 0
    return shown


def test_a_grant_forged_with_another_key_is_refused_without_asking(desk, terminals):
    user = UserTerminal(desk)
    terminals.append(user)
    offered = desk.session(user.session_id)
    attacker_key = ssh_keygen(desk.tmp / "attacker")
    line = (attacker_key.parent / f"{attacker_key.name}.pub").read_text().strip()
    now = datetime.now(UTC)
    grant = SessionGrant(
        grant_id=str(uuid.uuid4()), nonce=uuid.uuid4().hex * 2, agent_id=offered["agent_id"],
        host_key_fingerprint=offered["host_key_fingerprint"], ticket=desk.ticket, engineer_username=ENGINEER,
        engineer_name="Alice", organisation="IT Support", engineer_key=line,
        engineer_key_fingerprint=openssh_fingerprint(line), scopes=frozenset({"control", "files"}),
        not_before=now - timedelta(seconds=5), expires_at=now + timedelta(minutes=10), max_duration_seconds=3600,
    )
    plant_request(desk, user.session_id, sign_grant(Ed25519PrivateKey.generate(), grant))
    shown = refused_without_asking(user)
    assert b"not signed by this PC's server" in shown


def test_a_grant_replayed_from_an_earlier_session_is_refused_without_asking(desk, terminals):
    first = UserTerminal(desk)
    terminals.append(first)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--", "-o", "BatchMode=yes", "true")
    first.approve()
    status, _, err = run.finish()
    assert status == 0, err
    first.finished()
    with database(desk) as db:
        used = db.scalars(select(RemoteSession).where(RemoteSession.id == first.session_id)).one()
        replayed = SignedGrant(payload=used.grant_payload, signature=used.grant_signature)

    second = UserTerminal(desk)
    terminals.append(second)
    plant_request(desk, second.session_id, replayed)
    refused_without_asking(second)
    assert "for another session host key" in desk.wait_for_state(second.session_id, "ended")["end_reason"]


def test_a_request_that_ran_out_opens_nothing_even_if_the_user_says_yes_late(desk, terminals):
    """The consent window is ten minutes; the server's copy of its end is moved to the past instead of waiting."""
    user = UserTerminal(desk)
    terminals.append(user)
    marker = desk.tmp / "should-not-exist"
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--", f"touch {marker}")
    user.asked()
    with database(desk) as db, db.begin():
        db.get(RemoteSession, user.session_id).grant_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    status, out, err = run.finish()
    assert status == 7, err
    assert b"did not answer in time" in err and out == b""
    user.child.sendline(b"yes")
    shown = user.finished()
    assert b"is connected" not in shown
    assert not marker.exists()
    assert desk.wait_for_state(user.session_id, "ended")["end_reason"] == "the user did not answer in time"
