"""Ticket references: every accepted spelling means the same ticket; anything else is one clear refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ExitStatus, InvalidInputError
from protocol.tickets import canonical_ticket, parse_ticket_ref, ticket_label


@pytest.mark.parametrize("text", [
    "T-1042", "t-1042", "1042", "#1042", " T-1042 ", "\tt-1042\n", "  #1042", "T-0001042",
])
def test_spellings_of_one_ticket(text):
    assert parse_ticket_ref(text) == 1042
    assert canonical_ticket(text) == "T-1042"


@pytest.mark.parametrize("text", [
    "", " ", "T-", "t-", "#", "T", "t1042", "T1042", "t1001x", "T-1001?x=1", "T-1001#frag", "../1001", "1001/..",
    "T-1001/notes", "T--1001", "T -1001", "# 1001", "#T-1001", "-1001", "+1001", "1e3", "10.42", "0x10",
    "T-1234567890", "T-١٠٤٢", "１０４２", "T-1042\nT-1043", "T-10 42", "%31001", "T_1042", "tt-1042",
])
def test_everything_else_is_refused_in_one_line(text):
    with pytest.raises(InvalidInputError) as err:
        parse_ticket_ref(text)
    assert err.value.status == ExitStatus.INVALID
    assert "is not a ticket number" in err.value.message
    assert "\n" not in err.value.message and "T-1042" in err.value.hint


def test_a_long_refused_reference_is_shortened():
    with pytest.raises(InvalidInputError) as err:
        parse_ticket_ref("x" * 5000)
    assert len(err.value.message) < 100


@pytest.mark.parametrize("value", [None, 1042, b"1042"])
def test_non_text_is_refused(value):
    with pytest.raises(InvalidInputError):
        parse_ticket_ref(value)


@given(st.integers(min_value=0, max_value=999_999_999), st.sampled_from(["T-", "t-", "#", ""]),
       st.text(alphabet=" \t\r\n", max_size=3), st.text(alphabet=" \t\r\n", max_size=3))
def test_every_spelling_round_trips(number, prefix, before, after):
    assert parse_ticket_ref(f"{before}{prefix}{number}{after}") == number
    assert parse_ticket_ref(ticket_label(number)) == number
    assert canonical_ticket(number) == ticket_label(number) == f"T-{number}"


@given(st.text(max_size=30))
def test_any_text_is_a_number_or_a_refusal(text):
    try:
        number = parse_ticket_ref(text)
    except InvalidInputError as exc:
        assert "\n" not in exc.message
    else:
        assert 0 <= number < 10**9
        # What was accepted is digits behind an optional prefix, nothing else.
        core = text.strip().removeprefix("#").removeprefix("T-").removeprefix("t-")
        assert core.isascii() and core.isdigit() and int(core) == number


@pytest.mark.parametrize("number", [-1, 10**9, True])
def test_labels_only_for_ticket_numbers(number):
    with pytest.raises(ValueError):
        ticket_label(number)
    with pytest.raises(InvalidInputError):
        canonical_ticket(number)
