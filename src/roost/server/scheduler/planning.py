"""One synchronous scheduler pass over the catalog: slots, retries and backup windows.

Every write is safe to repeat and to race with another replica: slot jobs are inserted under
the unique (set, slot, attempt) constraint, and ``last_planned_at`` only moves forward.
Each backup set is planned in its own transaction, so one broken policy stops nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from roost.server import jobs
from roost.server.catalog.models import Agent, BackupSet, Job, Policy
from roost.server.catalog.queries import agents as agent_queries
from roost.server.catalog.queries import jobs as job_queries
from roost.server.catalog.queries import policies as policy_queries
from roost.server.catalog.queries import sets as set_queries
from roost.server.scheduler.policy import (
    AgentView,
    Schedule,
    Window,
    agent_state,
    decide_dispatch,
    due_runs,
    may_start,
    must_stop,
    plan_missed_runs,
    retry_at,
)
from roost.server.state import ServerState

log = logging.getLogger(__name__)

WINDOW_CLOSED = "stopped: the backup window closed"
RETRY_LOOKBACK = timedelta(days=2)


@dataclass
class PlanReport:
    queued: list[str] = field(default_factory=list)  # job ids
    skipped: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    agents_to_wake: set[str] = field(default_factory=set)


def window_of(policy: Policy) -> Window | None:
    if not policy.window:
        return None
    schedule = Schedule.parse(policy.schedule, policy.timezone)
    return Window.parse(policy.window, policy.timezone, schedule)


def agent_view(agent: Agent, now: datetime, offline_after: timedelta) -> AgentView:
    state = agent_state(agent.last_seen, not agent.enabled, now, offline_after)
    return AgentView(state, agent.last_seen)


def plan(state: ServerState, now: datetime) -> PlanReport:
    report = PlanReport()
    with state.db.read_session() as session:
        set_ids = [s.id for s, _, _ in set_queries.list_scheduled(session)]
    for set_id in set_ids:
        try:
            with state.db.session() as session:
                _plan_set(session, state, set_id, now, report)
        except ValueError as exc:  # a policy that no longer parses (e.g. a removed time zone)
            log.error("cannot plan backup set %s: %s", set_id, exc)
    with state.db.session() as session:
        _plan_retries(session, state, now, report)
    with state.db.session() as session:
        _enforce_windows(session, now, report)
    return report


def _plan_set(
    session: Session, state: ServerState, set_id: str, now: datetime, report: PlanReport
) -> None:
    backup_set = set_queries.get(session, set_id)
    if backup_set is None or backup_set.policy_id is None:
        return
    policy, agent = _policy_and_agent(session, backup_set)
    schedule = Schedule.parse(policy.schedule, policy.timezone)
    due = due_runs(schedule, backup_set.last_planned_at, now, backup_set.created_at)
    if due and backup_set.enabled:  # a disabled set's slots pass silently
        window = window_of(policy)
        catch_up = timedelta(seconds=policy.catch_up_seconds)
        view = agent_view(agent, now, timedelta(seconds=state.settings.offline_after_seconds))
        for decision in plan_missed_runs(due, now, window, catch_up):
            if decision.action == "skip":
                outcome = ("skipped", decision.reason)
            else:
                dispatch = decide_dispatch("schedule", view, True, may_start(window, now))
                outcome = ("skipped" if dispatch.action == "skip" else "queued", dispatch.reason)
            job = _slot_job(backup_set, decision.run_at, 1, "schedule", outcome, now)
            _insert(session, job, report)
    set_queries.advance_planned(session, backup_set.id, now)


def _policy_and_agent(session: Session, backup_set: BackupSet) -> tuple[Policy, Agent]:
    policy = policy_queries.get(session, backup_set.policy_id or "")
    agent = agent_queries.get(session, backup_set.agent_id)
    assert policy is not None and agent is not None  # foreign keys
    return policy, agent


def _slot_job(
    backup_set: BackupSet,
    slot: datetime,
    attempt: int,
    trigger: str,
    outcome: tuple[str, str],
    now: datetime,
) -> Job:
    job_state, reason = outcome
    return Job(
        org_id=backup_set.org_id,
        set_id=backup_set.id,
        agent_id=backup_set.agent_id,
        kind="backup",
        trigger=trigger,
        state=job_state,
        reason=reason or None,
        scheduled_for=slot,
        attempt=attempt,
        created_at=now,
        finished_at=now if job_state == "skipped" else None,
        params={},
        summary={},
    )


def _insert(session: Session, job: Job, report: PlanReport) -> None:
    if not job_queries.add_slot_job(session, job):
        return  # another replica (or an earlier tick) planned this slot already
    if job.state == "queued":
        report.queued.append(job.id)
        report.agents_to_wake.add(job.agent_id)
    else:
        report.skipped.append(job.id)
        jobs.log(session, job, f"skipped: {job.reason}", job.created_at, level="warning")


def _plan_retries(session: Session, state: ServerState, now: datetime, report: PlanReport) -> None:
    offline_after = timedelta(seconds=state.settings.offline_after_seconds)
    for failed in job_queries.failed_scheduled_since(session, now - RETRY_LOOKBACK):
        backup_set = set_queries.get(session, failed.set_id)
        if backup_set is None or backup_set.policy_id is None or not backup_set.enabled:
            continue
        policy, agent = _policy_and_agent(session, backup_set)
        window = window_of(policy)
        interval = timedelta(seconds=policy.retry_interval)
        assert failed.finished_at is not None and failed.scheduled_for is not None
        when = retry_at(failed.attempt, policy.retries, interval, failed.finished_at, window)
        next_attempt = failed.attempt + 1
        if when is None or when > now:
            continue
        if job_queries.slot_exists(session, failed.set_id, failed.scheduled_for, next_attempt):
            continue
        view = agent_view(agent, now, offline_after)
        dispatch = decide_dispatch("schedule", view, True, may_start(window, now))
        outcome = ("skipped" if dispatch.action == "skip" else "queued", dispatch.reason)
        retry = _slot_job(backup_set, failed.scheduled_for, next_attempt, "retry", outcome, now)
        _insert(session, retry, report)


def _enforce_windows(session: Session, now: datetime, report: PlanReport) -> None:
    for job, policy in job_queries.scheduled_unfinished_with_policy(session):
        window = window_of(policy)
        if window is None:
            continue
        if job.state == "queued":
            allowed, reason = may_start(window, now)
            if not allowed:
                jobs.transition(job, "skipped", reason, now=now)
                report.skipped.append(job.id)
            continue
        started = job.started_at or job.dispatched_at
        if started is not None and not job.cancel_requested and must_stop(window, started, now):
            job.cancel_requested = True
            job.reason = WINDOW_CLOSED
            jobs.log(session, job, WINDOW_CLOSED, now, level="warning")
            report.stopped.append(job.id)
