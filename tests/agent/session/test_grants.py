"""Session grants: signed by the pinned server key, for this PC and this host key, valid now, used once."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone

import pytest

from agent.session.grants import UsedGrants
from protocol import signing
from protocol.errors import AuthError, ForbiddenError, InvalidInputError
from protocol.grants import Scope, SignedGrant, sign_grant, verification_string, verify_grant

from tests.agent.session.conftest import AGENT_ID, make_engineer_key


@pytest.fixture
def server_key():
    return signing.generate_key()


def _verify(signed, server_key, grant, *, now=None, **changes):
    options = dict(
        pinned_server_key=signing.public_key_b64(server_key),
        agent_id=AGENT_ID,
        host_key_fingerprint=grant.host_key_fingerprint,
        now=now or datetime.now(timezone.utc),
    )
    options.update(changes)
    return verify_grant(signed, **options)


def test_a_signed_grant_verifies_and_reads_back_the_same(server_key, make_grant):
    grant = make_grant(scopes={"files"})
    signed = SignedGrant.model_validate_json(sign_grant(server_key, grant).model_dump_json())
    assert _verify(signed, server_key, grant) == grant
    assert grant.scopes == {Scope.VIEW, Scope.FILES}  # view is always implied
    assert signed.payload["scopes"] == ["files", "view"]


def test_a_grant_signed_by_another_key_is_refused(server_key, make_grant):
    grant = make_grant()
    forged = sign_grant(signing.generate_key(), grant)
    with pytest.raises(AuthError, match="not signed by this PC's server"):
        _verify(forged, server_key, grant)


@pytest.mark.parametrize("field, value", [
    ("scopes", ["control", "files", "forward", "view"]),
    ("expires_at", "2099-01-01T00:00:00Z"),
    ("engineer_username", "mallory"),
])
def test_a_tampered_field_breaks_the_signature(server_key, make_grant, field, value):
    grant = make_grant()
    signed = sign_grant(server_key, grant)
    tampered = SignedGrant(payload={**signed.payload, field: value}, signature=signed.signature)
    with pytest.raises(AuthError):
        _verify(tampered, server_key, grant)


def test_a_grant_for_another_agent_or_host_key_is_forbidden(server_key, make_grant):
    grant = make_grant()
    signed = sign_grant(server_key, grant)
    with pytest.raises(ForbiddenError, match="another PC"):
        _verify(signed, server_key, grant, agent_id="agent-other")
    with pytest.raises(ForbiddenError, match="another session host key"):
        _verify(signed, server_key, grant, host_key_fingerprint="SHA256:" + "A" * 43)


def test_validity_window_with_the_skew_allowance(server_key, make_grant):
    start = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    grant = make_grant(not_before=start, expires_at=start + timedelta(minutes=30))
    signed = sign_grant(server_key, grant)
    skew = timedelta(seconds=60)
    # Edges: exactly one skew early is still fine; one second more is not.
    assert _verify(signed, server_key, grant, now=start - skew)
    with pytest.raises(AuthError, match="not valid yet"):
        _verify(signed, server_key, grant, now=start - skew - timedelta(seconds=1))
    assert _verify(signed, server_key, grant, now=grant.expires_at + skew - timedelta(seconds=1))
    with pytest.raises(AuthError, match="expired"):
        _verify(signed, server_key, grant, now=grant.expires_at + skew)
    with pytest.raises(AuthError, match="expired"):
        _verify(signed, server_key, grant, now=grant.expires_at + timedelta(hours=1), skew=timedelta(0))


def test_an_unknown_scope_is_invalid_input_even_when_signed(server_key, make_grant):
    grant = make_grant()
    payload = {**grant.model_dump(mode="json"), "scopes": ["view", "screen"]}
    signed = SignedGrant(payload=payload, signature=signing.sign(server_key, {"purpose": "session-grant", "grant": payload}))
    with pytest.raises(InvalidInputError, match="scopes"):
        _verify(signed, server_key, grant)


def test_a_grant_signature_is_not_valid_for_another_purpose(server_key, make_grant):
    grant = make_grant()
    payload = grant.model_dump(mode="json")
    bare = SignedGrant(payload=payload, signature=signing.sign(server_key, payload))
    with pytest.raises(AuthError):
        _verify(bare, server_key, grant)


def test_a_grant_checks_its_own_fields(make_grant, engineer):
    with pytest.raises(ValueError, match="fingerprint does not match"):
        make_grant(engineer_key_fingerprint="SHA256:" + "B" * 43)
    with pytest.raises(ValueError, match="time zone"):
        make_grant(expires_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="after not_before"):
        now = datetime.now(timezone.utc)
        make_grant(not_before=now, expires_at=now)


def test_the_verification_string_is_bound_to_the_grant_and_the_engineer_key(make_grant, engineer):
    grant = make_grant()
    shown = verification_string(grant, engineer.line)
    assert len(shown) == 11 and shown.replace(" ", "").isdigit()
    assert verification_string(grant, grant.engineer_key_fingerprint) == shown  # same from the fingerprint
    assert verification_string(grant, make_engineer_key().line) != shown
    other_nonce = grant.model_copy(update={"nonce": "f" * 64})
    assert verification_string(other_nonce, engineer.line) != shown
    other_host = grant.model_copy(update={"host_key_fingerprint": "SHA256:" + "C" * 43})
    assert verification_string(other_host, engineer.line) != shown


def test_a_used_grant_is_refused_again_after_a_reload(tmp_path, make_grant):
    grant = make_grant()
    now = datetime.now(timezone.utc)
    UsedGrants(tmp_path).claim(grant, now=now)
    reloaded = UsedGrants(tmp_path)  # as after a restart
    assert reloaded.was_used(grant)
    with pytest.raises(AuthError, match="used already"):
        reloaded.claim(grant, now=now)
    with pytest.raises(AuthError, match="used already"):  # the same nonce under a new id is a replay too
        reloaded.claim(make_grant(nonce=grant.nonce), now=now)
    assert stat.S_IMODE((tmp_path / "used-grants.json").stat().st_mode) == 0o600


def test_expired_entries_are_pruned(tmp_path, make_grant):
    now = datetime.now(timezone.utc)
    old = make_grant(not_before=now - timedelta(hours=2), expires_at=now - timedelta(hours=1))
    store = UsedGrants(tmp_path)
    store.claim(old, now=now - timedelta(hours=1, minutes=30))
    store.claim(make_grant(), now=now)
    assert len(UsedGrants(tmp_path)) == 1
    assert not UsedGrants(tmp_path).was_used(old)
