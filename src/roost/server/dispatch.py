"""Dispatch: an agent's long-poll claims its queued jobs, and each poll is its heartbeat.

A job goes to exactly one poll: candidates are read (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so two replicas do not even try the same row) and each is claimed with a
conditional ``UPDATE ... WHERE state = 'queued'`` whose row count says who won (both databases).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from roost.protocol.agent_api import JobAssignment, PollRequest, PollResponse, RestoreParams
from roost.server import jobs
from roost.server.catalog.models import Agent, Job
from roost.server.catalog.queries import agents as agent_queries
from roost.server.catalog.queries import jobs as job_queries
from roost.server.catalog.queries import policies as policy_queries
from roost.server.catalog.queries import sets as set_queries
from roost.server.errors import NotFound
from roost.server.orgrepo import OrgRepositories
from roost.server.scheduler.policy import decide_level
from roost.server.snapshots import job_tag, set_tag, snapshot_exists
from roost.server.state import ServerState

AGENT_RESTARTED = "agent restarted during the job"
AGENT_LOST = "agent lost the job"
# A poll sent before the agent received a job cannot list it; only older jobs count as lost.
LOST_GRACE = timedelta(seconds=10)
MAX_JOBS_PER_POLL = 4


async def _connected() -> bool:
    return False


async def long_poll(
    state: ServerState,
    agent_id: str,
    request: PollRequest,
    disconnected: Callable[[], Awaitable[bool]] = _connected,
) -> PollResponse:
    """Heartbeat, then wait up to ``wait_seconds`` for jobs (woken early by this process).

    A poll whose agent has hung up (stopped, restarted) must not claim a job: nobody would
    receive it, and it would sit as `dispatched` until it is aborted as lost.
    """
    wait = min(request.wait_seconds, state.settings.poll_wait_seconds)
    recheck = state.settings.poll_recheck_seconds
    assigned: list[JobAssignment] = []
    async with state.wakeups.rounds(agent_id, wait, recheck) as rounds:
        await asyncio.to_thread(heartbeat, state, agent_id, request)
        async for _ in rounds:
            if await disconnected():
                break
            assigned = await asyncio.to_thread(claim_jobs, state, agent_id, request.boot_id)
            if assigned:
                break
    return PollResponse(jobs=assigned, server_time=state.clock().isoformat())


def heartbeat(state: ServerState, agent_id: str, request: PollRequest) -> list[str]:
    """Record the poll on the agent; abort the jobs it no longer runs. Returns their ids."""
    now = state.clock()
    with state.db.session() as session:
        agent = agent_queries.get(session, agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} no longer exists; enroll it again")
        agent.last_seen = now
        agent.hostname, agent.os, agent.version = request.hostname, request.os, request.version
        agent.boot_id = request.boot_id
        return abort_lost_jobs(session, agent, request, now)


def abort_lost_jobs(
    session: Session, agent: Agent, request: PollRequest, now: datetime
) -> list[str]:
    aborted = []
    running = set(request.running_jobs)
    for job in job_queries.active_for_agent(session, agent.id):
        if job.dispatch_boot_id not in (None, request.boot_id):
            reason = AGENT_RESTARTED
        elif (
            job.id not in running
            and job.dispatched_at is not None
            and (job.dispatched_at <= now - LOST_GRACE)
        ):
            reason = AGENT_LOST
        else:
            continue
        jobs.transition(job, "aborted", reason, now=now)
        jobs.log(session, job, reason, now, level="error")
        aborted.append(job.id)
    return aborted


def claim_jobs(state: ServerState, agent_id: str, boot_id: str) -> list[JobAssignment]:
    """Claim this agent's queued jobs (one backup per set at a time) and describe them."""
    with state.db.read_session() as session:
        if not job_queries.has_queued(session, agent_id):
            return []  # the common case, without taking SQLite's write lock
    now = state.clock()
    with state.db.session() as session:
        agent = agent_queries.get(session, agent_id)
        if agent is None or not agent.enabled:
            return []
        busy = job_queries.busy_backup_sets(session, agent_id)
        candidates = job_queries.queued_for_agent(
            session, agent_id, busy, skip_locked=state.db.is_postgres, limit=MAX_JOBS_PER_POLL
        )
        assigned = []
        for job_id, set_id, kind in candidates:
            if kind == "backup" and set_id in busy:
                continue
            if not job_queries.claim(session, job_id, now, boot_id):
                continue  # another poll won it
            job = job_queries.get(session, job_id)
            assert job is not None
            assigned.append(build_assignment(session, state.repos, job))
            busy.add(set_id)
        return assigned


def build_assignment(session: Session, repos: OrgRepositories, job: Job) -> JobAssignment:
    backup_set = set_queries.get(session, job.set_id)
    if backup_set is None:
        raise NotFound(f"backup set of job {job.id} no longer exists")
    base = JobAssignment(
        id=job.id,
        kind="backup" if job.kind == "backup" else "restore",
        set_id=backup_set.id,
        set_name=backup_set.name,
        snapshot_mode="never" if backup_set.snapshot_mode == "never" else "auto",
        tags=[set_tag(backup_set.id), job_tag(job.id)],
    )
    if job.kind == "restore":
        base.restore = RestoreParams.model_validate(job.params["restore"])
        return base
    base.paths = list(backup_set.paths)
    base.excludes = list(backup_set.excludes)
    _choose_level(session, repos, job, base)
    missed_from = job_queries.last_finished_backup(session, backup_set.id)
    if missed_from is not None:
        base.force_read = job_queries.missed_paths(session, missed_from.id)
    policy = policy_queries.get(session, backup_set.policy_id) if backup_set.policy_id else None
    base.bandwidth_limit = policy.bandwidth_limit if policy is not None else None
    return base


def _choose_level(session: Session, repos: OrgRepositories, job: Job, out: JobAssignment) -> None:
    previous = job_queries.last_snapshot_job(session, job.set_id)
    previous_paths = previous.params.get("paths") if previous is not None else None
    previous_id = previous.snapshot_id if previous is not None else None
    usable = previous_id is not None and snapshot_exists(repos.backend(job.org_id), previous_id)
    decision = decide_level(previous_paths, out.paths, usable, previous_id)
    job.level, job.level_reason = decision.level, decision.reason
    job.params = {**job.params, "paths": out.paths}  # what the next job compares against
    out.level = decision.level
    out.parent_snapshot = previous_id if decision.level == "incremental" else None
    jobs.log(
        session,
        job,
        f"{decision.level} backup: {decision.reason}",
        job.dispatched_at or job.created_at,
    )
