"""Rotating the server's signing key: admins only, audited; hand-overs served to anyone; agents follow them
without enrolling again and refuse forged ones; escrowed passwords still open; grants and PC requests are
signed by the new key; a rotation made by another process is noticed; an interrupted one is completed."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from agent.client import HelplineClient
from agent.http import AgentSigner, UnverifiedAnswerError
from protocol import signing
from protocol.key_handover import Handover, follow, make_handover
from protocol.pc_requests import SignedPcRequest, verify_pc_request
from server import escrow, keys
from server.models import EscrowedPassword
from tests.server.api.test_pc_requests import RESTORE, linked_pc

PASSWORD = "correct horse battery staple"


@pytest.fixture
def agent_client(helpline, monkeypatch):
    """A factory of the agent's own typed client for ``pc`` pinned to ``pinned``, on the in-process app."""
    monkeypatch.setenv("HELPLINE_INSECURE_HTTP", "1")  # the in-process app answers as http://testserver
    repinned: list[str] = []

    def make(pc, pinned: str) -> HelplineClient:
        signer = AgentSigner(pc.agent_id, pc.key.key, pinned, clock=helpline.clock, on_repin=repinned.append)
        return HelplineClient.connect("http://testserver", agent=signer, transport=helpline.http._transport)

    make.repinned = repinned
    return make


def rotate(helpline, admin: str) -> dict:
    return helpline.ok("POST", "server/key-rotations", admin)


def test_only_an_admin_rotates_and_the_rotation_is_audited(helpline):
    before = helpline.runtime.public_key
    assert helpline.call("POST", "server/key-rotations", helpline.token()).status_code == 403
    assert helpline.call("POST", "server/key-rotations").status_code == 401
    assert helpline.runtime.public_key == before
    done = rotate(helpline, helpline.admin())
    assert done["previous_fingerprint"] == signing.fingerprint(before)
    assert done["fingerprint"] == signing.fingerprint(helpline.runtime.public_key) != done["previous_fingerprint"]
    assert helpline.ok("GET", "server")["fingerprint"] == done["fingerprint"]
    [event] = helpline.audit("server.key.rotated")
    assert event.target_id == done["fingerprint"] and event.details["previous"] == done["previous_fingerprint"]
    # The hand-over is public (it carries its own signatures) and leads from the old key to the new one.
    [served] = [Handover.model_validate(h) for h in helpline.ok("GET", "server/key-handovers")]
    assert follow(before, [served], helpline.clock()) == helpline.runtime.public_key
    assert served.not_after - served.issued_at == timedelta(days=helpline.settings.keys.handover_days)
    # The old key is kept, retired, next to the new one; private files stay private.
    key_file = helpline.settings.resolved_signing_key_file
    [retired] = sorted(keys.retired_dir(key_file).glob("*.pem"))
    assert signing.public_key_b64(signing.load_private_key(retired)) == before
    assert retired.stat().st_mode & 0o777 == 0o600 and key_file.stat().st_mode & 0o777 == 0o600


def test_an_agent_follows_the_handover_without_enrolling_again(helpline, agent_client):
    engineer = helpline.token()
    pc, number = linked_pc(helpline, engineer)
    old = helpline.runtime.public_key
    rotate(helpline, helpline.admin())
    with agent_client(pc, old) as api:
        assert api.my_ticket(number).title == "Lost my report"  # signed by the new key: followed, then believed
        assert api.pinned_server_key == helpline.runtime.public_key
    assert agent_client.repinned == [helpline.runtime.public_key]
    # A PC request made after the rotation is signed by the new key, which the agent now trusts.
    made = helpline.ok("POST", f"agents/{pc.agent_id}/requests", engineer, json={**RESTORE, "ticket": number})
    with agent_client(pc, agent_client.repinned[-1]) as api:
        [signed] = api.next_pc_requests(wait=0)
    request = verify_pc_request(signed, pinned_server_key=agent_client.repinned[-1], agent_id=pc.agent_id,
                                now=helpline.clock())
    assert request.id == made["id"]
    with pytest.raises(Exception):  # and not by the retired one
        verify_pc_request(signed, pinned_server_key=old, agent_id=pc.agent_id, now=helpline.clock())


def test_an_agent_offline_through_two_rotations_follows_the_chain(helpline, agent_client, clock):
    pc, number = linked_pc(helpline, helpline.token())
    first = helpline.runtime.public_key
    rotate(helpline, helpline.admin())
    clock.advance(days=30)
    rotate(helpline, helpline.admin())
    assert len(helpline.ok("GET", "server/key-handovers")) == 2
    with agent_client(pc, first) as api:
        assert api.my_ticket(number).number == number
    assert agent_client.repinned == [helpline.runtime.public_key]


