"""Finding an agent or a bundle by what a person types: a full id, a unique start of it, or a PC's host name.

As git and gh do, a short id is enough while it is unique: tables show ids cut
to :data:`protocol.identifiers.SHORT_ID` characters, and those are accepted back.
Resolution happens on the server, after the route has checked who is asking, so
a prefix can only ever find rows the caller may already see.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from protocol.errors import AmbiguousError, Audience, InvalidInputError, NotFoundError
from protocol.identifiers import MIN_PREFIX, describe_candidates, id_prefix
from protocol.untrusted import shown
from server.models import Agent, Bundle

# How many candidates an ambiguous reference names (and says how many more there are).
CANDIDATES_SHOWN = 5


def find_agent(session: Session, reference: str) -> Agent:
    """The agent ``reference`` names: its id, a unique start of it (4+ characters) or its host name.

    Raise NotFoundError when nothing matches and AmbiguousError, listing the
    candidates, when several do.
    """
    reference = reference.strip()
    exact = session.get(Agent, reference.lower()) if reference else None
    if exact is not None:
        return exact
    conditions = [func.lower(Agent.hostname) == reference.lower()]
    prefix = id_prefix(reference)
    if prefix is not None:
        conditions.append(Agent.id.startswith(prefix, autoescape=True))
    matches = list(session.scalars(select(Agent).where(or_(*conditions)).order_by(Agent.hostname, Agent.id)
                                   .limit(CANDIDATES_SHOWN + 50)))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"There is no agent {shown(reference)}.",
                            hint=f"Give a host name or at least {MIN_PREFIX} characters of the agent's id.",
                            hints={Audience.ENGINEER: "List agents with `helpline agent list`."})
    raise AmbiguousError(
        f"{shown(reference)} matches {_count(matches)} agents: "
        + describe_candidates([(a.id, a.hostname) for a in matches], CANDIDATES_SHOWN) + ".",
        hint="Give more characters of the id.",
    )


def find_bundle(session: Session, reference: str) -> Bundle:
    """The bundle ``reference`` names: its id or a unique start of it (4+ characters).

    Raise NotFoundError or InvalidInputError when nothing can match, AmbiguousError when several do.
    """
    reference = reference.strip()
    exact = session.get(Bundle, reference.lower()) if reference else None
    if exact is not None:
        return exact
    prefix = id_prefix(reference)
    if prefix is None:
        raise InvalidInputError(f"{shown(reference)} is not a bundle id.",
                                hint=f"Give at least {MIN_PREFIX} characters of the bundle's id.")
    matches = list(session.scalars(select(Bundle).where(Bundle.id.startswith(prefix, autoescape=True))
                                   .order_by(Bundle.created_at, Bundle.id).limit(CANDIDATES_SHOWN + 50)))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"There is no bundle {shown(reference)}.",
                            hints={Audience.ENGINEER: "A ticket's bundles are listed by `helpline ticket show T-…`."})
    raise AmbiguousError(
        f"{shown(reference)} matches {_count(matches)} bundles: "
        + describe_candidates([(b.id, f"{b.ticket.label} from {b.hostname}") for b in matches], CANDIDATES_SHOWN) + ".",
        hint="Give more characters of the id.",
    )


def _count(matches: Sequence[object]) -> str:
    return f"{CANDIDATES_SHOWN + 50}+" if len(matches) >= CANDIDATES_SHOWN + 50 else str(len(matches))
