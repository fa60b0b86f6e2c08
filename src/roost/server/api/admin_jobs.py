"""Jobs: list, detail with log, missed files, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from roost.protocol.agent_api import FINAL_STATES, JobState
from roost.server import jobs as job_states
from roost.server.api import lookup
from roost.server.api.deps import NowDep, OperatorDep, ReadSessionDep, SessionDep, ViewerDep
from roost.server.api.schemas import JobPublic, MissedFilePublic
from roost.server.api.views import job_detail, jobs_public
from roost.server.catalog.queries import audit
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import IllegalTransition

router = APIRouter(tags=["jobs"])


@router.get("/jobs")
def list_jobs(
    session: ReadSessionDep,
    user: ViewerDep,
    state: JobState | None = None,
    set: str | None = None,
    agent: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[JobPublic]:
    set_id = lookup.backup_set(session, user.org_id, set).id if set else None
    agent_id = lookup.agent(session, user.org_id, agent).id if agent else None
    rows = job_queries.list_jobs(
        session, user.org_id, state=state, set_id=set_id, agent_id=agent_id, limit=limit
    )
    return jobs_public(session, rows)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, session: ReadSessionDep, user: ViewerDep) -> JobPublic:
    return job_detail(session, lookup.job(session, user.org_id, job_id))


@router.get("/jobs/{job_id}/missed")
def missed_files(job_id: str, session: ReadSessionDep, user: ViewerDep) -> list[MissedFilePublic]:
    job = lookup.job(session, user.org_id, job_id)
    return [
        MissedFilePublic(path=m.path, reason=m.reason) for m in job_queries.missed(session, job.id)
    ]


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, session: SessionDep, user: OperatorDep, now: NowDep) -> JobPublic:
    job = lookup.job(session, user.org_id, job_id)
    reason = f"cancelled by {user.username}"
    if job.state in FINAL_STATES:
        raise IllegalTransition(f"job {job.id} already ended as {job.state}; nothing to cancel")
    if job.state == "queued":
        job_states.transition(job, "cancelled", reason, now=now)
    else:
        # The agent stops at its next event and reports `cancelled`.
        job.cancel_requested = True
        job.reason = reason
    job_states.log(session, job, reason, now, level="warning")
    audit.record(session, user.org_id, now, user.username, "job cancelled", job.id)
    return job_detail(session, job)
