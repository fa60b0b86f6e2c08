"""Backup sets: creation (no overlapping paths per agent), backup now, and deletion."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from roost.engine.repository import Repository
from roost.server.catalog.models import Agent, BackupSet, Job
from roost.server.catalog.queries import audit
from roost.server.catalog.queries import jobs as job_queries
from roost.server.catalog.queries import sets as set_queries
from roost.server.errors import Conflict, PathsOverlap
from roost.server.scheduler.policy import AgentView, decide_dispatch
from roost.server.snapshots import set_snapshots


def _normalise(path: str) -> str:
    """Compare Windows paths case-insensitively with '/' separators, POSIX paths as given."""
    unified = path.replace("\\", "/")
    if len(unified) >= 2 and unified[1] == ":":
        unified = unified.lower()
    return unified.rstrip("/") or "/"


def _contains(outer: str, inner: str) -> bool:
    a, b = _normalise(outer), _normalise(inner)
    return a == b or b.startswith(a if a.endswith("/") else a + "/")


def overlap(paths: list[str], others: list[BackupSet]) -> str | None:
    """The message for the first overlap between ``paths`` and another set's, or None."""
    for other in others:
        for mine in paths:
            for theirs in other.paths:
                if _contains(mine, theirs):
                    return f"paths overlap backup set {other.name}: {mine} contains {theirs}"
                if _contains(theirs, mine):
                    return f"paths overlap backup set {other.name}: {theirs} contains {mine}"
    return None


def check_no_overlap(session: Session, agent: Agent, paths: list[str]) -> None:
    message = overlap(paths, set_queries.list_for_agent(session, agent.id))
    if message is not None:
        raise PathsOverlap(message)


@dataclass(frozen=True)
class BackupRequest:
    job: Job
    created: bool


def request_backup(
    session: Session, backup_set: BackupSet, view: AgentView, actor: str, now: datetime
) -> BackupRequest:
    """Backup now: queue a job (kept queued while the agent is offline). Twice is once."""
    decision = decide_dispatch("now", view, backup_set.enabled, (True, ""))
    if decision.action == "skip":
        raise Conflict(f"cannot back up {backup_set.name}: {decision.reason}; enable it first")
    existing = job_queries.open_job_for_set(session, backup_set.id, "backup")
    if existing is not None:
        return BackupRequest(existing, created=False)
    job = job_queries.add(
        session,
        Job(
            org_id=backup_set.org_id,
            set_id=backup_set.id,
            agent_id=backup_set.agent_id,
            kind="backup",
            trigger="now",
            state="queued",
            reason=decision.reason or None,
            attempt=1,
            created_by=actor,
            created_at=now,
            params={},
            summary={},
        ),
    )
    audit.record(session, backup_set.org_id, now, actor, "backup now", backup_set.name)
    return BackupRequest(job, created=True)


def delete_snapshots(repo: Repository, set_id: str) -> int:
    """Delete every snapshot of the set (the data goes with the next prune)."""
    snaps = set_snapshots(repo, set_id)
    for snap in snaps:
        repo.delete_snapshot(snap.id)
    return len(snaps)
