"""Backup sets: what to back up on which agent, under which policy; backup now."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Response, status

from roost.server import sets as set_service
from roost.server.api import lookup
from roost.server.api.deps import (
    AdminDep,
    NowDep,
    OperatorDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    ViewerDep,
)
from roost.server.api.schemas import JobPublic, SetCreate, SetPublic
from roost.server.api.views import jobs_public, set_public
from roost.server.catalog.models import BackupSet
from roost.server.catalog.queries import audit, sets
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import ApiError, Conflict
from roost.server.scheduler.planning import agent_view

router = APIRouter(tags=["sets"])


@router.post("/sets", status_code=status.HTTP_201_CREATED)
def create_set(body: SetCreate, session: SessionDep, user: AdminDep, now: NowDep) -> SetPublic:
    if sets.get_by_name(session, user.org_id, body.name) is not None:
        raise Conflict(f"a backup set named {body.name!r} already exists; choose another name")
    agent = lookup.agent(session, user.org_id, body.agent)
    policy = lookup.policy(session, user.org_id, body.policy) if body.policy else None
    set_service.check_no_overlap(session, agent, body.paths)
    backup_set = sets.add(
        session,
        BackupSet(
            org_id=user.org_id,
            name=body.name,
            agent_id=agent.id,
            policy_id=policy.id if policy else None,
            paths=list(body.paths),
            excludes=list(body.excludes),
            snapshot_mode=body.snapshot_mode,
            enabled=True,
            created_at=now,
        ),
    )
    audit.record(session, user.org_id, now, user.username, "backup set created", body.name)
    return set_public(session, backup_set, now)


@router.get("/sets")
def list_sets(session: ReadSessionDep, user: ViewerDep, now: NowDep) -> list[SetPublic]:
    return [set_public(session, s, now) for s in sets.list_for_org(session, user.org_id)]


@router.get("/sets/{name}")
def get_set(name: str, session: ReadSessionDep, user: ViewerDep, now: NowDep) -> SetPublic:
    return set_public(session, lookup.backup_set(session, user.org_id, name), now)


@router.post("/sets/{name}/disable")
def disable_set(name: str, session: SessionDep, user: AdminDep, now: NowDep) -> SetPublic:
    backup_set = lookup.backup_set(session, user.org_id, name)
    backup_set.enabled = False
    audit.record(session, user.org_id, now, user.username, "backup set disabled", name)
    return set_public(session, backup_set, now)


@router.post("/sets/{name}/enable")
def enable_set(name: str, session: SessionDep, user: AdminDep, now: NowDep) -> SetPublic:
    backup_set = lookup.backup_set(session, user.org_id, name)
    backup_set.enabled = True
    # Slots that passed while disabled are not caught up on.
    sets.advance_planned(session, backup_set.id, now)
    audit.record(session, user.org_id, now, user.username, "backup set enabled", name)
    return set_public(session, backup_set, now)


@router.delete("/sets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_set(
    name: str,
    session: SessionDep,
    state: StateDep,
    user: AdminDep,
    now: NowDep,
    confirm: str | None = None,
) -> None:
    backup_set = lookup.backup_set(session, user.org_id, name)
    if confirm != name:
        raise ApiError(
            f"deleting backup set {name} also deletes its snapshots; repeat with ?confirm={name}"
        )
    if job_queries.busy_backup_sets(session, backup_set.agent_id) & {backup_set.id}:
        raise Conflict(f"backup set {name} has a running job; cancel it first")
    repo = state.repos.repository(user.org_id)
    deleted = set_service.delete_snapshots(repo, backup_set.id)
    sets.delete(session, backup_set)
    audit.record(
        session, user.org_id, now, user.username, "backup set deleted", name, {"snapshots": deleted}
    )


@router.post("/sets/{name}/backup", status_code=status.HTTP_201_CREATED)
def backup_now(
    name: str,
    response: Response,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    user: OperatorDep,
    now: NowDep,
) -> JobPublic:
    backup_set = lookup.backup_set(session, user.org_id, name)
    agent = lookup.agent_by_id(session, backup_set.agent_id)
    view = agent_view(agent, now, timedelta(seconds=state.settings.offline_after_seconds))
    request = set_service.request_backup(session, backup_set, view, user.username, now)
    if not request.created:
        response.status_code = status.HTTP_200_OK
    background.add_task(state.wakeups.notify, agent.id)  # runs after the commit
    return jobs_public(session, [request.job])[0]
