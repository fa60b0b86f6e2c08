"""Retention for a backup set: keep what its policy says, delete the other snapshots.

Only snapshot objects are deleted; the data they alone referenced goes with the nightly prune.
"""

from __future__ import annotations

import logging

from roost.engine.repository import Repository
from roost.engine.retention import RetentionPolicy, SnapshotRef, apply_policy
from roost.errors import RoostError
from roost.server import jobs
from roost.server.catalog.models import Policy
from roost.server.catalog.queries import jobs as job_queries
from roost.server.catalog.queries import policies as policy_queries
from roost.server.catalog.queries import sets as set_queries
from roost.server.scheduler.schedule import zone
from roost.server.snapshots import set_snapshots
from roost.server.state import ServerState

log = logging.getLogger(__name__)


def retention_policy(policy: Policy) -> RetentionPolicy:
    return RetentionPolicy(
        keep_last=policy.keep_last,
        keep_hourly=policy.keep_hourly,
        keep_daily=policy.keep_daily,
        keep_weekly=policy.keep_weekly,
        keep_monthly=policy.keep_monthly,
        keep_yearly=policy.keep_yearly,
    )


def apply_retention(repo: Repository, set_id: str, policy: Policy) -> list[str]:
    """Delete the set's snapshots the policy forgets; return their ids. No rule: keep all."""
    rules = retention_policy(policy)
    if rules.is_empty():
        return []
    refs = [SnapshotRef(s.id, s.time) for s in set_snapshots(repo, set_id)]
    forgotten = [
        d.snapshot.id for d in apply_policy(refs, rules, zone(policy.timezone)) if not d.keep
    ]
    for snapshot_id in forgotten:
        repo.delete_snapshot(snapshot_id)
    return forgotten


def retention_after_backup(state: ServerState, job_id: str) -> None:
    """Apply the set's retention once its backup succeeded; the outcome goes to the job log."""
    with state.db.read_session() as session:
        job = job_queries.get(session, job_id)
        backup_set = set_queries.get(session, job.set_id) if job else None
        if job is None or backup_set is None or backup_set.policy_id is None:
            return
        policy = policy_queries.get(session, backup_set.policy_id)
        org_id, set_id = job.org_id, backup_set.id
    if policy is None:
        return
    try:
        forgotten = apply_retention(state.repos.repository(org_id), set_id, policy)
        message, level = _describe(forgotten), "info"
    except RoostError as exc:
        log.error("retention for backup set %s failed: %s", set_id, exc)
        message, level = f"retention failed: {exc}", "warning"
    with state.db.session() as session:
        job = job_queries.get(session, job_id)
        if job is not None:
            jobs.log(session, job, message, state.clock(), level=level)


def _describe(forgotten: list[str]) -> str:
    if not forgotten:
        return "retention: every snapshot is kept"
    ids = ", ".join(snapshot_id[:8] for snapshot_id in forgotten)
    return f"retention: forgot {len(forgotten)} snapshot(s): {ids}"
