"""Forget: apply a retention policy to a repository's snapshots and delete the others.

Snapshots are grouped by hostname and the sorted set of source paths (one backup set), and
``roost.engine.retention`` decides within each group. Forgetting deletes only snapshot
objects; the data they alone referenced is removed later by ``prune``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from roost.engine.repository import Repository
from roost.engine.retention import RetentionPolicy, SnapshotRef, apply_policy
from roost.engine.snapshot import Snapshot
from roost.errors import UsageError

_LOCALTIME = "/etc/localtime"


@dataclass(frozen=True)
class ForgetDecision:
    snapshot: Snapshot
    keep: bool
    reasons: tuple[str, ...]


def group_key(snapshot: Snapshot) -> str:
    """The backup set a snapshot belongs to: its hostname and sorted source paths."""
    return "\0".join([snapshot.hostname, *sorted(set(snapshot.paths))])


def plan_forget(
    snapshots: list[Snapshot], policy: RetentionPolicy, tz: tzinfo
) -> list[ForgetDecision]:
    """Keep or remove, with reasons, for every snapshot; groups in order, newest first."""
    by_id = {snap.id: snap for snap in snapshots}
    refs = [SnapshotRef(snap.id, snap.time, group_key(snap)) for snap in snapshots]
    try:
        decisions = apply_policy(refs, policy, tz)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return [ForgetDecision(by_id[d.snapshot.id], d.keep, d.reasons) for d in decisions]


def forget(
    repo: Repository, policy: RetentionPolicy, *, dry_run: bool, tz: tzinfo | None = None
) -> list[ForgetDecision]:
    """Decide for every snapshot and, unless ``dry_run``, delete those not kept."""
    plan = plan_forget(repo.list_snapshots(), policy, tz or local_timezone())
    if not dry_run:
        for decision in plan:
            if not decision.keep:
                repo.delete_snapshot(decision.snapshot.id)
    return plan


def local_timezone() -> tzinfo:
    """The machine's time zone with its daylight-saving rules (calendar periods need them)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open(_LOCALTIME, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        fixed = datetime.now().astimezone().tzinfo
        assert fixed is not None
        return fixed
