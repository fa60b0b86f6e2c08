"""Restores: a job of kind restore, run by the set's agent or another one."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, status

from roost.protocol.agent_api import RestoreParams
from roost.server.api import lookup
from roost.server.api.deps import NowDep, OperatorDep, SessionDep, StateDep
from roost.server.api.schemas import JobPublic, RestoreCreate
from roost.server.api.views import jobs_public
from roost.server.catalog.models import Job
from roost.server.catalog.queries import audit
from roost.server.catalog.queries import jobs as job_queries
from roost.server.snapshots import find_set_snapshot

router = APIRouter(tags=["restores"])


@router.post("/restores", status_code=status.HTTP_201_CREATED)
def create_restore(
    body: RestoreCreate,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    user: OperatorDep,
    now: NowDep,
) -> JobPublic:
    backup_set = lookup.backup_set(session, user.org_id, body.set)
    target_agent = (
        lookup.agent(session, user.org_id, body.agent)
        if body.agent
        else lookup.agent_by_id(session, backup_set.agent_id)
    )
    repo = state.repos.repository(user.org_id)
    snap = find_set_snapshot(repo, backup_set.id, body.snapshot, body.before)
    params = RestoreParams(
        snapshot_id=snap.id, paths=list(body.paths), target=body.target, conflict=body.conflict
    )
    job = job_queries.add(
        session,
        Job(
            org_id=user.org_id,
            set_id=backup_set.id,
            agent_id=target_agent.id,
            kind="restore",
            trigger="now",
            state="queued",
            attempt=1,
            created_by=user.username,
            created_at=now,
            params={"restore": params.model_dump()},
            summary={},
        ),
    )
    audit.record(
        session, user.org_id, now, user.username, "restore requested", body.set, params.model_dump()
    )
    background.add_task(state.wakeups.notify, target_agent.id)
    return jobs_public(session, [job])[0]
