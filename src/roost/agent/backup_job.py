"""A backup job, step by step (DESIGN.md §1):

1. fetch the repository key (memory only) and report ``running``;
2. snapshot the sources (VSS, btrfs or LVM, else a live scan; the provider says which and
   why in the job log);
3. count what the backup will consider, with the backup's own exclude rules, beside the
   archiving (step 4), and report the ``estimate`` (files, bytes, and seconds from the
   throughput history) as soon as it is counted; no progress goes out before it;
4. archive: the parent snapshot lets unchanged files be reused, last job's missed files are
   read again (``force_read``), ``progress`` goes out about every second, and a ``cancel`` in
   any answer stops the archiver from inside its progress callback;
5. release the snapshot, always, then report the final state with the snapshot id, the
   summary and every missed file (``succeeded_with_errors`` when there are any).

Snapshot paths: the archiver reads inside the filesystem snapshot but records the set's own
paths (``BackupOptions.path_map``, read path -> recorded path), so restores and the next
incremental backup line up with the paths the admin configured.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType

from roost.agent.context import JobContext, open_repository
from roost.agent.paths import PathMap, from_wire, to_wire
from roost.agent.platform import Platform, has_parent_reference
from roost.agent.progress import BackupEvents, Meter, UploadActivity
from roost.agent.reporting import JobReporter, Outcome, describe_error
from roost.agent.snapshots import PreparedSnapshot, prepare_snapshot, release_snapshot
from roost.agent.throughput import history_keys
from roost.engine import scanworker, workerproc
from roost.engine.archiver import Archiver, BackupOptions, BackupSummary, normalise_sources
from roost.engine.filters import ExcludeRules
from roost.engine.progress import BackupProgress
from roost.engine.repository import Repository
from roost.engine.scanner import Scanner
from roost.engine.snapshot import Snapshot
from roost.errors import RoostError, UsageError
from roost.protocol.agent_api import Estimate, JobAssignment, JobEvent, JobResult, MissedFile

MAX_REASON = 500


def run_backup(ctx: JobContext, job: JobAssignment, reporter: JobReporter) -> Outcome:
    sources = backup_sources(ctx.platform, job.paths)
    # the scan workers start while the key is fetched, the snapshot taken and files counted
    scanworker.prestart_workers()
    try:
        uploads = UploadActivity(reporter)
        # progress counts a pack when it is stored, not when the write-behind accepts it
        repo = open_repository(ctx, job.bandwidth_limit, uploads, uploads.pack_accepted)
        reporter.send(JobEvent(state="running"))
        reporter.raise_if_cancelled()
        with SnapshotScope(ctx, job, sources, reporter) as scope:
            return _archive(ctx, job, reporter, repo, scope, uploads)
    finally:
        workerproc.discard_warm()


def backup_sources(platform: Platform, paths: list[str]) -> list[str]:
    """The set's paths as the filesystem spells them; refuses relative and ``..`` paths."""
    if not paths:
        raise UsageError("the backup set has no paths to back up")
    sources: list[str] = []
    for path in paths:
        local = os.fsdecode(from_wire(path))
        if not platform.is_absolute(local) or has_parent_reference(local):
            raise UsageError(f"backup path {path!r} must be absolute and contain no '..'")
        sources.append(platform.normalise(local))
    return list(dict.fromkeys(sources))


