"""Cloned identities: one agent key running on two PCs at once (a disk image copied with the agent's key).

Every request an agent signs names its instance (agent.store.instance_id: one installation on one boot,
shared by the service and the user's commands). The server keeps the instance it saw last and the one
before. A new instance replacing the last one is a restart or a re-installation, and is fine. The
instance before the last coming back while the last one is still alive (both seen within
``[fleet] clone_window_minutes``) means two copies take turns: the agent is quarantined, audited, and
every request of either copy is refused until an admin releases or retires it.

An agent that signs no instance (older agents) is never compared.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from protocol.schemas import AgentStatus
from server.audit import Actor
from server.fleet.tokens import quarantine
from server.models import Agent

#: The instance's last-seen time is written at most this often while it stays the same.
SEEN_INTERVAL = timedelta(seconds=60)
FLEET_INFO = "helpline.fleet"
CLONED = "its identity is in use on two PCs at once (a copied disk or agent folder)"


def note_instance(session: Session, agent: Agent, instance: str | None, *, window: timedelta, ip: str | None,
                  now: datetime) -> bool:
    """Note that ``agent`` signed a request from ``instance`` at ``now``; quarantine it if two instances
    alternate within ``window``. Return True if it was quarantined now."""
    if instance is None or agent.status != AgentStatus.ACTIVE.value:
        return False
    if agent.instance_id is None:
        agent.instance_id, agent.instance_seen_at = instance, now
        return False
    if instance == agent.instance_id:
        if agent.instance_seen_at is None or now - agent.instance_seen_at >= SEEN_INTERVAL:
            agent.instance_seen_at = now
        return False
    last_alive = agent.instance_seen_at is not None and now - agent.instance_seen_at <= window
    returning = (instance == agent.previous_instance_id and agent.previous_instance_seen_at is not None
                 and now - agent.previous_instance_seen_at <= window)
    if returning and last_alive:
        quarantine(session, Actor("system", "clone-detection", "clone detection", ip), agent, reason=CLONED, now=now)
        agent.previous_instance_id, agent.previous_instance_seen_at = agent.instance_id, agent.instance_seen_at
        agent.instance_id, agent.instance_seen_at = instance, now
        return True
    agent.previous_instance_id, agent.previous_instance_seen_at = agent.instance_id, agent.instance_seen_at
    agent.instance_id, agent.instance_seen_at = instance, now
    return False
