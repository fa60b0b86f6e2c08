"""Retention for a backup set: keep what its policy says, delete the other snapshots.

Only snapshot objects are deleted; the data they alone referenced goes with the nightly prune.
"""

from __future__ import annotations

from roost.engine.repository import Repository
from roost.engine.retention import RetentionPolicy, SnapshotRef, apply_policy
from roost.server.catalog.models import Policy
from roost.server.scheduler.schedule import zone
from roost.server.snapshots import set_snapshots


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
    forgotten = [d.snapshot.id for d in apply_policy(refs, rules, zone(policy.timezone)) if not d.keep]
    for snapshot_id in forgotten:
        repo.delete_snapshot(snapshot_id)
    return forgotten
