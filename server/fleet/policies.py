"""Per-group policies: set by admins, versioned, signed for each PC, and the version each PC reports running.

A group's policy (protocol.policy.PolicyBody) is stored as a new row per
change, its version one above the group's last; rows are never edited. A PC
asks for its policy at check-in (``POST /v1/agent/policy``) saying the version
it runs; the server records that version (``agents.policy_version``) and, when
its group's current version differs, answers with the current one signed for
that PC (protocol.policy.sign_policy). Unattended allowances decide whether an
engineer's restore or fresh diagnostics is signed as unattended; the PC checks
its own signed policy again before running one without asking (no shell or
session is ever unattended: the policy has no way to say so).
"""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.errors import Audience, InvalidInputError, NotFoundError
from protocol.policy import (
    PolicyBody,
    PolicyCheckInAnswer,
    PolicyPublic,
    PolicyStatement,
    SignedPolicy,
    sign_policy,
)
from protocol.untrusted import shown
from server.audit import Actor, record
from server.models import Agent, GroupPolicy

_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_group(group: str) -> str:
    if not isinstance(group, str) or not 1 <= len(group) <= 64 or not set(group) <= _GROUP_CHARS:
        raise InvalidInputError(f"{shown(str(group)[:64])} is not a group name.",
                                hint="A group name is 1 to 64 letters, digits, dots, dashes or underscores.")
    return group


def current_policy(session: Session, group: str | None) -> GroupPolicy | None:
    """The newest version of ``group``'s policy, or None (no group, or no policy set for it)."""
    if not group:
        return None
    return session.scalar(select(GroupPolicy).where(GroupPolicy.group == group)
                          .order_by(GroupPolicy.version.desc()).limit(1))


def current_version(session: Session, group: str | None) -> int | None:
    if not group:
        return None
    return session.scalar(select(func.max(GroupPolicy.version)).where(GroupPolicy.group == group))


def policy_behind(session: Session, agent: Agent) -> bool:
    """Whether ``agent`` reports running an older version of its group's policy than the current one (or none)."""
    current = current_version(session, agent.group)
    return current is not None and (agent.policy_version or 0) < current


def set_policy(session: Session, actor: Actor, group: str, body: PolicyBody, *, now: datetime) -> GroupPolicy:
    """Store ``body`` as the next version of ``group``'s policy (audited ``policy.set``); return the new row."""
    check_group(group)
    version = (current_version(session, group) or 0) + 1
    row = GroupPolicy(group=group, version=version, body=body.model_dump(mode="json", exclude_none=True),
                      created_by=actor.label[:64] or actor.id[:64], created_at=now)
    session.add(row)
    record(session, actor, "policy.set", "group", group, version=version, unattended=body.unattended,
           parts=sorted(k for k, v in row.body.items() if v not in (None, [], {})))
    return row


def get_policy(session: Session, group: str, version: int | None = None) -> GroupPolicy:
    """``group``'s policy at ``version`` (default: the current one); NotFoundError if there is none."""
    check_group(group)
    if version is None:
        row = current_policy(session, group)
    else:
        row = session.scalar(select(GroupPolicy).where(GroupPolicy.group == group, GroupPolicy.version == version))
    if row is None:
        what = f"version {version} of its policy" if version is not None else "policy"
        raise NotFoundError(f"Group {shown(group)} has no {what}.",
                            hints={Audience.ENGINEER: "See the groups with a policy with `helpline policy list`."})
    return row


def _counts(session: Session, group: str, version: int) -> tuple[int, int]:
    rows = session.execute(select(Agent.policy_version, func.count()).where(Agent.group == group)
                           .group_by(Agent.policy_version)).all()
    current = sum(n for v, n in rows if v is not None and v >= version)
    return current, sum(n for _, n in rows) - current


def to_public(session: Session, row: GroupPolicy) -> PolicyPublic:
    current, behind = _counts(session, row.group, row.version)
    return PolicyPublic(group=row.group, version=row.version, body=row.body, created_by=row.created_by,
                        created_at=row.created_at, agents_current=current, agents_behind=behind)


def list_policies(session: Session) -> list[GroupPolicy]:
    """The current policy of every group that has one, by group name."""
    newest = (select(GroupPolicy.group, func.max(GroupPolicy.version).label("version"))
              .group_by(GroupPolicy.group).subquery())
    return list(session.scalars(select(GroupPolicy).join(
        newest, (GroupPolicy.group == newest.c.group) & (GroupPolicy.version == newest.c.version))
        .order_by(GroupPolicy.group)))


def signed_for(server_key: Ed25519PrivateKey, agent: Agent, row: GroupPolicy, *, now: datetime) -> SignedPolicy:
    """``row`` as a statement signed for ``agent`` alone."""
    statement = PolicyStatement(agent_id=agent.id, group=row.group, version=row.version, body=row.body,
                                issued_at=now)
    return sign_policy(server_key, statement)


def check_in(session: Session, server_key: Ed25519PrivateKey, agent: Agent, running: int | None, *,
             now: datetime) -> PolicyCheckInAnswer:
    """Record the version ``agent`` says it runs; answer with its group's current policy when that differs."""
    row = current_policy(session, agent.group)
    reported = running if (running is not None and row is not None and running <= row.version) else None
    if reported != agent.policy_version and (reported is not None or agent.policy_version is not None):
        record(session, Actor.of_agent(agent), "agent.policy_applied", "agent", agent.id, group=agent.group,
               old=agent.policy_version, version=reported)
        agent.policy_version = reported
    if row is None:
        return PolicyCheckInAnswer(current_version=None, policy=None)
    if running == row.version:
        return PolicyCheckInAnswer(current_version=row.version, policy=None)
    return PolicyCheckInAnswer(current_version=row.version, policy=signed_for(server_key, agent, row, now=now))


def unattended_allowed(session: Session, agent: Agent, kind: str, *, server_wide_restore: bool) -> bool:
    """Whether an engineer's ``kind`` request to ``agent`` is signed as unattended.

    The group's policy decides when the group has one; otherwise the
    server-wide ``[snapshots] unattended_restore`` setting, for restores only.
    Never anything but restores and fresh diagnostics.
    """
    row = current_policy(session, agent.group)
    if row is not None:
        return PolicyBody.model_validate(row.body).allows_unattended(kind)
    return kind == "restore" and server_wide_restore


def server_quota(session: Session, agent_id: str, default: int) -> int:
    """The bytes ``agent_id``'s repository on the server may hold: its group policy's ``server_quota``, else ``default``."""
    group = session.scalar(select(Agent.group).where(Agent.id == agent_id))
    row = current_policy(session, group)
    if row is None:
        return default
    quota = PolicyBody.model_validate(row.body).server_quota_bytes()
    return quota if quota is not None else default
