"""Catalog rows -> public API models (the lookups they need are queries, not SQL here)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from roost.server.api.schemas import (
    AgentPublic,
    EstimatePublic,
    JobBrief,
    JobPublic,
    LogLinePublic,
    PolicyPublic,
    ProgressPublic,
    SetPublic,
)
from roost.server.catalog.models import Agent, BackupSet, Job, Policy
from roost.server.catalog.queries import agents as agent_queries
from roost.server.catalog.queries import jobs as job_queries
from roost.server.catalog.queries import policies as policy_queries
from roost.server.scheduler.policy import Schedule, agent_state, next_run


def agent_public(agent: Agent, now: datetime, offline_after: float) -> AgentPublic:
    state = agent_state(agent.last_seen, not agent.enabled, now, timedelta(seconds=offline_after))
    return AgentPublic(
        id=agent.id,
        name=agent.name,
        hostname=agent.hostname,
        os=agent.os,
        version=agent.version,
        state=state,
        last_seen=agent.last_seen,
        boot_id=agent.boot_id,
    )


def policy_next_run(policy: Policy, now: datetime) -> datetime | None:
    try:
        return next_run(Schedule.parse(policy.schedule, policy.timezone), now)
    except (ValueError, StopIteration):
        return None


def policy_public(policy: Policy, now: datetime) -> PolicyPublic:
    fields = {
        name: getattr(policy, name) for name in PolicyPublic.model_fields if name != "next_run"
    }
    return PolicyPublic(**fields, next_run=policy_next_run(policy, now))


def set_public(session: Session, backup_set: BackupSet, now: datetime) -> SetPublic:
    agent = agent_queries.get(session, backup_set.agent_id)
    policy = policy_queries.get(session, backup_set.policy_id) if backup_set.policy_id else None
    last = job_queries.latest_for_set(session, backup_set.id)
    brief = None
    if last is not None:
        brief = JobBrief(
            id=last.id,
            state=last.state,
            trigger=last.trigger,
            reason=last.reason,
            created_at=last.created_at,
            finished_at=last.finished_at,
        )
    upcoming = policy_next_run(policy, now) if policy is not None and backup_set.enabled else None
    return SetPublic(
        id=backup_set.id,
        name=backup_set.name,
        agent=agent.name if agent else "",
        paths=list(backup_set.paths),
        excludes=list(backup_set.excludes),
        policy=policy.name if policy else None,
        snapshot_mode=backup_set.snapshot_mode,
        enabled=backup_set.enabled,
        created_at=backup_set.created_at,
        last_job=brief,
        next_run=upcoming,
    )


def jobs_public(session: Session, jobs: list[Job]) -> list[JobPublic]:
    names = job_queries.names_for(session, jobs)
    return [job_public(job, *names.get(job.id, ("", ""))) for job in jobs]


def job_detail(session: Session, job: Job) -> JobPublic:
    public = jobs_public(session, [job])[0]
    public.log = [
        LogLinePublic(at=row.at, level=row.level, message=row.message)
        for row in job_queries.logs(session, job.id)
    ]
    return public


def job_public(job: Job, set_name: str, agent_name: str) -> JobPublic:
    return JobPublic(
        id=job.id,
        kind=job.kind,
        state=job.state,
        trigger=job.trigger,
        level=job.level,
        level_reason=job.level_reason,
        reason=job.reason,
        set=set_name,
        agent=agent_name,
        scheduled_for=job.scheduled_for,
        attempt=job.attempt,
        created_by=job.created_by,
        cancel_requested=job.cancel_requested,
        estimate=EstimatePublic(
            files=job.estimate_files, bytes=job.estimate_bytes, seconds=job.estimate_seconds
        ),
        estimate_accuracy=job.estimate_accuracy,
        progress=ProgressPublic(
            files=job.progress_files,
            bytes=job.progress_bytes,
            rate=job.progress_rate,
            eta_seconds=job.progress_eta,
        ),
        snapshot_id=job.snapshot_id,
        summary=dict(job.summary or {}),
        params=dict(job.params or {}),
        created_at=job.created_at,
        dispatched_at=job.dispatched_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
