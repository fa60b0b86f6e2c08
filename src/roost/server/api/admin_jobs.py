"""Jobs: list, detail with log, missed files, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query
from starlette.concurrency import run_in_threadpool

from roost.protocol.agent_api import FINAL_STATES, JobState
from roost.server import jobs as job_states
from roost.server.api import lookup
from roost.server.api.deps import (
    NowDep,
    OperatorDep,
    ReadSessionDep,
    SessionDep,
    StateDep,
    ViewerDep,
)
from roost.server.api.schemas import JobPublic, MissedFilePublic
from roost.server.api.views import job_detail, jobs_public
from roost.server.catalog.queries import audit
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import IllegalTransition
from roost.server.state import ServerState

router = APIRouter(tags=["jobs"])

MAX_WAIT_SECONDS = 60.0  # GET /jobs/{id}?wait=: longer waits are a client's loop


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
async def get_job(
    job_id: str,
    state: StateDep,
    user: ViewerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Answer when the job's state changes, or after this many seconds",
        ),
    ] = 0,
) -> JobPublic:
    """The job with its log; with ``wait``, once its state is another than when asked (at most
    ``wait`` seconds later), and at once if it has ended.

    A client following a job asks again and again with ``wait``: it learns of the end at once
    instead of at its next poll. A job ended by this replica wakes the request; other changes,
    and a job ended by another replica, are seen at the next re-check
    (``poll_recheck_seconds``).
    """
    recheck = state.settings.poll_recheck_seconds
    found: JobPublic | None = None
    async with state.job_ends.rounds(job_id, wait, recheck) as rounds:
        async for _ in rounds:
            first = found
            found = await run_in_threadpool(_read_job, state, user.org_id, job_id)
            if found.state in FINAL_STATES or (first and found.state != first.state):
                break
    assert found is not None  # the first round comes at once
    return found


def _read_job(state: ServerState, org_id: str, job_id: str) -> JobPublic:
    # a session per look: a waiting request holds no transaction open
    with state.db.read_session() as session:
        return job_detail(session, lookup.job(session, org_id, job_id))


@router.get("/jobs/{job_id}/missed")
def missed_files(job_id: str, session: ReadSessionDep, user: ViewerDep) -> list[MissedFilePublic]:
    job = lookup.job(session, user.org_id, job_id)
    return [
        MissedFilePublic(path=m.path, reason=m.reason) for m in job_queries.missed(session, job.id)
    ]


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    user: OperatorDep,
    now: NowDep,
) -> JobPublic:
    job = lookup.job(session, user.org_id, job_id)
    reason = f"cancelled by {user.username}"
    if job.state in FINAL_STATES:
        raise IllegalTransition(f"job {job.id} already ended as {job.state}; nothing to cancel")
    if job.state == "queued":
        job_states.transition(job, "cancelled", reason, now=now)
        background.add_task(state.job_ends.notify, job.id)  # after the commit
    else:
        # The agent stops at its next event and reports `cancelled`.
        job.cancel_requested = True
        job.reason = reason
    job_states.log(session, job, reason, now, level="warning")
    audit.record(session, user.org_id, now, user.username, "job cancelled", job.id)
    return job_detail(session, job)