class SnapshotScope:
    """Takes the job's snapshot on entry and always releases it on exit, logging both."""

    def __init__(
        self, ctx: JobContext, job: JobAssignment, sources: list[str], reporter: JobReporter
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.sources = sources
        self.reporter = reporter
        self.sep = b"\\" if ctx.platform.windows else b"/"
        self.snap: PreparedSnapshot | None = None

    def __enter__(self) -> SnapshotScope:
        snap = prepare_snapshot(
            self.ctx.providers, self.sources, self.job.id, self.job.snapshot_mode
        )
        self.snap = snap
        self._log(snap.log)
        return self

    @property
    def provider(self) -> str:
        return self.snap.provider if self.snap else "live"

    @property
    def paths(self) -> PathMap:
        read_paths = self.snap.read_paths if self.snap else {p: p for p in self.sources}
        return PathMap.from_read_paths(read_paths, self.sep)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        if self.snap is not None:
            self._log(release_snapshot(self.ctx.providers, self.snap))

    def _log(self, lines: list[str]) -> None:
        for line in lines:
            self.reporter.log(line)


def _archive(
    ctx: JobContext,
    job: JobAssignment,
    reporter: JobReporter,
    repo: Repository,
    scope: SnapshotScope,
    uploads: UploadActivity,
) -> Outcome:
    mapping = scope.paths
    rules = ExcludeRules.build(job.excludes)
    read_paths = normalise_sources(mapping.read_paths())
    keys = history_keys(job.set_id, job.level)
    options = backup_options(repo, job, rules, mapping, ctx.platform.hostname, reporter)
    # progress waits for the estimate, which the count sends when it is done
    meter = Meter(reporter, total_bytes=None, clock=ctx.clock, interval=ctx.progress_interval)
    meter.hold()
    uploads.meter = meter
    estimate = EstimateWhenCounted(
        reporter, meter, lambda size: ctx.history.estimate_seconds(size, keys)
    )
    archiver = Archiver(repo, options, BackupEvents(meter), workers=ctx.archiver_workers)
    started = ctx.clock()
    with Scanner(read_paths, rules, estimate) as scanner:
        snapshot, summary = archiver.run(read_paths)
        scanner.wait()  # the estimate goes out before the final numbers
    estimate.sent_or_abandoned()
    elapsed = ctx.clock() - started
    meter.flush(check_cancel=False)  # the snapshot is saved: too late to cancel
    ctx.history.record(summary.bytes_total, elapsed, keys)
    return final_event(snapshot, summary, mapping, elapsed, scope.provider, reporter)


class EstimateWhenCounted(BackupProgress):
    """Sends the estimate when the count is done, then lets progress out (DESIGN.md step 5).

    The count runs beside the backup rather than before it: counting the kernel tree took
    0.3 s that every backup waited for. The job's events keep their order, though: the
    estimate, then progress (the meter holds it back until then), then the final state.
    """

    def __init__(
        self,
        reporter: JobReporter,
        meter: Meter,
        seconds_for: Callable[[int], float | None],
    ) -> None:
        self.reporter = reporter
        self.meter = meter
        self.seconds_for = seconds_for

    def scan_finished(self, files: int, size: int) -> None:
        estimate = Estimate(files=files, bytes=size, seconds=self.seconds_for(size))
        self.reporter.send(JobEvent(estimate=estimate))
        self.meter.release(size)

    def sent_or_abandoned(self) -> None:
        """After the count's thread ended: progress goes out even if it failed to count."""
        self.meter.release(self.meter.total_bytes)


def backup_options(
    repo: Repository,
    job: JobAssignment,
    rules: ExcludeRules,
    mapping: PathMap,
    hostname: str,
    reporter: JobReporter,
) -> BackupOptions:
    # force_read is in the set's own path space; the engine maps it into the snapshot
    return BackupOptions(
        rules=rules,
        parent=load_parent(repo, job.parent_snapshot, reporter),
        force_read=frozenset(from_wire(path) for path in job.force_read),
        tags=list(job.tags),
        hostname=hostname,
        path_map={} if mapping.identity else mapping.read_to_source(),
    )


def load_parent(
    repo: Repository, snapshot_id: str | None, reporter: JobReporter
) -> Snapshot | None:
    if not snapshot_id:
        return None
    try:
        return repo.load_snapshot(snapshot_id)
    except RoostError as exc:
        reporter.log(
            f"parent snapshot {snapshot_id[:8]} cannot be used ({describe_error(exc)}); "
            "every file is read as in a full backup",
            "warning",
        )
        return None


def final_event(
    snapshot: Snapshot,
    summary: BackupSummary,
    mapping: PathMap,
    elapsed: float,
    provider: str,
    reporter: JobReporter,
) -> Outcome:
    missed = [
        MissedFile(
            path=to_wire(os.fsencode(item["path"])),  # the engine records set paths
            reason=item["reason"][:MAX_REASON],
        )
        for item in snapshot.missed
    ]
    if missed:
        reporter.log(
            f"{len(missed)} files could not be read; the next backup reads them again", "warning"
        )
    reporter.log(f"snapshot {snapshot.short_id} saved")
    details: dict[str, object] = {
        **asdict(summary),
        "duration_seconds": round(elapsed, 3),
        "snapshot_provider": provider,
    }
    return Outcome(
        "succeeded_with_errors" if missed else "succeeded",
        result=JobResult(snapshot_id=snapshot.id, summary=details),
        missed=missed,
    )
