"""Agent routes: enroll, long-poll, repository key, job events (see roost.protocol.agent_api)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, BackgroundTasks, Request

from roost.protocol.agent_api import (
    FINAL_STATES,
    EnrollRequest,
    EnrollResponse,
    JobEvent,
    JobEventResponse,
    PollRequest,
    PollResponse,
    RepositoryKeyResponse,
)
from roost.server import auth, dispatch, jobs
from roost.server.api.deps import AgentDep, NowDep, SessionDep, StateDep
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import NotFound
from roost.server.retention import retention_after_backup

router = APIRouter(prefix="/agent", tags=["agent"])


@router.post("/enroll")
def enroll(body: EnrollRequest, session: SessionDep, now: NowDep) -> EnrollResponse:
    return auth.enroll(session, body, now)


@router.post("/poll")
async def poll(
    body: PollRequest, state: StateDep, agent: AgentDep, request: Request
) -> PollResponse:
    return await dispatch.long_poll(state, agent.id, body, request.is_disconnected)


@router.get("/repository")
def repository(state: StateDep, agent: AgentDep) -> RepositoryKeyResponse:
    repo = state.repos.repository(agent.org_id)
    return RepositoryKeyResponse(master_key=repo.key.master.to_json(), config=asdict(repo.config))


@router.post("/jobs/{job_id}/events")
def job_event(
    job_id: str,
    body: JobEvent,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    agent: AgentDep,
    now: NowDep,
) -> JobEventResponse:
    job = job_queries.get(session, job_id)
    if job is None or job.agent_id != agent.id:
        raise NotFound(f"job {job_id} is not assigned to this agent; drop it")
    outcome = jobs.apply_event(session, job, body, now)
    if outcome.finished_backup:
        background.add_task(retention_after_backup, state, job.id)  # after the commit
    if job.state in FINAL_STATES:
        background.add_task(state.job_ends.notify, job.id)  # wakes GET /jobs/{id}?wait=
    return outcome.response