def test_a_forged_handover_is_refused_and_nothing_is_pinned(helpline, agent_client, monkeypatch):
    pc, number = linked_pc(helpline, helpline.token())
    pinned = helpline.runtime.public_key
    # Someone on the way answers with their own key and serves a hand-over to it that the pinned key never signed.
    mallory = signing.generate_key()
    forged = make_handover(mallory, mallory, issued_at=helpline.clock(), valid_for=timedelta(days=1))
    forged = forged.model_copy(update={"old_key": pinned, "new_key": signing.public_key_b64(mallory)})
    monkeypatch.setattr(helpline.runtime.keys, "_current", mallory)
    monkeypatch.setattr(helpline.runtime.keys, "_handovers", (forged,))
    monkeypatch.setattr(helpline.runtime.keys, "refresh", lambda: None)
    with agent_client(pc, pinned) as api, pytest.raises(UnverifiedAnswerError):
        api.my_ticket(number)
    assert agent_client.repinned == []


def test_an_answer_signed_by_an_unknown_key_with_no_handover_is_refused(helpline, agent_client):
    pc, number = linked_pc(helpline, helpline.token())
    stranger = signing.public_key_b64(signing.generate_key())
    with agent_client(pc, stranger) as api, pytest.raises(UnverifiedAnswerError):
        api.my_ticket(number)
    assert agent_client.repinned == []


def test_escrowed_passwords_still_open_after_rotations_and_new_ones_use_the_new_key(helpline, clock):
    pc = helpline.enrolled_pc()
    helpline.ok("PUT", "agent/snapshots/escrow", pc, json={"password": PASSWORD})
    admin = helpline.admin()
    rotate(helpline, admin)
    rotate(helpline, admin)
    with helpline.db() as session:
        old_id = session.get(EscrowedPassword, pc.agent_id).key_id
        assert old_id != helpline.runtime.escrow.key.key_id
        assert escrow.escrowed_password(session, pc.agent_id) == PASSWORD
    other = helpline.enrolled_pc("pc-2")
    helpline.ok("PUT", "agent/snapshots/escrow", other, json={"password": PASSWORD + "-2"})
    with helpline.db() as session:
        assert session.get(EscrowedPassword, other.agent_id).key_id == helpline.runtime.escrow.key.key_id
        assert escrow.escrowed_password(session, other.agent_id) == PASSWORD + "-2"
    # A server that lost its retired keys (the key file alone restored) cannot open the old seal.
    alone = escrow.EscrowKey(helpline.runtime.signing_key)
    with helpline.db() as session:
        assert escrow.open_password(session, alone, pc.agent_id) is None


def test_a_rotation_by_another_process_is_noticed_at_the_next_signature(helpline, agent_client):
    pc, number = linked_pc(helpline, helpline.token())
    old = helpline.runtime.public_key
    key_file = helpline.settings.resolved_signing_key_file
    handover = keys.rotate_files(key_file, now=helpline.clock(), valid_for=timedelta(days=1))  # `server rotate-key`
    assert helpline.runtime.public_key == handover.new_key != old
    assert helpline.ok("GET", "server")["public_key"] == handover.new_key
    with agent_client(pc, old) as api:
        api.my_ticket(number)
    assert agent_client.repinned == [handover.new_key]


def test_an_interrupted_rotation_is_completed_when_the_keys_are_read(tmp_path, clock):
    key_file = tmp_path / "server-signing-key.pem"
    ring = keys.KeyRing.open(key_file)
    old = ring.public_key
    # A rotation that wrote the new key beside the current one and its hand-over, then stopped.
    new = signing.generate_key()
    handover = make_handover(signing.load_private_key(key_file), new, issued_at=clock(), valid_for=timedelta(days=1))
    signing.save_private_key(new, key_file.with_name(key_file.name + ".next"))
    keys.handovers_file(key_file).write_text(f"[{handover.model_dump_json()}]")
    again = keys.KeyRing.open(key_file)
    assert again.public_key == signing.public_key_b64(new) != old
    assert not key_file.with_name(key_file.name + ".next").exists()
    # A new key written by a rotation that stopped before its hand-over was never announced: it is dropped.
    signing.save_private_key(signing.generate_key(), key_file.with_name(key_file.name + ".next"))
    assert keys.KeyRing.open(key_file).public_key == signing.public_key_b64(new)
    assert os.path.exists(key_file)
