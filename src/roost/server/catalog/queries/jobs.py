"""Jobs, their log lines and missed files."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roost.protocol.agent_api import ACTIVE_STATES, FINAL_STATES
from roost.server.catalog.models import Agent, BackupSet, Job, JobLog, MissedFileRow, Policy

SNAPSHOT_STATES = ("succeeded", "succeeded_with_errors")


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def add(session: Session, job: Job) -> Job:
    session.add(job)
    session.flush()
    return job


def add_slot_job(session: Session, job: Job) -> bool:
    """Insert a scheduled job; False if its (set, slot, attempt) exists (another replica won)."""
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return False
    return True


def list_jobs(
    session: Session,
    org_id: str,
    *,
    state: str | None = None,
    set_id: str | None = None,
    agent_id: str | None = None,
    limit: int = 50,
) -> list[Job]:
    stmt = select(Job).where(Job.org_id == org_id)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if set_id is not None:
        stmt = stmt.where(Job.set_id == set_id)
    if agent_id is not None:
        stmt = stmt.where(Job.agent_id == agent_id)
    stmt = stmt.order_by(Job.created_at.desc(), Job.id).limit(limit)
    return list(session.scalars(stmt))


def names_for(session: Session, jobs: Iterable[Job]) -> dict[str, tuple[str, str]]:
    """job id -> (set name, agent name), in one query."""
    ids = [job.id for job in jobs]
    if not ids:
        return {}
    stmt = (
        select(Job.id, BackupSet.name, Agent.name)
        .join(BackupSet, Job.set_id == BackupSet.id)
        .join(Agent, Job.agent_id == Agent.id)
        .where(Job.id.in_(ids))
    )
    return {
        job_id: (set_name, agent_name) for job_id, set_name, agent_name in session.execute(stmt)
    }


def latest_for_set(session: Session, set_id: str) -> Job | None:
    stmt = select(Job).where(Job.set_id == set_id).order_by(Job.created_at.desc()).limit(1)
    return session.scalars(stmt).first()


def open_job_for_set(session: Session, set_id: str, kind: str) -> Job | None:
    """A queued job of this kind for the set, if any (backup-now twice makes one job)."""
    stmt = select(Job).where(Job.set_id == set_id, Job.kind == kind, Job.state == "queued")
    return session.scalars(stmt.limit(1)).first()


def last_snapshot_job(session: Session, set_id: str) -> Job | None:
    """The set's newest backup job that produced a snapshot."""
    stmt = (
        select(Job)
        .where(
            Job.set_id == set_id,
            Job.kind == "backup",
            Job.state.in_(SNAPSHOT_STATES),
            Job.snapshot_id.is_not(None),
        )
        .order_by(Job.finished_at.desc(), Job.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def last_finished_backup(session: Session, set_id: str) -> Job | None:
    stmt = (
        select(Job)
        .where(
            Job.set_id == set_id,
            Job.kind == "backup",
            Job.state.in_(FINAL_STATES - {"skipped"}),
        )
        .order_by(Job.finished_at.desc(), Job.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


# -- dispatch ---------------------------------------------------------------------------------


def queued_for_agent(
    session: Session, agent_id: str, busy_sets: set[str], *, skip_locked: bool, limit: int
) -> list[tuple[str, str, str]]:
    """(job id, set id, kind) of claimable queued jobs, oldest first.

    Backups of a set with a backup in progress wait, and are left out here so that they do
    not hide newer claimable jobs. On PostgreSQL the rows are locked, and rows another
    transaction has locked are skipped, so concurrent polls spread over different jobs.
    """
    stmt = (
        select(Job.id, Job.set_id, Job.kind)
        .where(Job.agent_id == agent_id, Job.state == "queued")
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    if busy_sets:
        stmt = stmt.where((Job.kind != "backup") | Job.set_id.not_in(busy_sets))
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return [(job_id, set_id, kind) for job_id, set_id, kind in session.execute(stmt)]


def busy_backup_sets(session: Session, agent_id: str) -> set[str]:
    stmt = select(Job.set_id).where(
        Job.agent_id == agent_id, Job.kind == "backup", Job.state.in_(ACTIVE_STATES)
    )
    return set(session.scalars(stmt))


def claim(session: Session, job_id: str, now: datetime, boot_id: str) -> bool:
    """queued -> dispatched if still queued: the check that hands a job to exactly one poll."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(state="dispatched", dispatched_at=now, dispatch_boot_id=boot_id)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def active_for_agent(session: Session, agent_id: str) -> list[Job]:
    stmt = select(Job).where(Job.agent_id == agent_id, Job.state.in_(ACTIVE_STATES))
    return list(session.scalars(stmt))


def has_queued(session: Session, agent_id: str) -> bool:
    stmt = select(func.count()).where(Job.agent_id == agent_id, Job.state == "queued")
    return bool(session.scalar(stmt))


# -- scheduler ------------------------------------------------------------------------------


def failed_scheduled_since(session: Session, since: datetime) -> list[Job]:
    """Failed scheduled backups (and failed retries) that finished after ``since``."""
    stmt = select(Job).where(
        Job.kind == "backup",
        Job.state == "failed",
        Job.trigger.in_(("schedule", "retry")),
        Job.scheduled_for.is_not(None),
        Job.finished_at >= since,
    )
    return list(session.scalars(stmt))


def slot_exists(session: Session, set_id: str, scheduled_for: datetime, attempt: int) -> bool:
    stmt = select(func.count()).where(
        Job.set_id == set_id, Job.scheduled_for == scheduled_for, Job.attempt == attempt
    )
    return bool(session.scalar(stmt))


# -- logs and missed files ------------------------------------------------------------------


def add_logs(session: Session, rows: list[JobLog]) -> None:
    session.add_all(rows)


def add_missed(session: Session, rows: list[MissedFileRow]) -> None:
    session.add_all(rows)


def logs(session: Session, job_id: str, limit: int = 2000) -> list[JobLog]:
    stmt = select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id).limit(limit)
    return list(session.scalars(stmt))


def missed(session: Session, job_id: str) -> list[MissedFileRow]:
    stmt = select(MissedFileRow).where(MissedFileRow.job_id == job_id).order_by(MissedFileRow.id)
    return list(session.scalars(stmt))


def missed_paths(session: Session, job_id: str) -> list[str]:
    return list(session.scalars(select(MissedFileRow.path).where(MissedFileRow.job_id == job_id)))


def scheduled_unfinished_with_policy(session: Session) -> list[tuple[Job, Policy]]:
    """Scheduled backups not yet finished, with their set's policy (window enforcement)."""
    stmt = (
        select(Job, Policy)
        .join(BackupSet, Job.set_id == BackupSet.id)
        .join(Policy, BackupSet.policy_id == Policy.id)
        .where(
            Job.kind == "backup",
            Job.trigger.in_(("schedule", "retry")),
            Job.state.in_(("queued", *ACTIVE_STATES)),
        )
    )
    return [(job, policy) for job, policy in session.execute(stmt).tuples()]
