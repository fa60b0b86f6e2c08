"""Backup policies: schedule, window, bandwidth, retries, retention."""

from __future__ import annotations

from fastapi import APIRouter, status

from roost.server.api import lookup
from roost.server.api.deps import AdminDep, NowDep, ReadSessionDep, SessionDep, ViewerDep
from roost.server.api.schemas import PolicyCreate, PolicyPublic
from roost.server.api.views import policy_public
from roost.server.catalog.models import Policy
from roost.server.catalog.queries import audit, policies
from roost.server.errors import Conflict

router = APIRouter(tags=["policies"])


@router.post("/policies", status_code=status.HTTP_201_CREATED)
def create_policy(
    body: PolicyCreate, session: SessionDep, user: AdminDep, now: NowDep
) -> PolicyPublic:
    if policies.get_by_name(session, user.org_id, body.name) is not None:
        raise Conflict(f"a policy named {body.name!r} already exists; choose another name")
    policy = policies.add(session, Policy(org_id=user.org_id, created_at=now, **body.model_dump()))
    audit.record(session, user.org_id, now, user.username, "policy created", body.name)
    return policy_public(policy, now)


@router.get("/policies")
def list_policies(session: ReadSessionDep, user: ViewerDep, now: NowDep) -> list[PolicyPublic]:
    return [policy_public(p, now) for p in policies.list_for_org(session, user.org_id)]


@router.get("/policies/{name}")
def get_policy(name: str, session: ReadSessionDep, user: ViewerDep, now: NowDep) -> PolicyPublic:
    return policy_public(lookup.policy(session, user.org_id, name), now)
