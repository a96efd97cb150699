"""Ticket references, read the same way by the server, the agent and the CLI.

People write a ticket as ``T-1042``, ``t-1042``, ``#1042`` or ``1042``; all of
them mean ticket 1042, and anything else is refused here, before it can reach
a URL, a path or a database query.
"""

from __future__ import annotations

import re

from protocol.errors import InvalidInputError

TICKET_PREFIX = "T-"
MAX_DIGITS = 9  # ticket numbers fit a 32-bit column with room to spare

_REFERENCE = re.compile(rf"(?:[Tt]-|#)?([0-9]{{1,{MAX_DIGITS}}})")
_SHOWN = 40  # characters of a refused reference quoted back in the message


def parse_ticket_ref(text: str) -> int:
    """Return the number ``text`` names (``T-1042``, ``t-1042``, ``#1042``, ``1042``, spaces around allowed).

    Raise InvalidInputError with a one-line message for anything else.
    """
    if isinstance(text, str):
        match = _REFERENCE.fullmatch(text.strip())
        if match:
            return int(match.group(1))
        shown = text.strip()
        shown = shown if len(shown) <= _SHOWN else shown[:_SHOWN] + "…"
    else:
        shown = type(text).__name__
    # repr() keeps the message on one line and makes control characters visible.
    raise InvalidInputError(f"{shown!r} is not a ticket number.",
                            hint="Ticket numbers look like T-1042 (or 1042, #1042).")


def ticket_label(number: int) -> str:
    """The way a ticket is shown and sent: ``T-1042``; ValueError for a number no ticket can have."""
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 10 ** MAX_DIGITS:
        raise ValueError(f"{number!r} is not a ticket number")
    return f"{TICKET_PREFIX}{number}"


def canonical_ticket(reference: str | int) -> str:
    """The label of the ticket ``reference`` names (a number, or any spelling parse_ticket_ref takes)."""
    if isinstance(reference, int) and not isinstance(reference, bool):
        if not 0 <= reference < 10 ** MAX_DIGITS:
            raise InvalidInputError(f"{reference} is not a ticket number.", hint="Ticket numbers look like T-1042.")
        return ticket_label(reference)
    return ticket_label(parse_ticket_ref(reference))


#: Statuses in which a ticket is still being worked on: a user's commands go to such a ticket.
OPEN_STATUSES = frozenset({"new", "open", "waiting"})


def is_open(status: str) -> bool:
    """Whether a ticket in ``status`` (a TicketStatus or its value) is still being worked on (not resolved or closed)."""
    return str(getattr(status, "value", status)) in OPEN_STATUSES


def short_title(title: str, limit: int = 60) -> str:
    """A ticket title cut to one short line for a question or a list (still to be made printable where shown)."""
    line = " ".join(str(title).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
