"""A restore job: snapshot -> files under a target directory on this agent.

The parameters come from the server, but the agent checks them itself before writing a byte:
the target must be absolute and no path may contain ``..``. The restorer treats the snapshot
as untrusted input on its own (see roost.engine.restorer). Each restorer warning becomes a
warning line in the job log, and a restore with warnings ends ``succeeded_with_errors``.
"""

from __future__ import annotations

import os

from roost.agent.context import JobContext, open_repository
from roost.agent.paths import from_wire
from roost.agent.platform import Platform, has_parent_reference
from roost.agent.progress import Meter, RestoreEvents
from roost.agent.reporting import JobReporter, Outcome
from roost.engine.restorer import Restorer, RestoreSummary
from roost.engine.snapshot import Snapshot
from roost.errors import UsageError
from roost.protocol.agent_api import Estimate, JobAssignment, JobEvent, JobResult, RestoreParams


def run_restore(ctx: JobContext, job: JobAssignment, reporter: JobReporter) -> Outcome:
    params = job.restore
    if params is None:
        raise UsageError("the restore job carries no restore parameters")
    target, includes = checked_params(ctx.platform, params)
    repo = open_repository(ctx, None)
    reporter.send(JobEvent(state="running"))
    reporter.raise_if_cancelled()
    snapshot = repo.find_snapshot(params.snapshot_id)
    reporter.log(
        f"restoring snapshot {snapshot.short_id} of {snapshot.time.isoformat()} "
        f"({len(includes) or 'all'} paths) to {params.target}, conflicts: {params.conflict}"
    )
    total = _estimate(snapshot, includes, reporter)
    meter = Meter(reporter, total_bytes=total, clock=ctx.clock, interval=ctx.progress_interval)
    events = RestoreEvents(meter)
    restorer = Restorer(
        repo, snapshot, target, includes=includes, conflict=params.conflict, progress=events
    )
    summary = restorer.run()
    meter.flush(check_cancel=False)  # every file is written: nothing left to cancel
    return Outcome(
        "succeeded_with_errors" if summary.warnings else "succeeded",
        result=JobResult(snapshot_id=snapshot.id, summary=summary_dict(summary)),
    )


def checked_params(platform: Platform, params: RestoreParams) -> tuple[bytes, list[str]]:
    """The target as bytes and the include paths, or UsageError naming what is wrong."""
    target = os.fsdecode(from_wire(params.target))
    if not platform.is_absolute(target):
        raise UsageError(f"restore target {params.target!r} must be an absolute path")
    if has_parent_reference(target):
        raise UsageError(f"restore target {params.target!r} must not contain '..'")
    includes = []
    for path in params.paths:
        if has_parent_reference(path):
            raise UsageError(f"restore path {path!r} must not contain '..'")
        includes.append(os.fsdecode(from_wire(path)))
    return os.fsencode(platform.normalise(target)), includes


def _estimate(snapshot: Snapshot, includes: list[str], reporter: JobReporter) -> int | None:
    """The whole snapshot's size is known from its summary; a selection's is not."""
    if includes:
        return None
    summary = snapshot.summary
    files = sum(int(summary.get(k, 0)) for k in ("files_new", "files_changed", "files_unchanged"))
    size = int(summary.get("bytes_total", 0))
    reporter.send(JobEvent(estimate=Estimate(files=files, bytes=size)))
    reporter.raise_if_cancelled()
    return size


def summary_dict(summary: RestoreSummary) -> dict[str, object]:
    return {
        "files": summary.files,
        "dirs": summary.dirs,
        "other": summary.other,
        "bytes_written": summary.bytes_written,
        "skipped": summary.skipped,
        "renamed": summary.renamed,
        "warnings": len(summary.warnings),
    }
