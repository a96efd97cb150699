"""Per-group policies: admins set them, engineers read them, each PC fetches its own signed at check-in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from protocol.policy import PolicyBody, PolicyCheckIn, PolicyCheckInAnswer, PolicyPublic
from server.api.deps import AccountActor, AdminAccount, CurrentAccount, CurrentAgent, Now, ReadSession, State, WriteSession
from server.fleet import policies as svc

router = APIRouter(prefix="/v1", tags=["policies"])

Group = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="The group's name.")]


@router.put("/policies/{group}", summary="Set a group's policy (admins): stored as its next version")
def set_policy(group: Group, body: PolicyBody, admin: AdminAccount, actor: AccountActor, session: WriteSession,
               now: Now) -> PolicyPublic:
    row = svc.set_policy(session, actor, group, body, now=now)
    session.flush()
    return svc.to_public(session, row)


@router.get("/policies", summary="The current policy of every group that has one")
def list_policies(account: CurrentAccount, session: ReadSession) -> list[PolicyPublic]:
    return [svc.to_public(session, row) for row in svc.list_policies(session)]


@router.get("/policies/{group}", summary="A group's current policy, or one version of it")
def show_policy(group: Group, account: CurrentAccount, session: ReadSession,
                version: Annotated[int | None, Query(ge=1)] = None) -> PolicyPublic:
    return svc.to_public(session, svc.get_policy(session, group, version))


@router.post("/agent/policy", summary="This PC's check-in: the policy version it runs; its group's current one, signed")
def agent_policy(body: PolicyCheckIn, agent: CurrentAgent, session: WriteSession, state: State,
                 now: Now) -> PolicyCheckInAnswer:
    return svc.check_in(session, state.signing_key, agent, body.running, now=now)
