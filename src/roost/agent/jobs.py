"""Executing one job the server assigned, and its final report.

``execute_job`` runs a backup (backup_job.py) or a restore (restore_job.py) and always ends
with exactly one final event: the job's state and result, or ``failed`` with the error, or
``cancelled`` / ``aborted`` with the reason.
"""

from __future__ import annotations

import logging

from roost.agent.backup_job import run_backup
from roost.agent.context import JobContext
from roost.agent.reporting import JobCancelled, JobReporter, Outcome, describe_error
from roost.agent.restore_job import run_restore
from roost.protocol.agent_api import JobAssignment

log = logging.getLogger("roost.agent")


def execute_job(ctx: JobContext, job: JobAssignment) -> str:
    """Run ``job`` to its end and report it; return the final state sent."""
    reporter = JobReporter(
        ctx.api, job.id, stop=ctx.stop, final_retry_seconds=ctx.final_retry_seconds
    )
    log.info("job %s: %s of set %s started", job.id, job.kind, job.set_name)
    try:
        run = run_backup if job.kind == "backup" else run_restore
        outcome = run(ctx, job, reporter)
    except JobCancelled as exc:
        reporter.log(f"job {exc.state}: {exc.reason}", "warning")
        outcome = Outcome(exc.state, error=exc.reason)
    except Exception as exc:
        log.exception("job %s failed", job.id)
        error = describe_error(exc)
        reporter.log(f"job failed: {error}", "error")
        outcome = Outcome("failed", error=error[:4000])
    reporter.finish(outcome)
    log.info("job %s: %s", job.id, outcome.state)
    return outcome.state
