"""Short ids as tables show them: unique, at least eight characters, and never digits alone."""

from __future__ import annotations

from protocol.identifiers import SHORT_ID, short_id, short_ids


def test_short_ids_are_unique_starts_of_at_least_the_short_length():
    ids = ["1a2b3c4d-0000-4000-8000-000000000001", "1a2b3c4d-0000-4000-8000-000000000002", "ffee0011-2233-4455-8899-aabbccddeeff"]
    shown = short_ids(ids)
    assert shown[ids[2]] == "ffee0011"
    assert shown[ids[0]] != shown[ids[1]] and all(ids[i].startswith(shown[ids[i]]) for i in range(3))
    assert len(shown[ids[0]]) == len(ids[0])  # they differ only in the last character


def test_a_short_id_is_never_digits_alone_which_would_read_as_a_ticket_number():
    for full in ("79069979-1d2e-4f00-8000-0123456789ab", "12345678-9abc-4def-8000-000000000000", "00000000-0000-4000-8000-000000000000"):
        shown = short_id(full)
        assert len(shown) > SHORT_ID and not shown.isdigit() and full.startswith(shown)
        assert short_ids([full])[full] == shown
    assert short_id("7906a979-1d2e-4f00-8000-0123456789ab") == "7906a979"
