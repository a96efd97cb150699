"""The report names the ticket a bundle goes to: the linked one with its title, a new one, or none yet."""

from __future__ import annotations

import pytest

from agent.bundle.report_html import render_report


@pytest.mark.parametrize("extra, shown", [
    ({"ticket": "T-1002", "ticket_title": "Laptop <very> slow"}, "Ticket: <b>T-1002 — Laptop &lt;very&gt; slow</b>"),
    ({"ticket": "T-1002"}, "Ticket: <b>T-1002</b>"),
    ({"new_ticket": True}, "Ticket: <b>a new ticket, numbered when this is sent</b>"),
    ({}, "Ticket: <b>none chosen yet</b>"),
])
def test_the_report_names_the_ticket(extra, shown):
    page = render_report({"items": [], "collectors": [], "extra": extra}, {})
    assert shown in page
