"""Hand-overs between server signing keys: signed by the old key (and the new), followed as a chain from the
pinned key, and never taken when the pinned key did not sign them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol import signing
from protocol.key_handover import Handover, follow, make_handover, valid_link

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


def pub(key) -> str:
    return signing.public_key_b64(key)


def test_a_handover_signed_by_the_pinned_key_is_followed():
    a, b = signing.generate_key(), signing.generate_key()
    handover = make_handover(a, b, issued_at=NOW, valid_for=YEAR)
    assert valid_link(handover, pub(a), NOW)
    assert follow(pub(a), [handover], NOW + timedelta(days=1)) == pub(b)
    assert follow(pub(b), [handover], NOW) is None  # already at the end: nothing to follow


def test_a_chain_of_rotations_is_followed_to_its_end_whatever_the_order_served():
    a, b, c = signing.generate_key(), signing.generate_key(), signing.generate_key()
    ab = make_handover(a, b, issued_at=NOW, valid_for=YEAR)
    bc = make_handover(b, c, issued_at=NOW + timedelta(days=2), valid_for=YEAR)
    assert follow(pub(a), [bc, ab], NOW + timedelta(days=3)) == pub(c)
    assert follow(pub(b), [ab, bc], NOW + timedelta(days=3)) == pub(c)


def test_a_forged_handover_is_refused():
    a, b, mallory = signing.generate_key(), signing.generate_key(), signing.generate_key()
    genuine = make_handover(a, b, issued_at=NOW, valid_for=YEAR)
    # Mallory's key signs a hand-over that claims to come from the pinned key a.
    forged = make_handover(mallory, mallory, issued_at=NOW, valid_for=YEAR)
    forged = forged.model_copy(update={"old_key": pub(a), "new_key": pub(mallory)})
    assert not valid_link(forged, pub(a), NOW)
    assert follow(pub(a), [forged], NOW) is None
    # The genuine hand-over with its new key swapped for Mallory's: the old key's signature no longer covers it.
    swapped = genuine.model_copy(update={"new_key": pub(mallory)})
    assert follow(pub(a), [swapped], NOW) is None
    # Signed by the old key but not by the new one (a key nobody proved to hold).
    unproven = genuine.model_copy(update={"new_signature": genuine.old_signature})
    assert follow(pub(a), [unproven], NOW) is None
    # A forged link after a genuine one stops the walk at the genuine end.
    after = make_handover(mallory, signing.generate_key(), issued_at=NOW, valid_for=YEAR).model_copy(
        update={"old_key": pub(b)})
    assert follow(pub(a), [genuine, after], NOW) == pub(b)


def test_an_expired_or_future_handover_is_not_followed():
    a, b = signing.generate_key(), signing.generate_key()
    handover = make_handover(a, b, issued_at=NOW, valid_for=timedelta(days=30))
    assert follow(pub(a), [handover], NOW + timedelta(days=31)) is None
    assert follow(pub(a), [handover], NOW - timedelta(hours=1)) is None
    assert follow(pub(a), [handover], NOW - timedelta(minutes=5)) == pub(b)  # clock skew tolerated


def test_a_loop_of_handovers_ends():
    a, b = signing.generate_key(), signing.generate_key()
    chain = [make_handover(a, b, issued_at=NOW, valid_for=YEAR), make_handover(b, a, issued_at=NOW, valid_for=YEAR)]
    assert follow(pub(a), chain, NOW) == pub(b)


def test_handovers_travel_as_json():
    a, b = signing.generate_key(), signing.generate_key()
    handover = make_handover(a, b, issued_at=NOW, valid_for=YEAR)
    again = Handover.model_validate_json(handover.model_dump_json())
    assert again == handover and follow(pub(a), [again], NOW) == pub(b)
