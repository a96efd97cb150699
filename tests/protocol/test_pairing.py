"""Pairing codes: 40 bits, read aloud, typo-tolerant."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import pairing
from protocol.errors import InvalidInputError


def test_code_shape_and_entropy():
    code = pairing.new_pairing_code()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)
    assert pairing.CODE_BITS >= 40
    assert len({pairing.new_pairing_code() for _ in range(2000)}) == 2000


@pytest.mark.parametrize("typed", ["7kq2-m9xd", "7KQ2 M9XD", " 7kq2m9xd ", "7KQ2_M9XD"])
def test_normalize_accepts_what_people_type(typed):
    assert pairing.normalize(typed) == "7KQ2M9XD"


def test_confusable_letters_map_to_digits():
    assert pairing.normalize("ILO0-1234") == "1100" + "1234"


@pytest.mark.parametrize("bad", ["", "ABC", "ABCD-EFGH-J", "ABCD-EFGU", "ABCD*EFG"])
def test_normalize_refuses_what_cannot_be_a_code(bad):
    with pytest.raises(InvalidInputError):
        pairing.normalize(bad)


@given(st.text(alphabet=pairing.ALPHABET, min_size=8, max_size=8))
def test_display_normalize_round_trip(raw):
    assert pairing.normalize(pairing.display(raw)) == raw
    assert pairing.normalize(pairing.display(raw).lower()) == raw
