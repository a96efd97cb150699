"""Errors cross HTTP and come back as the same kind of error, with the same exit status."""

from __future__ import annotations

import pytest

from protocol import errors as st


@pytest.mark.parametrize("cls", [row[0] for row in st.HTTP_ERRORS])
def test_round_trip(cls):
    http, code = st.http_status_of(cls("x"))
    assert st.error_class_for(http, code) is cls
    assert st.error_class_for(http, code)("x").status == cls("x").status


def test_unmapped_and_unknown():
    assert st.http_status_of(st.HelplineError("x")) == (500, "internal")
    assert st.error_class_for(500, "internal") is st.HelplineError
    assert st.error_class_for(502, None) is st.UnavailableError
    assert st.error_class_for(400, None) is st.InvalidInputError
    assert st.error_class_for(422, "damaged") is st.DamagedError
    assert st.error_class_for(422, None) is st.InvalidInputError
