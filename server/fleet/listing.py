"""The fleet at a glance: each agent's problems, and the filters of `helpline agent list` (on the server)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from protocol.schemas import AgentPublic, AgentStatus, ProtectionState
from server.models import Agent

OFFLINE = "offline"
NOT_PROTECTED = "not protected"
QUARANTINED = "quarantined"
PENDING = "pending"
POLICY_BEHIND = "policy behind"
#: The problems an agent may have, in the order they are shown.
PROBLEMS = (QUARANTINED, PENDING, OFFLINE, NOT_PROTECTED, POLICY_BEHIND)


def normalized(problem: str) -> str:
    """``not-protected`` or ``Not_Protected`` as ``not protected``: how a filter names a problem."""
    return " ".join(problem.replace("-", " ").replace("_", " ").lower().split())


def problems(agent: Agent, public: AgentPublic, *, offline_after: timedelta, now: datetime) -> list[str]:
    """What needs a look about ``agent``, in short words. Ended agents (revoked, refused, retired) have none:
    they are history. Paired-only agents (per-user identities, no service) are never offline or unprotected."""
    status = agent.status
    if status == AgentStatus.QUARANTINED.value:
        return [QUARANTINED]
    if status == AgentStatus.PENDING.value:
        return [PENDING]
    if status != AgentStatus.ACTIVE.value or agent.revoked_at is not None or not agent.enrolled:
        return []
    found = []
    if agent.last_seen_at is None or now - agent.last_seen_at > offline_after:
        found.append(OFFLINE)
    if public.protection is not None and public.protection is not ProtectionState.PROTECTED:
        found.append(NOT_PROTECTED)
    # Its group has a newer policy than the one it reported running (server.fleet.policies.policy_behind).
    if public.current_policy_version is not None and (public.policy_version or 0) < public.current_policy_version:
        found.append(POLICY_BEHIND)
    return found


def having(listed: Iterable[AgentPublic], wanted: Iterable[str]) -> list[AgentPublic]:
    """The agents of ``listed`` with at least one of the ``wanted`` problems (all of them if none is wanted)."""
    wanted = {normalized(w) for w in wanted}
    listed = list(listed)
    return [a for a in listed if wanted & set(a.problems)] if wanted else listed
