"""Handing a user's per-user identity's tickets over to the PC's agent service (docs/design.md, "One identity per
PC": moving from per-user to the service).

The old (per-user) agent signs a statement naming the new agent (the
service's), the tickets and when; the new agent sends it in a request signed
with its own key. The server links the tickets to the new agent only when both
signatures hold, the statement is fresh and each ticket is the old agent's;
then it revokes the old agent, and audits all of it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

#: How far from the server's clock a statement's time may be.
HAND_OVER_WINDOW = timedelta(minutes=10)
#: Tickets one hand-over may carry.
MAX_HAND_OVER_TICKETS = 200


class HandOverRequest(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    from_agent_id: str = Field(min_length=1, max_length=36)
    tickets: list[str] = Field(min_length=1, max_length=MAX_HAND_OVER_TICKETS)
    signed_at: datetime
    #: The old agent's signature of :func:`hand_over_payload`.
    signature: str = Field(min_length=1, max_length=200)


class HandOverResponse(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    #: The tickets now linked to the new agent, as labels (T-1042).
    tickets: list[str]
    from_agent_id: str


def hand_over_payload(from_agent_id: str, to_agent_id: str, tickets: list[str], signed_at: datetime) -> dict:
    """What the old agent signs: who hands which tickets to whom, and when."""
    return {"purpose": "hand-over", "from": from_agent_id, "to": to_agent_id, "tickets": sorted(tickets),
            "signed_at": signed_at.isoformat()}
