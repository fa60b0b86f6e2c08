"""The job state machine, and what an agent's job events do to a job.

    queued -> dispatched -> running -> succeeded | succeeded_with_errors | failed
                                       | aborted | cancelled
    queued -> skipped | cancelled;  dispatched -> cancelled | aborted | failed | succeeded*

Repeating the current state is accepted and changes nothing, because an agent retries an
event whose response it did not receive. Leaving a final state is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from roost.protocol.agent_api import FINAL_STATES, JobEvent, JobEventResponse, LogLine
from roost.server.catalog.models import Job, JobLog, MissedFileRow
from roost.server.catalog.queries import jobs as job_queries
from roost.server.errors import IllegalTransition

_ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"dispatched", "skipped", "cancelled"}),
    # An agent may finish a short job without reporting "running" first.
    "dispatched": frozenset(
        {"running", "succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled"}
    ),
    "running": frozenset({"succeeded", "succeeded_with_errors", "failed", "aborted", "cancelled"}),
}
_DEFAULT_REASONS = {
    "failed": "the agent reported a failure without a message",
    "aborted": "aborted by the agent",
    "cancelled": "cancelled",
}


def transition(job: Job, new_state: str, reason: str | None = None, *, now: datetime) -> bool:
    """Move ``job`` to ``new_state``; False if it already is there; IllegalTransition if barred."""
    if job.state == new_state:
        return False
    if new_state not in _ALLOWED.get(job.state, frozenset()):
        raise IllegalTransition(_illegal_message(job, new_state))
    job.state = new_state
    if reason is not None:
        job.reason = reason
    if new_state == "dispatched":
        job.dispatched_at = now
        if reason is None:
            job.reason = None  # "queued until it connects" is history once it is handed out
    elif new_state == "running":
        job.started_at = now
    elif new_state in FINAL_STATES:
        job.finished_at = now
        job.reason = job.reason or _DEFAULT_REASONS.get(new_state)
        job.estimate_accuracy = estimate_accuracy(job)
    return True


def _illegal_message(job: Job, new_state: str) -> str:
    if job.state in FINAL_STATES:
        return (
            f"job {job.id} already ended as {job.state} and cannot become {new_state}; "
            "start a new backup instead"
        )
    return f"job {job.id} is {job.state} and cannot become {new_state}"


def estimate_accuracy(job: Job) -> dict[str, float] | None:
    """Actual / estimated duration and bytes: above 1 means the estimate was too low."""
    accuracy: dict[str, float] = {}
    if job.estimate_seconds and job.started_at and job.finished_at:
        actual = (job.finished_at - job.started_at).total_seconds()
        accuracy["duration"] = round(actual / job.estimate_seconds, 3)
    if job.estimate_bytes:
        accuracy["bytes"] = round(job.progress_bytes / job.estimate_bytes, 3)
    return accuracy or None


@dataclass(frozen=True)
class EventOutcome:
    response: JobEventResponse
    finished_backup: bool  # a backup just succeeded: the caller applies retention after commit


def apply_event(session: Session, job: Job, event: JobEvent, now: datetime) -> EventOutcome:
    """Record an agent's report on ``job``; tell it to stop if the job is over or cancelled."""
    if job.state in FINAL_STATES and event.state != job.state:
        # The server ended the job (lost, window closed, ...): the agent must stop.
        return EventOutcome(JobEventResponse(cancel=True, cancel_reason=job.reason), False)
    _record_details(session, job, event, now)
    became = False
    if event.state is not None:
        reason = event.error if event.state in ("failed", "aborted") else None
        became = transition(job, event.state, reason, now=now)
    finished_backup = became and job.kind == "backup" and job.state.startswith("succeeded")
    cancel = job.cancel_requested and job.state not in FINAL_STATES
    return EventOutcome(
        JobEventResponse(cancel=cancel, cancel_reason=job.reason if cancel else None),
        finished_backup,
    )


def _record_details(session: Session, job: Job, event: JobEvent, now: datetime) -> None:
    if event.estimate is not None:
        job.estimate_files = event.estimate.files
        job.estimate_bytes = event.estimate.bytes
        job.estimate_seconds = event.estimate.seconds
    if event.progress is not None:
        job.progress_files = event.progress.files_done
        job.progress_bytes = event.progress.bytes_done
        job.progress_rate = event.progress.rate
        job.progress_eta = event.progress.eta_seconds
    if event.result is not None:
        job.snapshot_id = event.result.snapshot_id
        job.summary = dict(event.result.summary)
    lines = [_log_row(job.id, line, now) for line in event.log]
    if event.error:
        lines.append(JobLog(job_id=job.id, at=now, level="error", message=event.error))
    job_queries.add_logs(session, lines)
    job_queries.add_missed(
        session, [MissedFileRow(job_id=job.id, path=m.path, reason=m.reason) for m in event.missed]
    )


def _log_row(job_id: str, line: LogLine, now: datetime) -> JobLog:
    try:
        at = datetime.fromisoformat(line.at)
        at = at if at.tzinfo is not None else now  # agent clocks may lack a zone: use ours
    except ValueError:
        at = now
    return JobLog(job_id=job_id, at=at, level=line.level, message=line.message)


def log(session: Session, job: Job, message: str, now: datetime, level: str = "info") -> None:
    """A server-side line in the job log (why it was skipped, aborted, retried ...)."""
    job_queries.add_logs(session, [JobLog(job_id=job.id, at=now, level=level, message=message)])
